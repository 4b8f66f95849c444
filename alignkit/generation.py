"""Batched generation for any Hugging Face causal LM, stopping on the decoded text.

:func:`generate` sends each prompt exactly as given, left-pads batches of similar length (attention mask and
KV cache from ``model.generate``), and stops every sequence on its own as soon as its *decoded* continuation
contains a stop string (by default :data:`alignkit.template.STOP_STRING`, ``"\\nEND"``), at an EOS token, or
at ``max_new_tokens``. Matching the decoded text, not a token id, is what makes the stop real: a tokenizer may
spell ``"\\nEND"`` as one token, as ``"\\n" + "END"``, or with the last token running on (``"ENDing"``).

Reproducibility: greedy decoding is deterministic, and batching does not change it beyond floating-point
noise. Sampling seeds torch with ``config.seed + batch_index`` before each batch (batches are formed after
sorting the prompts by token length), inside :func:`torch.random.fork_rng` so the caller's RNG state is
left as it was. The same prompts with the same config therefore give the same samples on the same device.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import transformers
from tqdm.auto import tqdm

from alignkit import template, threads

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationSettings:
    """Sampling parameters of one generation run; :meth:`to_dict` is what outputs record.

    ``temperature``, ``top_p`` and ``top_k`` only apply when ``do_sample`` is true (``top_k=0`` means no
    top-k cut). A list of stop strings is accepted and stored as a tuple.

    >>> GenerationSettings(max_new_tokens=8).to_dict()["stop_strings"]
    ['\\nEND']
    >>> GenerationSettings(top_p=0)
    Traceback (most recent call last):
    ...
    ValueError: GenerationSettings.top_p must be a number in (0, 1], got 0
    """

    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    batch_size: int = 16
    stop_strings: tuple[str, ...] = field(default=(template.STOP_STRING,))
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "batch_size"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"GenerationSettings.{name} must be a positive integer, got {value!r}")
        for name in ("top_k", "seed"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise ValueError(f"GenerationSettings.{name} must be an integer >= 0, got {value!r}")
        if not isinstance(self.do_sample, bool):
            raise ValueError(f"GenerationSettings.do_sample must be true or false, got {self.do_sample!r}")
        if not _is_real(self.temperature) or not self.temperature > 0:
            raise ValueError(f"GenerationSettings.temperature must be a number > 0, got {self.temperature!r}")
        if not _is_real(self.top_p) or not 0 < self.top_p <= 1:
            raise ValueError(f"GenerationSettings.top_p must be a number in (0, 1], got {self.top_p!r}")
        stops = self.stop_strings
        if isinstance(stops, str):
            # A bare string would silently become one stop per character.
            raise ValueError(
                f"GenerationSettings.stop_strings must be a list of strings, got the single string {stops!r}; "
                f"write [{stops!r}]"
            )
        if isinstance(stops, list):
            stops = tuple(stops)
            object.__setattr__(self, "stop_strings", stops)
        if not isinstance(stops, tuple) or not stops:
            raise ValueError(f"GenerationSettings.stop_strings must be a non-empty list of strings, got {stops!r}")
        for stop in stops:
            if not isinstance(stop, str) or not stop:
                raise ValueError(f"GenerationSettings.stop_strings must hold non-empty strings, got {stop!r}")

    def to_dict(self) -> dict[str, Any]:
        """The parameters as JSON-ready values (stop strings as a list)."""
        data = dataclasses.asdict(self)
        data["stop_strings"] = list(self.stop_strings)
        return data


@dataclass(frozen=True)
class Generation:
    """One prompt's result.

    ``raw_output`` is the decoded continuation as generated: up to and including the stop string (plus any
    trailing characters of the token that completed it), or everything up to ``max_new_tokens``; an EOS token
    ends it and is not part of it. ``output_tokens`` counts exactly the tokens of ``raw_output``.
    """

    prompt: str
    raw_output: str
    response: str
    stopped: bool
    stop: str | None
    prompt_tokens: int
    output_tokens: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def bars_off() -> bool:
    """Progress bars are switched off for this process (``TQDM_DISABLE``, set by headless runs)."""
    return os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes")


def find_stop(text: str, stops: Sequence[str]) -> tuple[int, str] | None:
    """Where the first stop string starts in ``text`` and which one it is, or ``None``.

    The earliest occurrence wins; of stops starting at the same place, the longest.

    >>> find_stop(" 5\\nEND\\nEND", ["\\nEND"])
    (2, '\\nEND')
    >>> find_stop("a STOP b\\nEND", ["\\nEND", "STOP"])
    (2, 'STOP')
    >>> find_stop("ENDING", ["\\nEND"]) is None
    True
    """
    best: tuple[int, str] | None = None
    for stop in stops:
        index = text.find(stop)
        if index < 0:
            continue
        if best is None or index < best[0] or (index == best[0] and len(stop) > len(best[1])):
            best = (index, stop)
    return best


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool, str | None]:
    """Split generated ``text`` into ``(response, stopped, stop)``.

    The response is the text before the first stop string, stripped; without a stop it is the whole text,
    stripped (a run-on answer is kept as generated, never shortened).

    >>> cut_at_stop(" Paris\\nEND", ["\\nEND"])
    ('Paris', True, '\\nEND')
    >>> cut_at_stop(" Paris\\nENDing more", ["\\nEND"])
    ('Paris', True, '\\nEND')
    >>> cut_at_stop(" Paris is", ["\\nEND"])
    ('Paris is', False, None)
    """
    found = find_stop(text, stops)
    if found is None:
        return text.strip(), False, None
    index, stop = found
    return text[:index].strip(), True, stop


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of at most ``batch_size``, longest prompts first.

    Sorting by length keeps left padding small; the longest batch comes first so that running out of
    memory shows at once. Ties keep input order.

    >>> length_sorted_batches([3, 9, 5, 9, 1], 2)
    [[1, 3], [2, 0], [4]]
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[list[list[int]], list[list[int]]]:
    """Left-pad token id lists to one width; returns ``(input_ids, attention_mask)``.

    Decoder-only models continue from the last position, so padding goes on the left and is masked out.

    >>> left_pad([[5, 6, 7], [8]], pad_id=0)
    ([[5, 6, 7], [0, 0, 8]], [[1, 1, 1], [0, 0, 1]])
    """
    width = max(len(seq) for seq in sequences)
    ids = [[pad_id] * (width - len(seq)) + list(seq) for seq in sequences]
    mask = [[0] * (width - len(seq)) + [1] * len(seq) for seq in sequences]
    return ids, mask


class StopOnText(transformers.StoppingCriteria):
    """Per-sequence stop when the decoded new tokens contain a stop string, or the newest token is EOS.

    ``model.generate`` calls it after every step with ``input_ids`` of shape (batch, prompt_width + steps).
    It remembers, per row, how many new tokens to keep (:attr:`kept`): up to and including the token that
    completed a stop string, or up to but excluding the EOS. Rows that are done stay done; rows still
    running are decoded in full each step (the stop can be split over several tokens in any way, so a
    window over the last few tokens is not safe for every tokenizer; the cost is O(steps) per row per step).
    """

    def __init__(self, tokenizer: Any, stop_strings: Sequence[str], prompt_width: int, eos_ids: set[int]):
        self.tokenizer = tokenizer
        self.stop_strings = tuple(stop_strings)
        self.prompt_width = prompt_width
        self.eos_ids = set(eos_ids)
        self.kept: list[int | None] | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        threads.follow_load()  # once per step: a neighbour that starts mid-batch is noticed within a step or two
        new = input_ids[:, self.prompt_width :]
        batch, steps = new.shape
        if self.kept is None:
            self.kept = [None] * batch
        kept = self.kept
        running = [row for row in range(batch) if kept[row] is None]
        if running:
            index = torch.tensor(running, device=new.device)
            rows_tokens = new.index_select(0, index).tolist()
            to_decode: list[int] = []
            decode_tokens: list[list[int]] = []
            for row, tokens in zip(running, rows_tokens):
                if tokens[-1] in self.eos_ids:
                    kept[row] = steps - 1
                else:
                    to_decode.append(row)
                    decode_tokens.append(tokens)
            if to_decode:
                texts = self.tokenizer.batch_decode(
                    decode_tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False
                )
                for row, text in zip(to_decode, texts):
                    if find_stop(text, self.stop_strings) is not None:
                        kept[row] = steps
        return torch.tensor([k is not None for k in kept], dtype=torch.bool, device=input_ids.device)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """EOS ids from the tokenizer and the model's generation config (a model may list several)."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen_cfg = getattr(model, "generation_config", None)
    model_eos = getattr(gen_cfg, "eos_token_id", None)
    if isinstance(model_eos, int):
        ids.add(model_eos)
    elif isinstance(model_eos, (list, tuple)):
        ids.update(int(i) for i in model_eos)
    return ids


def _pad_id(tokenizer: Any, eos_ids: set[int]) -> int:
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    if tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    if eos_ids:
        return min(eos_ids)
    # No pad and no EOS: the pad id only fills masked positions and the tail of finished rows (both cut
    # away), so any valid id serves.
    return 0


def _hf_generation_config(config: GenerationSettings, pad_id: int, eos_ids: set[int]) -> transformers.GenerationConfig:
    """Our parameters as a transformers config, set explicitly so the model's own generation_config.json
    (e.g. sampling on, a repetition penalty, a minimum length) cannot change what the study ran."""
    kwargs: dict[str, Any] = dict(
        max_new_tokens=config.max_new_tokens,
        min_length=0,
        do_sample=config.do_sample,
        num_beams=1,
        num_return_sequences=1,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        pad_token_id=pad_id,
        eos_token_id=sorted(eos_ids) if eos_ids else None,
        use_cache=True,
    )
    if config.do_sample:
        kwargs.update(
            temperature=config.temperature,
            top_p=config.top_p,
            top_k=config.top_k,
            typical_p=1.0,
            epsilon_cutoff=0.0,
            eta_cutoff=0.0,
        )
    else:
        # Greedy applies no warpers. These are the values transformers treats as "unset" when it checks
        # for sampling flags on a greedy run (top_k=50 is its default); leaving them None would let the
        # model's generation_config fill them in and trigger that warning.
        kwargs.update(temperature=1.0, top_p=1.0, top_k=50)
    return transformers.GenerationConfig(**kwargs)


def _decode_continuation(tokenizer: Any, prompt_ids: list[int], new_ids: list[int]) -> str:
    """The text the new tokens add after the prompt.

    Decoding the new tokens alone can lose a leading space (SentencePiece drops it at the start of a
    text), so decode prompt + continuation and take what follows the decoded prompt.
    """
    kwargs = dict(skip_special_tokens=True, clean_up_tokenization_spaces=False)
    prefix = tokenizer.decode(prompt_ids, **kwargs)
    full = tokenizer.decode(list(prompt_ids) + list(new_ids), **kwargs)
    if full.startswith(prefix):
        return full[len(prefix) :]
    return tokenizer.decode(new_ids, **kwargs)


def _model_device(model: Any) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    config: GenerationSettings,
    *,
    desc: str = "generating",
    progress: bool = True,
) -> list[Generation]:
    """Generate one continuation per prompt; results are in the order of ``prompts``.

    ``model`` is any Hugging Face causal LM (or PEFT wrapper of one) and ``tokenizer`` its tokenizer. Each
    prompt is tokenized as given (with the tokenizer's usual special tokens, e.g. BOS) and never truncated.
    Padding is done here (left, with the tokenizer's pad id, else EOS), so the tokenizer is not modified; the
    model runs in eval mode under :func:`torch.inference_mode` and its train/eval mode is restored after.
    With ``config.do_sample``, batch ``b`` (in length-sorted order) is sampled after
    ``torch.manual_seed(config.seed + b)``; the caller's RNG state is restored afterwards.
    """
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, got a single string; wrap it in a list")
    for index, text in enumerate(prompts):
        if not isinstance(text, str):
            raise TypeError(f"prompts[{index}] must be a string, got {type(text).__name__}")
    if not prompts:
        return []
    prompts = list(prompts)
    encoded: list[list[int]] = [list(ids) for ids in tokenizer(prompts, add_special_tokens=True)["input_ids"]]
    for index, ids in enumerate(encoded):
        if not ids:
            raise ValueError(f"prompts[{index}] tokenizes to no tokens; a prompt must not be empty")

    eos_ids = _eos_ids(model, tokenizer)
    pad_id = _pad_id(tokenizer, eos_ids)
    hf_config = _hf_generation_config(config, pad_id, eos_ids)
    device = _model_device(model)
    batches = length_sorted_batches([len(ids) for ids in encoded], config.batch_size)
    logger.info(
        "%s: %d prompts in %d batches of <= %d (max_new_tokens=%d, do_sample=%s)",
        desc, len(prompts), len(batches), config.batch_size, config.max_new_tokens, config.do_sample,
    )

    results: dict[int, Generation] = {}
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        # TQDM_DISABLE (set for headless runs) must win over an explicit progress=True, which tqdm would not let it.
        with tqdm(total=len(batches), desc=desc, unit="batch", disable=not progress or bars_off()) as bar:
            for batch_index, rows in enumerate(batches):
                batch_ids = [encoded[i] for i in rows]
                ids, mask = left_pad(batch_ids, pad_id)
                width = len(ids[0])
                criterion = StopOnText(tokenizer, config.stop_strings, width, eos_ids)
                # CPU RNG is always forked; the model's CUDA device too when it has one.
                cuda_devices = [device.index or 0] if device.type == "cuda" else []
                with torch.random.fork_rng(devices=cuda_devices), torch.inference_mode():
                    if config.do_sample:
                        torch.manual_seed(config.seed + batch_index)
                    sequences = model.generate(
                        input_ids=torch.tensor(ids, dtype=torch.long, device=device),
                        attention_mask=torch.tensor(mask, dtype=torch.long, device=device),
                        generation_config=hf_config,
                        stopping_criteria=transformers.StoppingCriteriaList([criterion]),
                    )
                new_tokens = sequences[:, width:].tolist()
                kept = criterion.kept or [None] * len(rows)
                for position, row in enumerate(rows):
                    # A row still running when the batch ended kept every token it produced.
                    n_kept = kept[position] if kept[position] is not None else len(new_tokens[position])
                    tokens = new_tokens[position][:n_kept]
                    raw = _decode_continuation(tokenizer, encoded[row], tokens)
                    response, stopped, stop = cut_at_stop(raw, config.stop_strings)
                    results[row] = Generation(
                        prompt=prompts[row],
                        raw_output=raw,
                        response=response,
                        stopped=stopped,
                        stop=stop,
                        prompt_tokens=len(encoded[row]),
                        output_tokens=len(tokens),
                    )
                bar.update(1)
    finally:
        model.train(was_training)

    elapsed = time.perf_counter() - start
    done = [results[i] for i in range(len(prompts))]
    total_tokens = sum(r.output_tokens for r in done)
    logger.info(
        "%s: %d output tokens in %.2f s (%.1f tokens/s), %d of %d stopped on a stop string",
        desc, total_tokens, elapsed, total_tokens / elapsed if elapsed > 0 else float("inf"),
        sum(r.stopped for r in done), len(done),
    )
    return done
