"""Stage 03: five kinds of negatives, mined from real model outputs where possible, in the configured mix.

    alignkit run --preset tiny --stages 03        (or notebooks/03_negatives.ipynb)

The SFT model answers every SFT instruction (greedy, plus ``negatives.samples`` sampled answers); the base model
continues the same template prompts. Candidates per type, with the ``method`` recorded for each:

============  ==========================================================================================
refusal       ``rule_refusal``: refusal phrasings (no model here refuses benign instructions on its own)
format        ``mined_base_continuation`` / ``mined_sft_sample``: outputs that leak template or Q/A markers or
              break the answer's structure; ``rule_template_leak`` when mining finds too few
incorrect     ``mined_sft_sample``: sampled SFT answers the verifier rejects; ``rule_wrong_answer`` otherwise
off_topic     ``swap_other_family``: a fluent SFT answer to an instruction of another family
verbose       ``mined_base_continuation`` / ``mined_sft_sample``: answers that run past the point;
              ``rule_elaboration`` when mining finds too few
============  ==========================================================================================

Every candidate is scored with the stage-06 scorer (:mod:`alignkit.scoring`) *as it will appear in a pair*
(`` {text}\\nEND``) and must fail its type's criterion; those that do not are dropped and counted. Then the mix
is applied exactly (largest-remainder rounding of ``total x fraction``) and logged.

Outputs in ``03_negatives/``: ``negatives.jsonl``, ``sft_responses.jsonl`` (the SFT model's own greedy and
sampled answers with their scores, used for ``chosen`` in stage 04) and ``manifest.json``.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter, defaultdict
from typing import Any

from alignkit import files, records, scoring, template, world
from alignkit.config import NEGATIVE_TYPES
from alignkit.runs import Run, execute_stage
from alignkit.tinybase import ensure_base

log = logging.getLogger(__name__)

STAGE = "03_negatives"

#: The criterion (or criteria) a negative of each type must fail when scored as `` {text}\nEND``.
TYPE_CRITERIA: dict[str, tuple[str, ...]] = {
    "refusal": ("no_unwarranted_refusal",),
    "format": ("proper_structure", "no_rambling"),
    "incorrect": ("factually_correct",),
    "off_topic": ("on_topic",),
    "verbose": ("appropriate_length", "no_rambling"),
}

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


def fails_as_intended(item: world.Item, text: str, negative_type: str) -> tuple[bool, list[str]]:
    """Score `` {text}\\nEND`` as stage 06 would; the negative is kept only if it fails its type's criterion.

    Returns ``(ok, failed_criteria)``.
    """
    scores = scoring.score_response(item, text, emitted_end=True)
    failed = [c for c in scoring.CRITERIA if scores.get(c) is False]
    return any(c in failed for c in TYPE_CRITERIA[negative_type]), failed


def clean_text(text: str) -> str:
    """A negative's text as it can be stored and trained on: stripped, without an END line of its own.

    >>> clean_text("  12\\nEND\\nmore ")
    '12'
    """
    return template.split_output(" " + text)[0]


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


def _template_leak(item: world.Item, response: str, other: dict[str, Any]) -> str:
    """The answer followed by the template of a new instruction: the run-on a base model produces."""
    return f"{response}\n{template.INSTRUCTION_TAG} {other['instruction']}\n{template.RESPONSE_TAG} {other['response']}"


def candidates_for(example: dict[str, Any], item: world.Item, answers: dict[str, Any], base_output: str,
                   others: list[dict[str, Any]], rng: random.Random) -> list[tuple[str, str, str]]:
    """Every candidate ``(type, method, text)`` for one SFT example, mined first, then rules."""
    found: list[tuple[str, str, str]] = []
    family = world.get_family(item.family)
    for text in answers["samples"]:
        if text and family.verify(item.params, text) is False:
            found.append(("incorrect", "mined_sft_sample", text))
        found.append(("format", "mined_sft_sample", text))
        found.append(("verbose", "mined_sft_sample", text))
    base_text = clean_text(base_output) if base_output.strip() else ""
    if base_text:
        found.append(("format", "mined_base_continuation", base_text))
        found.append(("verbose", "mined_base_continuation", base_text))
    for refusal in rng.sample(REFUSALS, 2):
        found.append(("refusal", "rule_refusal", refusal))
    other_family = [o for o in others if o["family"] != item.family]
    if other_family:
        other = rng.choice(other_family)
        found.append(("off_topic", "swap_other_family", other["response"]))
        found.append(("format", "rule_template_leak", _template_leak(item, example["response"], other)))
    if item.family != "open_ended":
        found.append(("incorrect", "rule_wrong_answer", family.wrong_answer(item.params, rng)))
    found.append(("verbose", "rule_elaboration", _elaboration(item, example["response"], rng)))
    return found


def answer_all(run: Run, rows: list[dict]) -> tuple[dict[str, dict], dict[str, str]]:
    """SFT model: greedy + sampled answers per example; base model: greedy template continuation.

    Models are loaded one at a time and freed before the next.
    """
    from alignkit import modeling, sft
    from alignkit.generation import GenerationConfig, generate

    cfg = run.config
    neg = cfg.negatives
    prompts = [template.prompt(r["instruction"]) for r in rows]
    answers: dict[str, dict] = {r["id"]: {"greedy": None, "greedy_stopped": False, "samples": []} for r in rows}
    path, adapter = sft.sft_model(run)
    with modeling.loaded(path, cfg.model, adapter=adapter) as handle:
        greedy = generate(handle.model, handle.tokenizer, prompts,
                          GenerationConfig(max_new_tokens=neg.max_new_tokens, batch_size=neg.batch_size),
                          desc="SFT model greedy")
        sampled = generate(handle.model, handle.tokenizer, [p for p in prompts for _ in range(neg.samples)],
                           GenerationConfig(max_new_tokens=neg.max_new_tokens, batch_size=neg.batch_size,
                                            do_sample=True, temperature=neg.temperature, seed=cfg.seed),
                           desc="SFT model samples")
    for index, row in enumerate(rows):
        entry = answers[row["id"]]
        entry["greedy"], entry["greedy_stopped"] = greedy[index].response, greedy[index].stopped
        chunk = sampled[index * neg.samples : (index + 1) * neg.samples]
        entry["samples"] = [out.response for out in chunk if out.response.strip()]
        entry["samples_stopped"] = [out.stopped for out in chunk if out.response.strip()]
    with modeling.loaded(ensure_base(cfg), cfg.model) as handle:
        base = generate(handle.model, handle.tokenizer, prompts,
                        GenerationConfig(max_new_tokens=neg.max_new_tokens, batch_size=neg.batch_size),
                        desc="base model continuations")
    return answers, {row["id"]: out.raw_output for row, out in zip(rows, base)}


def select(pool: dict[str, list[dict]], counts: dict[str, int], rng: random.Random) -> tuple[list[dict], dict]:
    """Pick ``counts[type]`` negatives per type, mined before rules, spreading them over SFT examples.

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
            # Mined before rule-based; within that, the example with the fewest negatives so far (re-evaluated
            # after every pick, so one type spreads over examples too).
            best = min(range(len(candidates)), key=lambda i: (candidates[i]["method"].startswith("rule"),
                                                               per_example[candidates[i]["sft_id"]]))
            candidate = candidates.pop(best)
            key = (candidate["sft_id"], candidate["response"])
            if key in seen:
                continue
            seen.add(key)
            chosen.append(candidate)
            per_example[candidate["sft_id"]] += 1
            taken += 1
        shortfall[negative_type] = wanted - taken
    return chosen, shortfall


def run(run: Run, force: bool = False) -> dict[str, Any]:
    """Execute stage 03 (cached); returns its manifest."""
    cfg = run.config
    sft_path = run.output("01_sft_data", "sft")
    model_path = run.output("02_sft_training", "model")

    def body(ctx) -> None:
        rows = records.load_records(sft_path, "sft")
        items = {r["id"]: world.Item.from_record({**r, "reference": None}) for r in rows}
        answers, base_outputs = answer_all(run, rows)
        rng = random.Random(cfg.seed)
        pool: dict[str, list[dict]] = defaultdict(list)
        dropped: Counter = Counter()
        for row in rows:
            item = items[row["id"]]
            for negative_type, method, text in candidates_for(row, item, answers[row["id"]],
                                                              base_outputs[row["id"]], rows, rng):
                text = clean_text(text)
                if not text or text == row["response"]:
                    dropped[f"{negative_type}:{method}:empty_or_same_as_sft"] += 1
                    continue
                ok, failed = fails_as_intended(item, text, negative_type)
                if not ok:
                    dropped[f"{negative_type}:{method}:not_bad_in_its_way"] += 1
                    continue
                pool[negative_type].append({
                    "sft_id": row["id"], "family": row["family"], "instruction": row["instruction"],
                    "prompt": template.prompt(row["instruction"]), "type": negative_type, "method": method,
                    "response": text, "completion": template.completion(text), "failed_criteria": failed})
        total = math.ceil(max(cfg.pairs.min_pairs * 1.02, len(rows) * cfg.negatives.per_example))
        counts = allocate(total, cfg.negatives.mix)
        chosen, shortfall = select(pool, counts, rng)
        if any(shortfall.values()):
            raise RuntimeError(f"too few valid negatives for the configured mix: short by {shortfall} "
                               f"(pool sizes { {k: len(v) for k, v in pool.items()} }); lower negatives.per_example "
                               "or pairs.min_pairs, or generate more SFT data")
        chosen.sort(key=lambda c: (c["sft_id"], NEGATIVE_TYPES.index(c["type"]), c["response"]))
        for index, negative in enumerate(chosen):
            negative["id"] = f"neg-{index:05d}"
            problems = records.check_record("negatives", negative)
            if problems:
                raise RuntimeError(f"negative {negative['id']} is invalid: {problems}")
        sft_responses = []
        for row in rows:
            item, entry = items[row["id"]], answers[row["id"]]
            texts = [(entry["greedy"], entry["greedy_stopped"], "greedy")]
            texts += [(t, s, f"sample{k}") for k, (t, s) in enumerate(zip(entry["samples"], entry["samples_stopped"]))]
            for text, stopped, source in texts:
                scores = scoring.score_response(item, text, emitted_end=stopped)
                sft_responses.append({"sft_id": row["id"], "source": source, "response": text,
                                      "emitted_end": stopped, "overall": scores["overall"],
                                      "factually_correct": scores["factually_correct"]})
        n_neg = files.write_jsonl(ctx.path("negatives.jsonl"), chosen)
        n_resp = files.write_jsonl(ctx.path("sft_responses.jsonl"), sft_responses)
        ctx.add_output("negatives", ctx.path("negatives.jsonl"), rows=n_neg, kind="negatives")
        ctx.add_output("sft_responses", ctx.path("sft_responses.jsonl"), rows=n_resp)
        by_type_method: dict[str, Counter] = defaultdict(Counter)
        for negative in chosen:
            by_type_method[negative["type"]][negative["method"]] += 1
        applied = {t: round(by_type_method[t].total() / n_neg, 4) for t in NEGATIVE_TYPES}
        log.info("negatives: %d; mix applied %s (declared %s)", n_neg, applied, cfg.negatives.mix)
        ctx.summary.update({
            "total": n_neg, "wanted": counts, "mix_declared": cfg.negatives.mix, "mix_applied": applied,
            "by_type_method": {t: dict(c) for t, c in sorted(by_type_method.items())},
            "pool": {t: len(v) for t, v in sorted(pool.items())}, "dropped": dict(sorted(dropped.items())),
            "dropped_total": sum(dropped.values()),
            "sft_greedy_end_rate": round(sum(a["greedy_stopped"] for a in answers.values()) / len(answers), 3),
            "sft_greedy_correct_rate": _rate([r["factually_correct"] for r in sft_responses if r["source"] == "greedy"]),
        })

    return execute_stage(run, STAGE, sections=("model", "negatives", "pairs"),
                         inputs={"sft": sft_path, "sft_model": model_path}, body=body, force=force)


def _rate(values: list[bool | None]) -> float | None:
    applicable = [v for v in values if v is not None]
    return round(sum(applicable) / len(applicable), 3) if applicable else None
