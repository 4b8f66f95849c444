"""Loss masks of prompt/completion training, tokenised exactly as TRL's ``SFTTrainer`` does, and checked.

    alignkit inspect-masks --model DIR --data 01_sft_data/sft.jsonl -n 5

TRL 1.16 appends the EOS token to each completion, tokenises the prompt alone and prompt + completion together,
and trains on the tokens after their common prefix. When a BPE merge crosses the prompt/completion boundary
(``"Response:" + " 5"`` becoming one token), that prefix is shorter than the prompt and the trained span no
longer decodes to the completion. :func:`check_example` therefore judges the mask on the *full sequence's*
character offsets: the trained tokens must cover exactly the characters of ``completion + eos`` and nothing of
the prompt, and the last trained token must be EOS. It works with any fast HF tokenizer (offsets are needed).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class MaskCheck:
    """The tokenisation of one example and the verdict on its loss mask."""

    input_ids: list[int]
    mask: list[int]            # 1 = token is trained (its label is kept), 0 = label -100
    offsets: list[tuple[int, int]]
    text: str                  # prompt + completion + eos token string
    prompt_chars: int          # len(prompt): where the completion starts in ``text``
    ok: bool
    problem: str               # empty when ok

    def marked(self, tokenizer) -> str:
        """The example with trained tokens inside ``[[ ]]``, for eyes."""
        pieces = []
        for token_id, flag in zip(self.input_ids, self.mask):
            piece = tokenizer.decode([token_id])
            pieces.append(f"[[{piece}]]" if flag else piece)
        return "".join(pieces)


def common_prefix_length(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two id lists.

    >>> common_prefix_length([1, 2, 3], [1, 2, 4, 5])
    2
    """
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def tokenize_example(tokenizer, prompt: str, completion: str) -> tuple[list[int], list[int]]:
    """``(input_ids, completion_mask)`` as TRL's SFTTrainer builds them for a non-conversational
    prompt/completion row (EOS appended to the completion; mask starts at the common prefix)."""
    eos = tokenizer.eos_token
    full_completion = completion if completion.endswith(eos) else completion + eos
    prompt_ids = tokenizer(prompt)["input_ids"]
    full_ids = tokenizer(prompt + full_completion)["input_ids"]
    start = common_prefix_length(prompt_ids, full_ids)
    return full_ids, [0] * start + [1] * (len(full_ids) - start)


def check_example(tokenizer, prompt: str, completion: str, input_ids: list[int] | None = None,
                  mask: list[int] | None = None) -> MaskCheck:
    """Check that the trained tokens are exactly ``completion`` + EOS, judged on full-sequence offsets.

    ``input_ids``/``mask`` default to :func:`tokenize_example`; pass the ones a trainer produced to check those.
    """
    if input_ids is None or mask is None:
        input_ids, mask = tokenize_example(tokenizer, prompt, completion)
    eos = tokenizer.eos_token
    text = prompt + (completion if completion.endswith(eos) else completion + eos)
    encoded = tokenizer(text, return_offsets_mapping=True)
    offsets = [tuple(o) for o in encoded["offset_mapping"]]
    prompt_chars = len(prompt)

    def verdict(problem: str) -> MaskCheck:
        return MaskCheck(list(input_ids), list(mask), offsets, text, prompt_chars, not problem, problem)

    if list(encoded["input_ids"]) != list(input_ids):
        return verdict("training ids differ from the full text's tokenisation; cannot map tokens to characters")
    trained = [i for i, flag in enumerate(mask) if flag]
    if not trained:
        return verdict("no token is trained")
    if trained != list(range(trained[0], len(input_ids))):
        return verdict("trained tokens are not one span at the end of the sequence")
    if input_ids[-1] != tokenizer.eos_token_id:
        return verdict("the last trained token is not EOS")
    # Characters covered by trained tokens (special tokens such as EOS map to their own text span). Some
    # tokenizers trim whitespace out of offsets (ByteLevel trim_offsets): a span may then start after the
    # completion's leading space, which is fine as long as no *untrained* token sits in between.
    spans = [offsets[i] for i in trained if offsets[i][1] > offsets[i][0]]
    start = min(s for s, _ in spans) if spans else len(text)
    end = max(e for _, e in spans) if spans else len(text)
    prompt_tokens = [i for i, (s, e) in enumerate(offsets) if e > s and s < prompt_chars]
    after_prompt = range(prompt_tokens[-1] + 1 if prompt_tokens else 0, len(input_ids))
    untrained_in_completion = [i for i in after_prompt if not mask[i]]
    if start < prompt_chars:
        return verdict(f"trained tokens start inside the prompt: {text[start:prompt_chars]!r} is trained "
                       "(a BPE merge across the prompt/completion boundary)")
    if untrained_in_completion or text[prompt_chars:start].strip():
        return verdict(f"completion characters {text[prompt_chars:start]!r} are not trained")
    if end != len(text):
        return verdict(f"trained span ends at character {end} of {len(text)}")
    return verdict("")


def check_dataset(tokenizer, rows: Iterable[dict]) -> list[tuple[str, MaskCheck]]:
    """:func:`check_example` for every ``{"id", "prompt", "completion"}`` row."""
    return [(str(row.get("id", index)), check_example(tokenizer, row["prompt"], row["completion"]))
            for index, row in enumerate(rows)]


def check_batch(tokenizer, batch: dict, rows: list[dict], loss_on: str = "completion") -> list[str]:
    """Problems found in a collated training batch. ``loss_on="completion"``: the kept labels of each row must
    decode to exactly its completion + EOS and every other label must be -100; ``"all"`` (the unmasked ablation):
    every real token is trained with its own id as label and padding is not. ``rows`` are the dataset rows in
    batch order."""
    problems = []
    for index, row in enumerate(rows):
        labels = batch["labels"][index].tolist()
        ids = batch["input_ids"][index].tolist()
        attention = batch["attention_mask"][index].tolist()
        real = [i for i, a in enumerate(attention) if a]
        ids_real = [ids[i] for i in real]
        mask = [int(labels[i] != -100) for i in real]
        if any(labels[i] != -100 for i, a in enumerate(attention) if not a):
            problems.append(f"{row.get('id', index)}: padding tokens are trained")
            continue
        if loss_on == "all":
            if any(labels[i] != ids[i] for i in real):
                problems.append(f"{row.get('id', index)}: loss_on=all but some real tokens are not trained on "
                                "their own id")
            continue
        check = check_example(tokenizer, row["prompt"], row["completion"], ids_real, mask)
        if not check.ok:
            problems.append(f"{row.get('id', index)}: {check.problem}")
    return problems
