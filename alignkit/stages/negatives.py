"""Stage 03: five kinds of negatives, taken from the SFT model's own failing samples first, in the configured mix.

    alignkit run --preset tiny --stages 03        (or notebooks/03_negatives.ipynb)

Runs once per training seed (``03_negatives/seed<N>/``), on that seed's SFT model. The SFT model answers every SFT
instruction (greedy, plus ``negatives.samples`` sampled answers); the base model continues the same template
prompts. Every text is kept **exactly as the model produced it**: with its run-on, and without ``END`` when the
model wrote none (cut at ``negatives.max_new_tokens``). Each is scored by the stage-06 scorer with the
``emitted_end`` it really has, and a candidate of a type must fail that type's criterion (:data:`TYPE_RULES`).

Candidates, in the order they are preferred (``method`` is recorded on each negative):

1. ``sft_greedy`` / ``sft_sample``: the SFT model's own answers that fail the type's criterion (on-policy);
2. ``base_continuation``: the base model's continuation of the template (format and verbose; off-policy);
3. rules, only to fill a shortfall: ``rule_refusal`` (refusal phrasings: no model here refuses a benign
   instruction), ``swap_other_family`` (the SFT model's answer to another family's instruction),
   ``rule_wrong_answer``, ``rule_template_leak`` (the answer, then a new instruction, no END) and
   ``rule_elaboration``.

The mix (``negatives.mix``) is ``seed`` (30/25/20/15/10, the study's design), ``uniform``, ``observed`` (each type's
share of the SFT model's own samples that fail its criterion) or a mapping, over ``negatives.types``; it is applied
exactly (largest-remainder rounding). The dev instructions (``dev_sft.jsonl``) get negatives the same way, for
the DPO trainer's held-out pairs.

Outputs in ``03_negatives/seed<N>/``: ``negatives.jsonl`` and ``dev_negatives.jsonl``, ``sft_responses.jsonl`` and
``dev_sft_responses.jsonl`` (the SFT model's answers with their scores, for ``chosen`` in stage 04) and
``manifest.json`` (pool sizes, on-policy share, observed failure rates, mix declared and applied).
"""

from __future__ import annotations

import functools
import logging
import math
import random
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from alignkit import artifacts, files, schemas, template, world
from alignkit.config import NEGATIVE_TYPES, ON_POLICY_METHODS, SEED_MIX
from alignkit.eval import scoring
from alignkit.runs import Run, StageContext, execute_stage
from alignkit.world.tinybase import ensure_base

log = logging.getLogger(__name__)

STAGE = "03_negatives"

#: Per type: a negative must fail at least one of ``fail`` and pass every one of ``pass`` (scored with the END it
#: really has). A missing END is a defect only format and verbose negatives may carry (schemas.END_LESS_TYPES).
TYPE_RULES: dict[str, dict[str, tuple[str, ...]]] = {
    "refusal": {"fail": ("no_unwarranted_refusal",), "pass": ("ends_with_end",)},
    "format": {"fail": ("ends_with_end", "proper_structure", "no_rambling"), "pass": ()},
    "incorrect": {"fail": ("factually_correct",), "pass": ("ends_with_end",)},
    "off_topic": {"fail": ("on_topic",), "pass": ("ends_with_end",)},
    "verbose": {"fail": ("appropriate_length", "no_rambling"), "pass": ()},
}
#: Preference among methods when filling a type (lower first); rules come last.
METHOD_RANK = {"sft_greedy": 0, "sft_sample": 0, "base_continuation": 1}

REFUSALS = (
    "I'm sorry, but I can't help with that.",
    "I cannot answer that request.",
    "As an AI, I am unable to do that.",
    "Sorry, I won't be able to help with this one.",
    "I'm unable to help with that request.",
    "I can't assist with that.",
)


def allocate(total: int, mix: dict[str, float]) -> dict[str, int]:
    """Counts per type summing exactly to ``total`` (largest-remainder rounding of ``total x fraction``).

    >>> allocate(520, {"refusal": .3, "format": .25, "incorrect": .2, "off_topic": .15, "verbose": .1})
    {'refusal': 156, 'format': 130, 'incorrect': 104, 'off_topic': 78, 'verbose': 52}
    >>> sum(allocate(7, {"a": 1/3, "b": 1/3, "c": 1/3}).values())
    7
    """
    exact = {name: total * share for name, share in mix.items()}
    counts = {name: math.floor(value) for name, value in exact.items()}
    by_remainder = sorted(mix, key=lambda name: (-(exact[name] - counts[name]), list(mix).index(name)))
    for name in by_remainder[: total - sum(counts.values())]:
        counts[name] += 1
    return counts


def resolve_mix(mix: str | Mapping[str, float], types: Sequence[str],
                observed: Mapping[str, float] | None = None) -> dict[str, float]:
    """The fractions per type actually used: a named mix or a mapping, restricted to ``types`` and renormalised.

    >>> resolve_mix("seed", ["refusal", "format"])
    {'refusal': 0.5454545454545454, 'format': 0.45454545454545453}
    >>> resolve_mix("uniform", ["format", "verbose"])
    {'format': 0.5, 'verbose': 0.5}
    >>> resolve_mix("observed", ["format", "incorrect"], {"format": 0.375, "incorrect": 0.125})
    {'format': 0.75, 'incorrect': 0.25}
    """
    if mix == "seed":
        weights = {t: SEED_MIX[t] for t in types}
    elif mix == "uniform":
        weights = {t: 1.0 for t in types}
    elif mix == "observed":
        if observed is None:
            raise ValueError("negatives.mix=observed needs the observed failure rates")
        weights = {t: observed.get(t, 0.0) for t in types}
    else:
        weights = {t: float(mix.get(t, 0.0)) for t in types}
    total = sum(weights.values())
    if total <= 0:
        raise ValueError(f"negatives.mix {mix!r} gives no weight to any of {list(types)} (observed: {observed}); "
                         "choose another mix or other types")
    return {t: w / total for t, w in weights.items() if w > 0}


def qualifies(scores: Mapping[str, bool | None], negative_type: str) -> bool:
    """Whether scores show the defect of ``negative_type`` (and nothing that type may not have).

    >>> qualifies({"factually_correct": False, "ends_with_end": True}, "incorrect")
    True
    >>> qualifies({"factually_correct": False, "ends_with_end": False}, "incorrect")
    False
    """
    rule = TYPE_RULES[negative_type]
    return any(scores.get(c) is False for c in rule["fail"]) and all(scores.get(c) is True for c in rule["pass"])


def _elaboration(item: world.Item, response: str, rng: random.Random) -> str:
    """The correct response padded with restatements until it is far over the family's length bound."""
    family = world.get_family(item.family)
    words = sorted(family.topic_words(item.params)) or ["this"]
    sentences = [response.rstrip(".") + "."]
    limit = family.length_bounds[1]
    while len(" ".join(sentences).split()) <= limit * 2 + 8:
        word = rng.choice(words)
        sentences.append(rng.choice([f"To say it again, the answer is {response.rstrip('.')}.",
                                     f"This is about {word}, and {word} matters here.",
                                     f"Let me explain once more that it is about {word}.",
                                     f"In other words, {response.rstrip('.')}."]))
    return " ".join(sentences)


def _template_leak(response: str, other: Mapping[str, Any]) -> str:
    """The answer followed by the template of a new instruction: the run-on a base model produces."""
    return f"{response}\n{template.INSTRUCTION_TAG} {other['instruction']}\n{template.RESPONSE_TAG} {other['response']}"


def candidates_for(example: Mapping[str, Any], answers: Mapping[str, Any], base: Mapping[str, Any],
                   others: Sequence[Mapping[str, Any]], rng: random.Random) -> list[tuple[str, str, str, bool]]:
    """Every candidate ``(type, method, text, emitted_end)`` for one SFT example: model outputs for every type
    (each is kept only for the types it fails), then the rule-made ones."""
    item = world.Item.from_record({**example, "reference": None})
    found: list[tuple[str, str, str, bool]] = []
    outputs = [("sft_greedy", answers["greedy"], answers["greedy_stopped"])]
    outputs += [("sft_sample", text, stopped) for text, stopped in zip(answers["samples"], answers["samples_stopped"])]
    for method, text, stopped in outputs:
        found.extend((t, method, text, stopped) for t in NEGATIVE_TYPES)
    if base["response"]:
        found.extend((t, "base_continuation", base["response"], base["stopped"]) for t in ("format", "verbose"))
    found.extend(("refusal", "rule_refusal", refusal, True) for refusal in rng.sample(REFUSALS, 2))
    other_family = [o for o in others if o["family"] != item.family]
    if other_family:
        other = rng.choice(other_family)
        found.append(("off_topic", "swap_other_family", other["response"], True))
        found.append(("format", "rule_template_leak", _template_leak(example["response"], other), False))
    if item.family != "open_ended":
        family = world.get_family(item.family)
        found.append(("incorrect", "rule_wrong_answer", family.wrong_answer(item.params, rng), True))
    found.append(("verbose", "rule_elaboration", _elaboration(item, example["response"], rng), True))
    return found


def answer_all(run: Run, rows: list[dict]) -> tuple[dict[str, dict], dict[str, dict]]:
    """SFT model: greedy + sampled answers per example; base model: greedy template continuation. Each output is
    kept as generated (``response`` before END, ``stopped``: END written). Models load one at a time."""
    from alignkit import modeling
    from alignkit.generation import GenerationSettings, generate

    cfg = run.config
    neg = cfg.negatives
    prompts = [template.prompt(r["instruction"]) for r in rows]
    path, adapter = artifacts.sft_model(run)
    with modeling.loaded(path, cfg.model, adapter=adapter) as handle:
        greedy = generate(handle.model, handle.tokenizer, prompts,
                          GenerationSettings(max_new_tokens=neg.max_new_tokens, batch_size=neg.batch_size),
                          desc="SFT model greedy")
        sampled = generate(handle.model, handle.tokenizer, [p for p in prompts for _ in range(neg.samples)],
                           GenerationSettings(max_new_tokens=neg.max_new_tokens, batch_size=neg.batch_size,
                                            do_sample=True, temperature=neg.temperature, seed=cfg.seed),
                           desc="SFT model samples")
    answers: dict[str, dict] = {}
    for index, row in enumerate(rows):
        chunk = [out for out in sampled[index * neg.samples: (index + 1) * neg.samples] if out.response.strip()]
        answers[row["id"]] = {"greedy": greedy[index].response, "greedy_stopped": greedy[index].stopped,
                              "samples": [out.response for out in chunk],
                              "samples_stopped": [out.stopped for out in chunk]}
    with modeling.loaded(ensure_base(cfg), cfg.model) as handle:
        base = generate(handle.model, handle.tokenizer, prompts,
                        GenerationSettings(max_new_tokens=neg.max_new_tokens, batch_size=neg.batch_size),
                        desc="base model continuations")
    return answers, {row["id"]: {"response": out.response, "stopped": out.stopped} for row, out in zip(rows, base)}


def build_pool(rows: list[dict], answers: Mapping[str, dict], base: Mapping[str, dict], rng: random.Random,
               types: Sequence[str]) -> tuple[dict[str, list[dict]], Counter]:
    """Every candidate that really is a negative of its type, per type; and the drops, counted by reason."""
    pool: dict[str, list[dict]] = defaultdict(list)
    dropped: Counter = Counter()
    seen: set[tuple[str, str, str, bool]] = set()
    for row in rows:
        item = world.Item.from_record({**row, "reference": None})
        for negative_type, method, text, emitted_end in candidates_for(row, answers[row["id"]], base[row["id"]],
                                                                       rows, rng):
            text = text.strip()
            if negative_type not in types:
                continue
            key = (row["id"], negative_type, text, emitted_end)
            if key in seen:  # the same text twice (e.g. a sample equal to the greedy answer)
                continue
            seen.add(key)
            if not text or (text == row["response"] and emitted_end):
                dropped[f"{negative_type}:{method}:empty_or_same_as_sft"] += 1
                continue
            scores = scoring.score_response(item, text, emitted_end)
            if not qualifies(scores, negative_type):
                dropped[f"{negative_type}:{method}:not_bad_in_its_way"] += 1
                continue
            completion = template.completion(text) if emitted_end else " " + text
            pool[negative_type].append({
                "sft_id": row["id"], "family": row["family"], "instruction": row["instruction"],
                "prompt": template.prompt(row["instruction"]), "type": negative_type, "method": method,
                "emitted_end": emitted_end, "response": text, "completion": completion,
                "failed_criteria": [c for c in scoring.CRITERIA if scores[c] is False]})
    return pool, dropped


def observed_rates(rows: list[dict], answers: Mapping[str, dict], types: Sequence[str]) -> dict[str, float]:
    """Per type, the share of the SFT model's own answers (greedy and sampled) that qualify as that type."""
    counts: Counter = Counter()
    total = 0
    for row in rows:
        item = world.Item.from_record({**row, "reference": None})
        entry = answers[row["id"]]
        outputs = [(entry["greedy"], entry["greedy_stopped"])] + list(zip(entry["samples"], entry["samples_stopped"]))
        for text, stopped in outputs:
            scores = scoring.score_response(item, text, stopped)
            total += 1
            for negative_type in types:
                counts[negative_type] += qualifies(scores, negative_type)
    return {t: round(counts[t] / total, 4) if total else 0.0 for t in types}


def select(pool: dict[str, list[dict]], counts: dict[str, int], rng: random.Random) -> tuple[list[dict], dict]:
    """Pick ``counts[type]`` negatives per type: the SFT model's own outputs first, then the base model's, then
    rules; within that, the example with the fewest negatives so far (so a type spreads over examples).

    Returns the chosen negatives and the shortfall per type (0 when the mix could be met).
    """
    chosen: list[dict] = []
    per_example: Counter = Counter()
    shortfall = {}
    seen: set[tuple[str, str]] = set()  # one text per example, whatever its type: no duplicate pairs
    for negative_type in NEGATIVE_TYPES:
        wanted = counts.get(negative_type, 0)
        candidates = list(pool.get(negative_type, []))
        rng.shuffle(candidates)
        taken = 0
        while taken < wanted and candidates:
            best = min(range(len(candidates)), key=lambda i: (METHOD_RANK.get(candidates[i]["method"], 2),
                                                               per_example[candidates[i]["sft_id"]]))
            candidate = candidates.pop(best)
            key = (candidate["sft_id"], candidate["completion"])
            if key in seen:
                continue
            seen.add(key)
            chosen.append(candidate)
            per_example[candidate["sft_id"]] += 1
            taken += 1
        shortfall[negative_type] = wanted - taken
    return chosen, shortfall


def score_answers(rows: list[dict], answers: Mapping[str, dict]) -> list[dict]:
    """The SFT model's own answers with their scores (stage 04 takes ``chosen`` from those that pass)."""
    out = []
    for row in rows:
        item, entry = world.Item.from_record({**row, "reference": None}), answers[row["id"]]
        texts = [(entry["greedy"], entry["greedy_stopped"], "greedy")]
        texts += [(t, s, f"sample{k}") for k, (t, s) in enumerate(zip(entry["samples"], entry["samples_stopped"]))]
        for text, stopped, source in texts:
            scores = scoring.score_response(item, text, stopped)
            out.append({"sft_id": row["id"], "source": source, "response": text, "emitted_end": stopped,
                        "overall": scores["overall"], "factually_correct": scores["factually_correct"]})
    return out


def negatives_for(cfg, rows: list[dict], answers: Mapping[str, dict], base: Mapping[str, dict], total: int,
                  seed_offset: int, strict: bool) -> tuple[list[dict], dict[str, Any]]:
    """Pool, mix and selection for one split; ``strict`` refuses a shortfall (train), else it is counted (dev)."""
    neg = cfg.negatives
    rng = random.Random(cfg.seed + seed_offset)
    pool, dropped = build_pool(rows, answers, base, rng, neg.types)
    observed = observed_rates(rows, answers, neg.types)
    mix = resolve_mix(neg.mix, neg.types, observed)
    counts = allocate(total, mix)
    chosen, shortfall = select(pool, counts, rng)
    if strict and any(shortfall.values()):
        raise RuntimeError(f"too few valid negatives for the configured mix: short by {shortfall} "
                           f"(pool sizes { {k: len(v) for k, v in pool.items()} }); lower negatives.per_example "
                           "or pairs.min_pairs, or generate more SFT data")
    chosen.sort(key=lambda c: (c["sft_id"], NEGATIVE_TYPES.index(c["type"]), c["response"]))
    by_type_method: dict[str, Counter] = defaultdict(Counter)
    for negative in chosen:
        by_type_method[negative["type"]][negative["method"]] += 1
    n = len(chosen) or 1
    summary = {
        "total": len(chosen), "wanted": counts, "shortfall": {t: v for t, v in shortfall.items() if v},
        "mix_declared": neg.mix, "mix_used": {t: round(v, 4) for t, v in mix.items()},
        "mix_applied": {t: round(by_type_method[t].total() / n, 4) for t in neg.types},
        "observed_failure_rates": observed,
        "on_policy_share": {t: round(sum(by_type_method[t][m] for m in ON_POLICY_METHODS)
                                     / by_type_method[t].total(), 4) if by_type_method[t].total() else None
                            for t in neg.types},
        "end_less": {t: sum(1 for c in chosen if c["type"] == t and not c["emitted_end"]) for t in neg.types},
        "by_type_method": {t: dict(c) for t, c in sorted(by_type_method.items())},
        "pool": {t: len(v) for t, v in sorted(pool.items())}, "dropped": dict(sorted(dropped.items())),
        "dropped_total": sum(dropped.values()),
    }
    return chosen, summary


def run(run: Run, force: bool = False) -> dict[str, Any]:
    """Execute stage 03 for one training seed's view of the run (cached); returns its manifest."""
    inputs = {"sft": run.output("01_sft_data", "sft"), "dev_sft": run.output("01_sft_data", "dev_sft"),
              "sft_model": run.output("02_sft_training", "model")}
    return execute_stage(run, STAGE, inputs=inputs, body=functools.partial(produce, run, inputs), force=force)


def produce(run: Run, inputs: dict[str, Path], ctx: StageContext) -> None:
    """Stage 03's work in its stage folder ``ctx``: the SFT model answers every train and dev instruction, the
    negatives are drawn (train strictly to the mix, dev as close as the pool allows), numbered and written with
    the scored SFT answers."""
    cfg = run.config
    rows = schemas.load_records(inputs["sft"], "sft")
    dev_rows = schemas.load_records(inputs["dev_sft"], "sft")
    answers, base = answer_all(run, rows + dev_rows)
    total = math.ceil(max(cfg.pairs.min_pairs * 1.02, len(rows) * cfg.negatives.per_example))
    chosen, summary = negatives_for(cfg, rows, answers, base, total, 0, strict=True)
    dev_total = math.ceil(len(dev_rows) * cfg.negatives.per_example)
    dev_chosen, dev_summary = negatives_for(cfg, dev_rows, answers, base, dev_total, 1, strict=False)
    for prefix, negatives_ in (("neg", chosen), ("dev-neg", dev_chosen)):
        for index, negative in enumerate(negatives_):
            negative["id"] = f"{prefix}-{index:05d}"
    outputs = (("negatives", "negatives.jsonl", chosen, "negatives"),
               ("dev_negatives", "dev_negatives.jsonl", dev_chosen, "negatives"),
               ("sft_responses", "sft_responses.jsonl", score_answers(rows, answers), None),
               ("dev_sft_responses", "dev_sft_responses.jsonl", score_answers(dev_rows, answers), None))
    for name, filename, data, kind in outputs:
        ctx.add_output(name, ctx.path(filename), rows=files.write_jsonl(ctx.path(filename), data), kind=kind)
    greedy_scores = [r for r in score_answers(rows, answers) if r["source"] == "greedy"]
    log.info("negatives: %d (dev %d); mix applied %s (declared %s); on-policy share %s", len(chosen),
             len(dev_chosen), summary["mix_applied"], cfg.negatives.mix, summary["on_policy_share"])
    ctx.summary.update({
        **summary, "dev": dev_summary,
        "sft_greedy_end_rate": round(sum(a["greedy_stopped"] for a in answers.values()) / len(answers), 3),
        "sft_greedy_correct_rate": _rate([r["factually_correct"] for r in greedy_scores]),
    })


def _rate(values: list[bool | None]) -> float | None:
    applicable = [v for v in values if v is not None]
    return round(sum(applicable) / len(applicable), 3) if applicable else None
