"""Stage 04: validated preference pairs that keep their defect, with the reference model's log-probability margin.

    alignkit run --preset tiny --stages 04        (or notebooks/04_preference_pairs.ipynb)

Runs once per training seed (``04_preference_pairs/seed<N>/``). Each negative of stage 03 becomes one pair:
``prompt = "Instruction: {instruction}\\nResponse:"``, ``chosen`` = a verified answer of the SFT model itself (its
greedy answer or a sample that wrote END and passes every applicable criterion; the stage-01 response when none
does, counted) as `` {text}\\nEND``, and ``rejected`` = the negative **exactly as the model produced it**: a format
or verbose negative keeps its run-on and has no END when the model wrote none. (TRL appends the tokenizer's EOS to
both sides; on an END-less rejected that EOS follows the cut text, and pushing it down only pushes down an EOS the
study never wants without END.) Pairs are validated (same prompt, chosen != rejected after tokenisation and
truncation at ``pairs.max_length``, no literal backslash-n, known type) and get the SFT (reference) model's margin
``log p(chosen) - log p(rejected)`` over completion tokens, and ``divergence_token``: the number of completion
tokens chosen and rejected share before they differ.

Outputs in ``04_preference_pairs/seed<N>/``: ``pairs.jsonl``, ``dev_pairs.jsonl`` (from the dev negatives: the DPO
trainer's held-out pairs) and ``manifest.json`` (per type: END-less rejected, shared prefixes, divergence
tokens, on-policy share, margin distribution).
"""

from __future__ import annotations

import functools
import logging
import statistics
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from alignkit import artifacts, files, logprobs, schemas, template
from alignkit.config import NEGATIVE_TYPES
from alignkit.runs import Run, StageContext, execute_stage

log = logging.getLogger(__name__)

STAGE = "04_preference_pairs"


def pick_chosen(sft_row: dict[str, Any], answers: list[dict[str, Any]]) -> tuple[str, str]:
    """``(response, source)``: the SFT model's greedy answer if it wrote END and passes every applicable
    criterion, else such a sample, else the stage-01 response.

    >>> pick_chosen({"response": "4"}, [{"source": "greedy", "response": "5", "overall": False},
    ...                                 {"source": "sample0", "response": "4", "overall": True}])
    ('4', 'sft_model_sample0')
    """
    for answer in sorted(answers, key=lambda a: a["source"] != "greedy"):
        if answer["overall"] and answer.get("emitted_end", True) and answer["response"].strip():
            return answer["response"], f"sft_model_{answer['source']}"
    return sft_row["response"], "stage01_response"


def truncated_ids(tokenizer, prompt: str, completion: str, max_length: int) -> list[int]:
    """Token ids of prompt + completion + EOS cut at ``max_length``, as the trainer would see them."""
    return tokenizer(prompt + completion + tokenizer.eos_token)["input_ids"][:max_length]


def margin_stats(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """Margin distribution per negative type: n, mean, quartiles, range, share the reference already prefers.

    >>> margin_stats([{"negative_type": "refusal", "margin": 2.0}, {"negative_type": "refusal", "margin": -1.0}])
    {'refusal': {'n': 2, 'mean': 0.5, 'q25': -0.25, 'median': 0.5, 'q75': 1.25, 'min': -1.0, 'max': 2.0, \
'share_positive': 0.5}}
    """
    by_type: dict[str, list[float]] = defaultdict(list)
    for pair in pairs:
        if pair.get("margin") is not None:
            by_type[pair["negative_type"]].append(pair["margin"])
    out = {}
    for t, v in sorted(by_type.items(), key=lambda kv: NEGATIVE_TYPES.index(kv[0])):
        q25, median, q75 = (float(x) for x in statistics.quantiles(v, n=4, method="inclusive")) if len(v) > 1 \
            else (v[0], v[0], v[0])
        out[t] = {"n": len(v), "mean": round(statistics.fmean(v), 4), "q25": round(q25, 4),
                  "median": round(median, 4), "q75": round(q75, 4), "min": round(min(v), 4),
                  "max": round(max(v), 4), "share_positive": round(sum(m > 0 for m in v) / len(v), 4)}
    return out


def defect_stats(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per negative type: pairs whose rejected lacks END, pairs sharing a completion prefix with chosen, the
    divergence token (median, max) and the on-policy share.

    >>> defect_stats([{"negative_type": "format", "rejected_has_end": False, "divergence_token": 2,
    ...                "method": "sft_sample"}])["format"]
    {'n': 1, 'rejected_without_end': 1, 'shared_prefix': 1, 'divergence_token_median': 2, \
'divergence_token_max': 2, 'on_policy': 1}
    """
    from alignkit.config import ON_POLICY_METHODS

    out = {}
    for t in NEGATIVE_TYPES:
        group = [p for p in pairs if p["negative_type"] == t]
        if not group:
            continue
        tokens = [p["divergence_token"] for p in group]
        out[t] = {"n": len(group), "rejected_without_end": sum(not p["rejected_has_end"] for p in group),
                  "shared_prefix": sum(k > 0 for k in tokens), "divergence_token_median": statistics.median(tokens),
                  "divergence_token_max": max(tokens),
                  "on_policy": sum(p["method"] in ON_POLICY_METHODS for p in group)}
    return out


def build_pairs(tokenizer, negatives: list[dict], sft_rows: dict[str, dict], answers: dict[str, list[dict]],
                max_length: int, prefix: str) -> tuple[list[dict], Counter, Counter]:
    """One validated pair per negative; returns the pairs, the drops by reason and the chosen sources."""
    from alignkit.masks import common_prefix_length, tokenize_example

    pairs, dropped, chosen_sources = [], Counter(), Counter()
    for negative in negatives:
        row = sft_rows.get(negative["sft_id"])
        if row is None:
            dropped["unknown_sft_id"] += 1
            continue
        response, source = pick_chosen(row, answers[row["id"]])
        prompt = template.prompt(row["instruction"])
        pair = {"id": f"{prefix}-{len(pairs):05d}", "sft_id": row["id"], "negative_id": negative["id"],
                "family": row["family"], "negative_type": negative["type"], "method": negative["method"],
                "prompt": prompt, "chosen": template.completion(response), "rejected": negative["completion"],
                "rejected_has_end": negative["emitted_end"], "chosen_source": source, "margin": None}
        if negative["prompt"] != prompt:
            dropped["prompt_mismatch"] += 1
            continue
        if truncated_ids(tokenizer, prompt, pair["chosen"], max_length) == \
                truncated_ids(tokenizer, prompt, pair["rejected"], max_length):
            dropped["identical_after_truncation"] += 1
            continue
        problems = schemas.check_record("pairs", pair)
        if problems:
            dropped["invalid:" + problems[0][0]] += 1
            log.warning("pair for %s dropped: %s", negative["id"], problems)
            continue
        chosen_ids, chosen_mask = tokenize_example(tokenizer, prompt, pair["chosen"])
        rejected_ids, rejected_mask = tokenize_example(tokenizer, prompt, pair["rejected"])
        pair["divergence_token"] = common_prefix_length(
            [t for t, m in zip(chosen_ids, chosen_mask) if m], [t for t, m in zip(rejected_ids, rejected_mask) if m])
        chosen_sources[source] += 1
        pairs.append(pair)
    return pairs, dropped, chosen_sources


def run(run: Run, force: bool = False) -> dict[str, Any]:
    """Execute stage 04 for one training seed's view of the run (cached); returns its manifest."""
    inputs = {"sft": run.output("01_sft_data", "sft"), "dev_sft": run.output("01_sft_data", "dev_sft"),
              "sft_model": run.output("02_sft_training", "model")}
    for name in ("negatives", "dev_negatives", "sft_responses", "dev_sft_responses"):
        inputs[name] = run.output("03_negatives", name)
    return execute_stage(run, STAGE, inputs=inputs, body=functools.partial(produce, run, inputs), force=force)


def produce(run: Run, inputs: dict[str, Path], ctx: StageContext) -> None:
    """Stage 04's work in its stage folder ``ctx``: pair every train and dev negative with its chosen response,
    score both under the SFT model (the margins) and write ``pairs.jsonl`` / ``dev_pairs.jsonl``."""
    from alignkit import modeling

    cfg = run.config
    sft_rows = {r["id"]: r for name in ("sft", "dev_sft") for r in schemas.load_records(inputs[name], "sft")}
    answers: dict[str, list[dict]] = defaultdict(list)
    for name in ("sft_responses", "dev_sft_responses"):
        for answer in files.read_jsonl(inputs[name]):
            answers[answer["sft_id"]].append(answer)
    path, adapter = artifacts.sft_model(run)
    summary: dict[str, Any] = {}
    with modeling.loaded(path, cfg.model, adapter=adapter) as handle:
        for split, negatives_name, filename, prefix in (("train", "negatives", "pairs.jsonl", "pair"),
                                                       ("dev", "dev_negatives", "dev_pairs.jsonl", "dev-pair")):
            negatives = schemas.load_records(inputs[negatives_name], "negatives")
            pairs, dropped, chosen_sources = build_pairs(handle.tokenizer, negatives, sft_rows, answers,
                                                         cfg.pairs.max_length, prefix)
            add_margins(handle, pairs, cfg.pairs.batch_size)
            if split == "train" and len(pairs) < cfg.pairs.min_pairs:
                raise RuntimeError(f"only {len(pairs)} valid pairs, fewer than pairs.min_pairs="
                                   f"{cfg.pairs.min_pairs} (dropped: {dict(dropped)}); raise negatives.per_example")
            n = files.write_jsonl(ctx.path(filename), pairs)
            ctx.add_output(filename.removesuffix(".jsonl"), ctx.path(filename), rows=n, kind="pairs")
            summary[split] = split_summary(pairs, dropped, chosen_sources)
    ctx.summary.update({**summary["train"], "dev": summary["dev"]})


def add_margins(handle, pairs: list[dict], batch_size: int) -> None:
    """Set each pair's ``margin``: log p(chosen) - log p(rejected) under the loaded SFT model, in nats."""
    prompts = [p["prompt"] for p in pairs]
    chosen_lp = logprobs.completion_logprobs(handle.model, handle.tokenizer, prompts, [p["chosen"] for p in pairs],
                                             batch_size)
    rejected_lp = logprobs.completion_logprobs(handle.model, handle.tokenizer, prompts,
                                               [p["rejected"] for p in pairs], batch_size)
    for pair, good, bad in zip(pairs, chosen_lp, rejected_lp):
        pair["margin"] = round(good - bad, 4)


def split_summary(pairs: list[dict], dropped: Counter, chosen_sources: Counter) -> dict[str, Any]:
    """One split's pair counts, drop reasons, type and method mix, defects and margins (the manifest summary)."""
    type_counts = Counter(p["negative_type"] for p in pairs)
    return {
        "pairs": len(pairs), "dropped": dict(dropped), "chosen_sources": dict(chosen_sources),
        "types": {t: type_counts.get(t, 0) for t in NEGATIVE_TYPES},
        "methods": dict(Counter(f"{p['negative_type']}:{p['method']}" for p in pairs)),
        "defects": defect_stats(pairs), "margins": margin_stats(pairs),
        "margin_overall": {"mean": round(statistics.fmean(p["margin"] for p in pairs), 4),
                           "share_positive": round(sum(p["margin"] > 0 for p in pairs) / len(pairs), 4)}
        if pairs else None,
    }
