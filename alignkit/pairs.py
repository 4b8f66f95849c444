"""Stage 04: validated preference pairs with the reference model's log-probability margin.

    alignkit run --preset tiny --stages 04        (or notebooks/04_preference_pairs.ipynb)

Each negative of stage 03 becomes one pair: ``prompt = "Instruction: {instruction}\\nResponse:"``,
``chosen`` = a verified-correct response of the SFT model itself (its greedy answer or a sample that passes
every applicable criterion; the stage-01 response when none does, counted), ``rejected`` = the negative, both
as `` {text}\\nEND`` exactly like SFT. Pairs are validated (same prompt, chosen != rejected after tokenisation
and truncation at ``pairs.max_length``, no literal backslash-n, known type) and the SFT (reference) model's
log-probability margin ``log p(chosen) - log p(rejected)`` over completion tokens only is stored, signed.

Outputs in ``04_preference_pairs/``: ``pairs.jsonl`` and ``manifest.json``.
"""

from __future__ import annotations

import logging
import statistics
from collections import Counter, defaultdict
from typing import Any

from alignkit import files, records, template
from alignkit.config import NEGATIVE_TYPES
from alignkit.runs import Run, execute_stage

log = logging.getLogger(__name__)

STAGE = "04_preference_pairs"


def pick_chosen(sft_row: dict[str, Any], answers: list[dict[str, Any]]) -> tuple[str, str]:
    """``(response, source)``: the SFT model's greedy answer if it passes every applicable criterion, else a
    passing sample, else the stage-01 response.

    >>> pick_chosen({"response": "4"}, [{"source": "greedy", "response": "5", "overall": False},
    ...                                 {"source": "sample0", "response": "4", "overall": True}])
    ('4', 'sft_model_sample0')
    """
    for answer in sorted(answers, key=lambda a: a["source"] != "greedy"):
        if answer["overall"] and answer["response"].strip():
            return answer["response"], f"sft_model_{answer['source']}"
    return sft_row["response"], "stage01_response"


def truncated_ids(tokenizer, prompt: str, completion: str, max_length: int) -> list[int]:
    """Token ids of prompt + completion + EOS cut at ``max_length``, as the trainer would see them."""
    return tokenizer(prompt + completion + tokenizer.eos_token)["input_ids"][:max_length]


def completion_logprobs(model, tokenizer, prompts: list[str], completions: list[str], batch_size: int) -> list[float]:
    """Sum of log p(token) over each completion's tokens (+ EOS) given its prompt; prompt tokens excluded.

    Uses the training tokenisation of :func:`alignkit.masks.tokenize_example`, so "completion tokens" are the
    same tokens SFT and DPO train on. Batches are right-padded; shapes are ``[batch, seq]``.
    """
    import torch

    from alignkit.masks import tokenize_example

    encoded = [tokenize_example(tokenizer, p, c) for p, c in zip(prompts, completions)]
    device = next(model.parameters()).device
    totals: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(encoded), batch_size):
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


def margin_stats(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """Margin summary per negative type: n, mean, median, share of pairs the reference already prefers.

    >>> margin_stats([{"negative_type": "refusal", "margin": 2.0}, {"negative_type": "refusal", "margin": -1.0}])
    {'refusal': {'n': 2, 'mean': 0.5, 'median': 0.5, 'min': -1.0, 'max': 2.0, 'share_positive': 0.5}}
    """
    by_type: dict[str, list[float]] = defaultdict(list)
    for pair in pairs:
        if pair.get("margin") is not None:
            by_type[pair["negative_type"]].append(pair["margin"])
    return {t: {"n": len(v), "mean": round(statistics.fmean(v), 4), "median": round(statistics.median(v), 4),
                "min": round(min(v), 4), "max": round(max(v), 4),
                "share_positive": round(sum(m > 0 for m in v) / len(v), 4)}
            for t, v in sorted(by_type.items(), key=lambda kv: NEGATIVE_TYPES.index(kv[0]))}


def run(run: Run, force: bool = False) -> dict[str, Any]:
    """Execute stage 04 (cached); returns its manifest."""
    cfg = run.config
    sft_path = run.output("01_sft_data", "sft")
    negatives_path = run.output("03_negatives", "negatives")
    answers_path = run.output("03_negatives", "sft_responses")
    model_path = run.output("02_sft_training", "model")

    def body(ctx) -> None:
        from alignkit import modeling, sft

        sft_rows = {r["id"]: r for r in records.load_records(sft_path, "sft")}
        negatives = records.load_records(negatives_path, "negatives")
        answers: dict[str, list[dict]] = defaultdict(list)
        for answer in files.read_jsonl(answers_path):
            answers[answer["sft_id"]].append(answer)
        path, adapter = sft.sft_model(run)
        pairs, dropped = [], Counter()
        chosen_sources: Counter = Counter()
        with modeling.loaded(path, cfg.model, adapter=adapter) as handle:
            tokenizer = handle.tokenizer
            for negative in negatives:
                row = sft_rows.get(negative["sft_id"])
                if row is None:
                    dropped["unknown_sft_id"] += 1
                    continue
                response, source = pick_chosen(row, answers[row["id"]])
                prompt = template.prompt(row["instruction"])
                pair = {"id": f"pair-{len(pairs):05d}", "sft_id": row["id"], "negative_id": negative["id"],
                        "family": row["family"], "negative_type": negative["type"], "method": negative["method"],
                        "prompt": prompt, "chosen": template.completion(response),
                        "rejected": negative["completion"], "chosen_source": source, "margin": None}
                if negative["prompt"] != prompt:
                    dropped["prompt_mismatch"] += 1
                    continue
                if truncated_ids(tokenizer, prompt, pair["chosen"], cfg.pairs.max_length) == \
                        truncated_ids(tokenizer, prompt, pair["rejected"], cfg.pairs.max_length):
                    dropped["identical_after_truncation"] += 1
                    continue
                problems = records.check_record("pairs", pair)
                if problems:
                    dropped["invalid:" + problems[0][0]] += 1
                    log.warning("pair for %s dropped: %s", negative["id"], problems)
                    continue
                chosen_sources[source] += 1
                pairs.append(pair)
            chosen_lp = completion_logprobs(handle.model, tokenizer, [p["prompt"] for p in pairs],
                                            [p["chosen"] for p in pairs], cfg.pairs.batch_size)
            rejected_lp = completion_logprobs(handle.model, tokenizer, [p["prompt"] for p in pairs],
                                              [p["rejected"] for p in pairs], cfg.pairs.batch_size)
        for pair, good, bad in zip(pairs, chosen_lp, rejected_lp):
            pair["margin"] = round(good - bad, 4)
        if len(pairs) < cfg.pairs.min_pairs:
            raise RuntimeError(f"only {len(pairs)} valid pairs, fewer than pairs.min_pairs={cfg.pairs.min_pairs} "
                               f"(dropped: {dict(dropped)}); raise negatives.per_example")
        n = files.write_jsonl(ctx.path("pairs.jsonl"), pairs)
        ctx.add_output("pairs", ctx.path("pairs.jsonl"), rows=n, kind="pairs")
        type_counts = Counter(p["negative_type"] for p in pairs)
        ctx.summary.update({
            "pairs": n, "dropped": dict(dropped), "chosen_sources": dict(chosen_sources),
            "types": {t: type_counts.get(t, 0) for t in NEGATIVE_TYPES},
            "methods": dict(Counter(f"{p['negative_type']}:{p['method']}" for p in pairs)),
            "margins": margin_stats(pairs),
            "margin_overall": {"mean": round(statistics.fmean(p["margin"] for p in pairs), 4),
                               "share_positive": round(sum(p["margin"] > 0 for p in pairs) / n, 4)},
        })

    return execute_stage(run, STAGE, sections=("model", "pairs"),
                         inputs={"sft": sft_path, "negatives": negatives_path, "sft_responses": answers_path,
                                 "sft_model": model_path}, body=body, force=force)
