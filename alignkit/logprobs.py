"""Log-probabilities of completions given their prompts, with the training tokenisation: the reference margins of
stage 04 and the implicit rewards of stage 05 (a module of its own, so neither stage's code depends on the other).
"""

from __future__ import annotations


def completion_logprobs(model, tokenizer, prompts: list[str], completions: list[str], batch_size: int) -> list[float]:
    """Sum of log p(token) over each completion's tokens (+ EOS) given its prompt; prompt tokens excluded.

    Uses the training tokenisation of :func:`alignkit.masks.tokenize_example`, so "completion tokens" are the
    same tokens SFT and DPO train on. Batches are right-padded; shapes are ``[batch, seq]``.
    """
    import torch

    from alignkit import threads
    from alignkit.masks import tokenize_example

    encoded = [tokenize_example(tokenizer, p, c) for p, c in zip(prompts, completions)]
    device = next(model.parameters()).device
    totals: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(encoded), batch_size):
            threads.follow_load()
            chunk = encoded[start : start + batch_size]
            width = max(len(ids) for ids, _ in chunk)
            ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            trained = torch.zeros((len(chunk), width), dtype=torch.bool)
            for row, (token_ids, completion_mask) in enumerate(chunk):
                ids[row, : len(token_ids)] = torch.tensor(token_ids)
                mask[row, : len(token_ids)] = 1
                trained[row, : len(token_ids)] = torch.tensor(completion_mask, dtype=torch.bool)
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            # Token t is predicted from position t-1: shift so logprobs[:, t-1] scores ids[:, t].
            logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
            target = ids[:, 1:].to(device)
            token_lp = logprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
            keep = trained[:, 1:].to(device)
            totals.extend((token_lp * keep).sum(dim=-1).tolist())
    return totals
