"""Tests for alignkit.stages.negatives (stage 03): negatives kept exactly as the model produced them.

Covered, with hand-worked values:

- ``allocate``: largest-remainder counts for a mix;
- ``TYPE_RULES`` / ``qualifies``: per type, the criteria a negative must fail (any) and pass (all); a missing END
  is a defect only ``format`` and ``verbose`` negatives may carry (``schemas.END_LESS_TYPES``);
- ``resolve_mix``: the named mixes (seed, uniform, observed), a mapping, restriction to ``negatives.types``;
- ``candidates_for``: every ``(type, method, text, emitted_end)`` for one SFT example;
- ``build_pool``: only candidates that really are negatives of their type, END-less ones kept without END;
- ``observed_rates``: the SFT model's own failure rate per type;
- ``select``: on-policy first, then the base model's continuation, then rules; spread over examples; no duplicates;
- ``negatives_for``: pool, mix and selection for one split, with its summary.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from alignkit import config, schemas, template, world
from alignkit.config import FAMILIES, NEGATIVE_TYPES, SEED_MIX
from alignkit.eval import scoring
from alignkit.stages import negatives

CAPITAL = world.Item("train-capitals-000", "capitals", "What is the capital of France?", "Paris",
                     {"key": "capitals:france", "asked": "capital", "country": "France", "capital": "Paris"})
ARITH = world.Item("train-arithmetic-000", "arithmetic", "Calculate 2 plus 3.", "5",
                   {"key": "arithmetic:add:2:3", "op": "add", "a": 2, "b": 3, "answer": 5})


def _row(item: world.Item, response: str) -> dict:
    """An SFT row as stage 01 writes it (the fields stage 03 reads)."""
    return {"id": item.id, "family": item.family, "instruction": item.instruction, "params": item.params,
            "response": response}


def _answers(greedy: str, samples: list[tuple[str, bool]], greedy_stopped: bool = True) -> dict:
    """The SFT model's answers to one instruction as ``answer_all`` stores them."""
    return {"greedy": greedy, "greedy_stopped": greedy_stopped, "samples": [text for text, _ in samples],
            "samples_stopped": [stopped for _, stopped in samples]}


# --------------------------------------------------------------------------------------------------
# allocate
# --------------------------------------------------------------------------------------------------


def test_allocate_seed_mix_on_520() -> None:
    expected = {"refusal": 156, "format": 130, "incorrect": 104, "off_topic": 78, "verbose": 52}
    assert negatives.allocate(520, SEED_MIX) == expected
    # The default config's mix is the named "seed" mix; resolved over all five types it is the same allocation.
    assert config.NegativesSettings().mix == "seed"
    assert negatives.allocate(520, negatives.resolve_mix("seed", NEGATIVE_TYPES)) == expected


@pytest.mark.parametrize(("total", "mix", "expected"), [
    # 3.5, 1.75, 1.75 -> floors 3, 1, 1 (5); the 2 left go to the largest remainders (.75, .75), not to "a".
    (7, {"a": 0.5, "b": 0.25, "c": 0.25}, {"a": 3, "b": 2, "c": 2}),
    # 2.25, 2.25, 1.5 -> floors 2, 2, 1; the 1 left goes to c (remainder .5 beats .25).
    (6, {"a": 0.375, "b": 0.375, "c": 0.25}, {"a": 2, "b": 2, "c": 2}),
    # A tie in remainders goes to the type listed first.
    (3, {"a": 0.5, "b": 0.5}, {"a": 2, "b": 1}),
    (3, {"b": 0.5, "a": 0.5}, {"b": 2, "a": 1}),
    # A zero share gets nothing; zero total gives zeros.
    (5, {"a": 1.0, "b": 0.0}, {"a": 5, "b": 0}),
    (0, {"a": 0.5, "b": 0.5}, {"a": 0, "b": 0}),
])
def test_allocate_largest_remainder_hand_worked(total: int, mix: dict, expected: dict) -> None:
    assert negatives.allocate(total, mix) == expected


@pytest.mark.parametrize("total", [1, 2, 7, 59, 61, 100, 333, 521, 1000])
def test_allocate_sums_exactly_and_stays_within_one_of_the_exact_share(total: int) -> None:
    counts = negatives.allocate(total, SEED_MIX)
    assert sum(counts.values()) == total
    assert list(counts) == list(SEED_MIX)
    for name, share in SEED_MIX.items():
        assert abs(counts[name] - total * share) < 1


# --------------------------------------------------------------------------------------------------
# TYPE_RULES and qualifies
# --------------------------------------------------------------------------------------------------


def test_type_rules_cover_every_type_with_known_criteria() -> None:
    assert set(negatives.TYPE_RULES) == set(NEGATIVE_TYPES)
    for rule in negatives.TYPE_RULES.values():
        assert set(rule) == {"fail", "pass"}
        assert rule["fail"] and set(rule["fail"]) <= set(scoring.CRITERIA)
        assert set(rule["pass"]) <= set(scoring.CRITERIA)
        assert not set(rule["fail"]) & set(rule["pass"])


def test_only_the_end_less_types_may_lack_end() -> None:
    # The negatives stage and the record schema agree on which types may be kept without END.
    must_end = {t for t, rule in negatives.TYPE_RULES.items() if "ends_with_end" in rule["pass"]}
    assert must_end == {"refusal", "incorrect", "off_topic"}
    assert set(NEGATIVE_TYPES) - must_end == set(schemas.END_LESS_TYPES) == {"format", "verbose"}


ALL_PASS = {c: True for c in scoring.CRITERIA}


def _scores(**failed_or_na: bool | None) -> dict:
    """Every criterion passes except those given (False: failed, None: not applicable)."""
    return {**ALL_PASS, **failed_or_na}


@pytest.mark.parametrize(("scores", "expected"), [
    # Nothing failed: a good answer is no negative of any type.
    (_scores(), set()),
    # refusal: fails no_unwarranted_refusal and ends with END. (A refusal also fails the content criteria.)
    (_scores(no_unwarranted_refusal=False), {"refusal"}),
    (_scores(no_unwarranted_refusal=False, addresses_instruction=False, factually_correct=False, on_topic=False),
     {"refusal", "incorrect", "off_topic"}),
    # ... the same refusal without END is only a format negative.
    (_scores(no_unwarranted_refusal=False, ends_with_end=False), {"format"}),
    # format: any one of ends_with_end, proper_structure, no_rambling.
    (_scores(ends_with_end=False), {"format"}),
    (_scores(proper_structure=False), {"format"}),
    # no_rambling is both a format and a verbose criterion.
    (_scores(no_rambling=False), {"format", "verbose"}),
    # incorrect: fails factually_correct and ends with END.
    (_scores(factually_correct=False), {"incorrect"}),
    (_scores(factually_correct=False, ends_with_end=False), {"format"}),
    # factually_correct None (open_ended: no verifier) is not a failure.
    (_scores(factually_correct=None), set()),
    # off_topic: fails on_topic and ends with END.
    (_scores(on_topic=False), {"off_topic"}),
    (_scores(on_topic=False, ends_with_end=False), {"format"}),
    # verbose: appropriate_length (or no_rambling); END or not.
    (_scores(appropriate_length=False), {"verbose"}),
    (_scores(appropriate_length=False, ends_with_end=False), {"format", "verbose"}),
    # Criteria no type is about make no negative on their own.
    (_scores(coherent=False), set()),
    (_scores(addresses_instruction=False), set()),
])
def test_qualifies_hand_made_scores(scores: dict, expected: set) -> None:
    assert {t for t in NEGATIVE_TYPES if negatives.qualifies(scores, t)} == expected


def test_qualifies_needs_pass_criteria_to_be_true_not_missing() -> None:
    # "pass" criteria must be True: a missing ends_with_end is not a pass.
    assert negatives.qualifies({"factually_correct": False, "ends_with_end": True}, "incorrect")
    assert not negatives.qualifies({"factually_correct": False}, "incorrect")
    assert not negatives.qualifies({"factually_correct": False, "ends_with_end": None}, "incorrect")
    # Format and verbose have no "pass" criteria.
    assert negatives.qualifies({"proper_structure": False}, "format")
    assert negatives.qualifies({"appropriate_length": False}, "verbose")


REFUSAL = "I'm sorry, but I can't help with that."
WRONG_CAPITAL = "The capital of France is Madrid."
LEAK = "Paris\nInstruction: Calculate 2 plus 3.\nResponse: 5"
OTHER_FAMILY = "5"
ELABORATED = ("Paris. To say it again, the answer is Paris. This is about france, and france matters here. "
              "Let me explain once more that it is about paris. In other words, Paris. To say it again, the "
              "answer is Paris.")
RUN_ON = "Paris is the capital. Paris is the capital. Paris is the capital. Paris is the capital."


def _types_scored(item: world.Item, text: str, emitted_end: bool) -> set[str]:
    scores = scoring.score_response(item, text, emitted_end)
    return {t for t in NEGATIVE_TYPES if negatives.qualifies(scores, t)}


@pytest.mark.parametrize(("text", "negative_type", "criteria"), [
    (REFUSAL, "refusal", {"no_unwarranted_refusal"}),
    (WRONG_CAPITAL, "incorrect", {"factually_correct"}),
    (LEAK, "format", {"proper_structure", "no_rambling"}),
    (OTHER_FAMILY, "off_topic", {"on_topic"}),
    (ELABORATED, "verbose", {"appropriate_length"}),
])
def test_each_type_fails_its_own_criterion_when_scored(text: str, negative_type: str, criteria: set) -> None:
    scores = scoring.score_response(CAPITAL, text, True)
    assert negatives.qualifies(scores, negative_type)
    failed = {c for c in scoring.CRITERIA if scores[c] is False}
    assert criteria <= failed
    assert failed & set(negatives.TYPE_RULES[negative_type]["fail"])


def test_a_negative_of_the_wrong_type_is_not_accepted() -> None:
    # The wrong capital is on topic, well formed, short, not a refusal and ends with END: only "incorrect".
    assert _types_scored(CAPITAL, WRONG_CAPITAL, True) == {"incorrect"}
    # The elaboration is correct, on topic and ends with END: only "verbose".
    assert _types_scored(CAPITAL, ELABORATED, True) == {"verbose"}


@pytest.mark.parametrize(("item", "text"), [
    (CAPITAL, "Paris"), (CAPITAL, "The capital of France is Paris."), (ARITH, "5"), (ARITH, "2 plus 3 is 5."),
])
def test_a_correct_answer_with_end_is_no_negative_and_without_end_only_format(item: world.Item, text: str) -> None:
    assert _types_scored(item, text, True) == set()
    assert _types_scored(item, text, False) == {"format"}


@pytest.mark.parametrize(("text", "negative_type"), [
    (WRONG_CAPITAL, "incorrect"), (OTHER_FAMILY, "off_topic"), (REFUSAL, "refusal"),
])
def test_an_end_less_incorrect_off_topic_or_refusal_text_does_not_qualify_as_its_type(text: str,
                                                                                     negative_type: str) -> None:
    assert negative_type in _types_scored(CAPITAL, text, True)
    # Without END its defect would be mixed with a missing END: it is only a format negative.
    assert _types_scored(CAPITAL, text, False) == {"format"}


def test_an_end_less_run_on_qualifies_as_format() -> None:
    scores = scoring.score_response(CAPITAL, RUN_ON, False)
    assert scores["ends_with_end"] is False and scores["no_rambling"] is False
    assert negatives.qualifies(scores, "format")
    assert _types_scored(CAPITAL, RUN_ON, False) == {"format", "verbose"}


# --------------------------------------------------------------------------------------------------
# resolve_mix
# --------------------------------------------------------------------------------------------------


def test_resolve_mix_seed_over_all_types_is_the_seed_mix() -> None:
    assert negatives.resolve_mix("seed", NEGATIVE_TYPES) == pytest.approx(SEED_MIX)
    assert SEED_MIX == {"refusal": 0.30, "format": 0.25, "incorrect": 0.20, "off_topic": 0.15, "verbose": 0.10}


def test_resolve_mix_seed_leave_one_type_out_renormalises() -> None:
    # Without refusal the other shares 25/20/15/10 are divided by 70.
    mix = negatives.resolve_mix("seed", ("format", "incorrect", "off_topic", "verbose"))
    assert list(mix) == ["format", "incorrect", "off_topic", "verbose"]
    assert mix == pytest.approx({"format": 5 / 14, "incorrect": 2 / 7, "off_topic": 3 / 14, "verbose": 1 / 7})
    # 100 x: 35.71, 28.57, 21.43, 14.29 -> floors 35, 28, 21, 14 (98); the 2 left go to format and incorrect.
    assert negatives.allocate(100, mix) == {"format": 36, "incorrect": 29, "off_topic": 21, "verbose": 14}


@pytest.mark.parametrize("left_out", NEGATIVE_TYPES)
def test_resolve_mix_leave_one_out_never_names_the_left_out_type(left_out: str) -> None:
    types = [t for t in NEGATIVE_TYPES if t != left_out]
    assert negatives.resolve_mix("uniform", types) == {t: 0.25 for t in types}
    # Each remaining seed share is divided by what is left once the left-out type's share is gone.
    assert negatives.resolve_mix("seed", types) == pytest.approx(
        {t: SEED_MIX[t] / (1 - SEED_MIX[left_out]) for t in types})


def test_resolve_mix_uniform() -> None:
    assert negatives.resolve_mix("uniform", NEGATIVE_TYPES) == {t: 0.2 for t in NEGATIVE_TYPES}
    assert negatives.resolve_mix("uniform", ["refusal", "format", "incorrect", "verbose"]) == {
        "refusal": 0.25, "format": 0.25, "incorrect": 0.25, "verbose": 0.25}


def test_resolve_mix_observed_follows_the_rates_and_drops_zero_types() -> None:
    observed = {"refusal": 0.0, "format": 0.3, "incorrect": 0.1, "off_topic": 0.1, "verbose": 0.0}
    mix = negatives.resolve_mix("observed", NEGATIVE_TYPES, observed)
    # 0.3 : 0.1 : 0.1 over 0.5; a type the SFT model never fails gets no share (and no key).
    assert mix == pytest.approx({"format": 0.6, "incorrect": 0.2, "off_topic": 0.2})
    assert negatives.allocate(10, mix) == {"format": 6, "incorrect": 2, "off_topic": 2}
    # Restricted to two types: 0.3 : 0.1.
    assert negatives.resolve_mix("observed", ["format", "incorrect"], observed) == pytest.approx(
        {"format": 0.75, "incorrect": 0.25})
    with pytest.raises(ValueError, match="observed failure rates"):
        negatives.resolve_mix("observed", NEGATIVE_TYPES)


def test_resolve_mix_mapping_is_restricted_to_types_and_renormalised() -> None:
    mapping = {"refusal": 0.5, "format": 0.25, "verbose": 0.25}
    assert negatives.resolve_mix(mapping, NEGATIVE_TYPES) == {"refusal": 0.5, "format": 0.25, "verbose": 0.25}
    # refusal is not among the types: format and verbose share what is left, 1:1; incorrect has no weight.
    assert negatives.resolve_mix(mapping, ["format", "incorrect", "verbose"]) == {"format": 0.5, "verbose": 0.5}


@pytest.mark.parametrize(("mix", "types", "observed"), [
    ({"refusal": 1.0}, ["format", "verbose"], None),
    ("observed", ["refusal", "off_topic"], {"refusal": 0.0, "off_topic": 0.0, "format": 0.5}),
    ("observed", NEGATIVE_TYPES, {t: 0.0 for t in NEGATIVE_TYPES}),
])
def test_resolve_mix_without_weight_on_any_type_is_an_error(mix, types, observed) -> None:
    with pytest.raises(ValueError, match="gives no weight to any of"):
        negatives.resolve_mix(mix, types, observed)


# --------------------------------------------------------------------------------------------------
# candidates_for
# --------------------------------------------------------------------------------------------------

EXAMPLE = _row(CAPITAL, "Paris")
OTHERS = [EXAMPLE, _row(ARITH, "5")]
ANSWERS = _answers("Paris", [("Paris", True), ("Madrid", True), (RUN_ON, False)])
BASE = {"response": "Paris\nQ: What is 2 plus 2?\nA: 4", "stopped": False}
RULES = ("rule_refusal", "swap_other_family", "rule_wrong_answer", "rule_template_leak", "rule_elaboration")


def _candidates(**changes) -> list[tuple[str, str, str, bool]]:
    args = {"example": EXAMPLE, "answers": ANSWERS, "base": BASE, "others": OTHERS, "rng": random.Random(0),
            **changes}
    return negatives.candidates_for(**args)


def test_candidates_are_type_method_text_emitted_end() -> None:
    found = _candidates()
    for negative_type, method, text, emitted_end in found:
        assert negative_type in NEGATIVE_TYPES
        assert method in ("sft_greedy", "sft_sample", "base_continuation", *RULES), method
        assert isinstance(text, str) and text
        assert isinstance(emitted_end, bool)
    assert {t for t, _, _, _ in found} == set(NEGATIVE_TYPES)


def test_every_model_output_is_a_candidate_of_every_type_with_its_own_end() -> None:
    found = _candidates()
    on_policy = [(t, m, text, end) for t, m, text, end in found if m in config.ON_POLICY_METHODS]
    # 1 greedy + 3 samples, each listed once per type, with the END it really has (build_pool filters later).
    assert len(on_policy) == 4 * len(NEGATIVE_TYPES)
    for negative_type in NEGATIVE_TYPES:
        assert [(m, text, end) for t, m, text, end in on_policy if t == negative_type] == [
            ("sft_greedy", "Paris", True), ("sft_sample", "Paris", True), ("sft_sample", "Madrid", True),
            ("sft_sample", RUN_ON, False)]


def test_base_continuation_is_a_format_and_verbose_candidate_as_generated() -> None:
    base = [(t, text, end) for t, m, text, end in _candidates() if m == "base_continuation"]
    assert base == [("format", BASE["response"], False), ("verbose", BASE["response"], False)]
    stopped = [(t, end) for t, m, _, end in _candidates(base={"response": "Paris", "stopped": True})
               if m == "base_continuation"]
    assert stopped == [("format", True), ("verbose", True)]


def test_candidates_model_outputs_before_base_before_rules_within_each_type() -> None:
    found = _candidates()
    for negative_type in NEGATIVE_TYPES:
        ranks = [negatives.METHOD_RANK.get(m, 2) for t, m, _, _ in found if t == negative_type]
        assert ranks == sorted(ranks), (negative_type, ranks)


def test_candidates_rules_and_swaps() -> None:
    found = _candidates()
    refusals = [(text, end) for t, m, text, end in found if m == "rule_refusal"]
    assert len(refusals) == 2 and len({text for text, _ in refusals}) == 2
    assert {text for text, _ in refusals} <= set(negatives.REFUSALS) and all(end for _, end in refusals)
    assert {t for t, m, _, _ in found if m == "rule_refusal"} == {"refusal"}
    # The other family's SFT response, with END.
    assert [(t, text, end) for t, m, text, end in found if m == "swap_other_family"] == [("off_topic", "5", True)]
    # The answer, then the template of the other instruction: the run-on a base model writes, without END.
    assert [(t, text, end) for t, m, text, end in found if m == "rule_template_leak"] == [
        ("format", "Paris\nInstruction: Calculate 2 plus 3.\nResponse: 5", False)]
    wrong = [(t, text, end) for t, m, text, end in found if m == "rule_wrong_answer"]
    assert len(wrong) == 1 and wrong[0][0] == "incorrect" and wrong[0][2] is True
    assert world.get_family("capitals").verify(CAPITAL.params, wrong[0][1]) is False
    elaboration = [(t, text, end) for t, m, text, end in found if m == "rule_elaboration"]
    assert len(elaboration) == 1 and elaboration[0][0] == "verbose" and elaboration[0][2] is True
    # Padded until over twice the family's length bound (capitals: 12 words) plus 8.
    assert world.get_family("capitals").length_bounds[1] == 12
    assert elaboration[0][1].startswith("Paris.") and len(elaboration[0][1].split()) > 2 * 12 + 8


def test_candidates_without_other_families_or_base_output() -> None:
    found = _candidates(others=[EXAMPLE], base={"response": "", "stopped": False})
    methods = {m for _, m, _, _ in found}
    assert not methods & {"base_continuation", "swap_other_family", "rule_template_leak"}
    # off_topic is left with the model's own outputs only.
    assert {m for t, m, _, _ in found if t == "off_topic"} == {"sft_greedy", "sft_sample"}


def test_open_ended_gets_no_rule_wrong_answer() -> None:
    item = world.get_family("open_ended").make_item("open_ended:moon", random.Random(0), "train-open_ended-000")
    example = _row(item, "The moon shines in the night sky.")
    found = negatives.candidates_for(example, _answers("The moon is bright.", []), {"response": "", "stopped": False},
                                     OTHERS, random.Random(0))
    assert "rule_wrong_answer" not in {m for _, m, _, _ in found}
    assert {m for t, m, _, _ in found if t == "incorrect"} == {"sft_greedy"}


def test_candidates_are_reproducible_for_a_seed() -> None:
    assert _candidates(rng=random.Random(5)) == _candidates(rng=random.Random(5))


def _world_rows(seed: int, per_family: int) -> tuple[list[world.Item], list[dict]]:
    rng = random.Random(seed)
    items = world.training_items(seed, per_family * len(FAMILIES), exclude=[], families=FAMILIES)
    rows = [_row(it, it.reference or world.topic_sentence(it.params["topic"], rng)) for it in items]
    return items, rows


def test_every_rule_candidate_qualifies_as_its_type_for_every_family() -> None:
    """Rule-made candidates fill a shortfall: each must be a negative of its type, scored with the END it has.

    (Off-topic swaps are another family's real answer, which can mention this item's topic, e.g. a colour in a
    list-of-colours task; those are dropped by build_pool, so they are checked separately below.)
    """
    rng = random.Random(0)
    items, rows = _world_rows(0, 5)
    seen: Counter = Counter()
    for item, row in zip(items, rows):
        no_output = _answers(row["response"], [])
        for negative_type, method, text, emitted_end in negatives.candidates_for(
                row, no_output, {"response": "", "stopped": False}, rows, rng):
            if not method.startswith("rule"):
                continue
            scores = scoring.score_response(item, text.strip(), emitted_end)
            assert negatives.qualifies(scores, negative_type), (item.instruction, negative_type, method, text)
            seen[method] += 1
    n = len(items)
    # Two refusals, one template leak and one elaboration per item; a wrong answer for every family but open_ended.
    assert seen == {"rule_refusal": 2 * n, "rule_template_leak": n, "rule_elaboration": n,
                    "rule_wrong_answer": 5 * (len(FAMILIES) - 1)}


def test_off_topic_swaps_are_mostly_valid_negatives() -> None:
    rng = random.Random(1)
    items, rows = _world_rows(1, 10)
    verdicts = []
    for item, row in zip(items, rows):
        for negative_type, method, text, emitted_end in negatives.candidates_for(
                row, _answers(row["response"], []), {"response": "", "stopped": False}, rows, rng):
            if method == "swap_other_family":
                assert negative_type == "off_topic" and emitted_end
                assert text in {r["response"] for r in rows if r["family"] != item.family}
                verdicts.append(negatives.qualifies(scoring.score_response(item, text, True), "off_topic"))
    assert len(verdicts) == len(items)
    assert sum(verdicts) >= 0.8 * len(verdicts)


# --------------------------------------------------------------------------------------------------
# build_pool
# --------------------------------------------------------------------------------------------------

ROWS = [_row(CAPITAL, "Paris"), _row(ARITH, "5")]
POOL_ANSWERS = {CAPITAL.id: _answers("Paris", [("Madrid", True), (RUN_ON, False)]),
                ARITH.id: _answers("5", [("7", True), ("I cannot answer that request.", False)])}
POOL_BASE = {CAPITAL.id: BASE, ARITH.id: {"response": "", "stopped": False}}


def _pool(types=NEGATIVE_TYPES, seed: int = 0):
    return negatives.build_pool(ROWS, POOL_ANSWERS, POOL_BASE, random.Random(seed), types)


def test_build_pool_keeps_an_end_less_run_on_as_a_format_negative_without_end() -> None:
    pool, _ = _pool()
    run_on = [c for c in pool["format"] if c["response"] == RUN_ON]
    assert len(run_on) == 1
    negative = run_on[0]
    assert negative["method"] == "sft_sample" and negative["sft_id"] == CAPITAL.id
    assert negative["emitted_end"] is False
    assert negative["completion"] == " " + RUN_ON
    assert template.STOP_STRING not in negative["completion"]
    assert {"ends_with_end", "no_rambling"} <= set(negative["failed_criteria"])
    # It is a verbose negative too (too long, rambling), and never an incorrect/off_topic/refusal one.
    assert [c["completion"] for c in pool["verbose"] if c["response"] == RUN_ON] == [" " + RUN_ON]
    for negative_type in ("incorrect", "off_topic", "refusal"):
        assert all(c["emitted_end"] for c in pool[negative_type])


def test_build_pool_end_less_refusal_sample_is_only_a_format_negative() -> None:
    pool, dropped = _pool()
    text = "I cannot answer that request."
    assert {t for t, items in pool.items() for c in items if c["response"] == text} == {"format"}
    assert dropped["refusal:sft_sample:not_bad_in_its_way"] >= 1


def test_build_pool_incorrect_from_model_outputs_only_where_the_verifier_rejects() -> None:
    pool, dropped = _pool()
    on_policy = sorted((c["sft_id"], c["response"], c["completion"]) for c in pool["incorrect"]
                       if c["method"] in config.ON_POLICY_METHODS)
    assert on_policy == [(ARITH.id, "7", " 7\nEND"), (CAPITAL.id, "Madrid", " Madrid\nEND")]
    rules = [c for c in pool["incorrect"] if c["method"] == "rule_wrong_answer"]
    assert len(rules) == 2 and all(c["emitted_end"] for c in rules)
    # The greedy answers equal the SFT responses (with END): dropped for every type, for both examples.
    for negative_type in NEGATIVE_TYPES:
        assert dropped[f"{negative_type}:sft_greedy:empty_or_same_as_sft"] == 2


def test_build_pool_entries_are_valid_negative_records() -> None:
    pool, _ = _pool()
    assert set(pool) == set(NEGATIVE_TYPES)
    for negative_type, candidates in pool.items():
        for index, candidate in enumerate(candidates):
            assert candidate["type"] == negative_type
            assert candidate["prompt"] == template.prompt(candidate["instruction"])
            expected = (template.completion(candidate["response"]) if candidate["emitted_end"]
                        else " " + candidate["response"])
            assert candidate["completion"] == expected
            assert schemas.check_record("negatives", {**candidate, "id": f"neg-{index}"}) == []


def test_build_pool_only_builds_the_configured_types() -> None:
    pool, dropped = _pool(types=("format",))
    assert set(pool) == {"format"}
    assert all(key.startswith("format:") for key in dropped)
    # format: the run-on and the END-less refusal sample, the base continuation, a template leak per example.
    assert Counter(c["method"] for c in pool["format"]) == {"sft_sample": 2, "base_continuation": 1,
                                                            "rule_template_leak": 2}


# --------------------------------------------------------------------------------------------------
# observed_rates
# --------------------------------------------------------------------------------------------------


def test_observed_rates_hand_made_answers() -> None:
    # Six outputs: Paris/END (good), Madrid/END (incorrect, off_topic), the run-on without END (format, verbose),
    # 5/END (good), 7/END (incorrect, off_topic), a refusal without END (format only: END-less, not a refusal).
    rates = negatives.observed_rates(ROWS, POOL_ANSWERS, NEGATIVE_TYPES)
    assert rates == {"refusal": 0.0, "format": 0.3333, "incorrect": 0.3333, "off_topic": 0.3333, "verbose": 0.1667}
    # Restricted types: only those are counted; the denominator stays every output.
    assert negatives.observed_rates(ROWS, POOL_ANSWERS, ["verbose"]) == {"verbose": 0.1667}
    # The observed mix from those rates: 2 : 2 : 2 : 1 (refusal has none).
    assert negatives.resolve_mix("observed", NEGATIVE_TYPES, rates) == pytest.approx(
        {"format": 2 / 7, "incorrect": 2 / 7, "off_topic": 2 / 7, "verbose": 1 / 7}, abs=1e-4)


def test_observed_rates_of_no_outputs_are_zero() -> None:
    assert negatives.observed_rates([], {}, ["format", "incorrect"]) == {"format": 0.0, "incorrect": 0.0}


# --------------------------------------------------------------------------------------------------
# select
# --------------------------------------------------------------------------------------------------


def _candidate(sft_id: str, negative_type: str, method: str, response: str, emitted_end: bool = True) -> dict:
    completion = template.completion(response) if emitted_end else " " + response
    return {"sft_id": sft_id, "type": negative_type, "method": method, "response": response,
            "emitted_end": emitted_end, "completion": completion}


def test_select_meets_counts_and_reports_zero_shortfall() -> None:
    pool = {t: [_candidate(f"e{i}", t, "rule_x", f"{t}-{i}-{j}") for i in range(4) for j in range(3)]
            for t in NEGATIVE_TYPES}
    counts = {"refusal": 3, "format": 2, "incorrect": 2, "off_topic": 1, "verbose": 1}
    chosen, shortfall = negatives.select(pool, counts, random.Random(0))
    assert Counter(c["type"] for c in chosen) == counts
    assert shortfall == {t: 0 for t in NEGATIVE_TYPES}


def test_select_prefers_on_policy_then_base_continuation_then_rules() -> None:
    pool = {"format": [_candidate("e0", "format", "rule_template_leak", "r0", False),
                       _candidate("e1", "format", "base_continuation", "b1", False),
                       _candidate("e2", "format", "sft_sample", "s2", False),
                       _candidate("e3", "format", "rule_template_leak", "r3", False),
                       _candidate("e4", "format", "sft_greedy", "g4", False)]}
    for seed in range(10):
        ranked = [negatives.select(pool, {"format": n}, random.Random(seed))[0] for n in range(1, 6)]
        assert {c["method"] for c in ranked[0]} <= set(config.ON_POLICY_METHODS)
        assert {c["response"] for c in ranked[1]} == {"s2", "g4"}
        assert [c["response"] for c in ranked[2]][2] == "b1"
        assert {c["response"] for c in ranked[3][3:]} <= {"r0", "r3"}
        assert [c["method"] for c in ranked[4]][:3] in (["sft_sample", "sft_greedy", "base_continuation"],
                                                        ["sft_greedy", "sft_sample", "base_continuation"])


def test_select_prefers_on_policy_even_for_an_example_that_already_has_negatives() -> None:
    # Method comes before spreading: e0's own output beats a rule for e1, although e0 already has a negative.
    pool = {"refusal": [_candidate("e0", "refusal", "rule_refusal", "no")],
            "incorrect": [_candidate("e0", "incorrect", "sft_sample", "Madrid"),
                          _candidate("e1", "incorrect", "rule_wrong_answer", "Lyon")]}
    for seed in range(10):
        chosen, _ = negatives.select(pool, {"refusal": 1, "incorrect": 1}, random.Random(seed))
        assert [(c["sft_id"], c["response"]) for c in chosen] == [("e0", "no"), ("e0", "Madrid")]


def test_select_never_repeats_a_completion_for_the_same_example() -> None:
    # The same completion is a format and a verbose candidate of e0; it may be used once only.
    pool = {"format": [_candidate("e0", "format", "sft_sample", "same", False)],
            "verbose": [_candidate("e0", "verbose", "sft_sample", "same", False),
                        _candidate("e1", "verbose", "sft_sample", "same", False)]}
    chosen, shortfall = negatives.select(pool, {"format": 1, "verbose": 2}, random.Random(0))
    keys = [(c["sft_id"], c["completion"]) for c in chosen]
    assert keys == [("e0", " same"), ("e1", " same")]  # the same text for another example is fine
    assert shortfall == {"refusal": 0, "format": 0, "incorrect": 0, "off_topic": 0, "verbose": 1}


def test_select_the_same_text_with_and_without_end_are_two_negatives() -> None:
    # Dedup is by completion: " Paris" (no END) and " Paris\nEND" are different rejected sequences.
    pool = {"format": [_candidate("e0", "format", "sft_sample", "Paris", False)],
            "verbose": [_candidate("e0", "verbose", "sft_sample", "Paris", True)]}
    chosen, shortfall = negatives.select(pool, {"format": 1, "verbose": 1}, random.Random(0))
    assert [c["completion"] for c in chosen] == [" Paris", " Paris\nEND"]
    assert not any(shortfall.values())


def test_select_reports_shortfall() -> None:
    pool = {"refusal": [_candidate("e0", "refusal", "rule_refusal", "no")], "format": []}
    chosen, shortfall = negatives.select(pool, {"refusal": 3, "format": 2, "incorrect": 1}, random.Random(0))
    assert len(chosen) == 1
    assert shortfall == {"refusal": 2, "format": 2, "incorrect": 1, "off_topic": 0, "verbose": 0}


def test_select_spreads_types_over_examples() -> None:
    # e0 already has a refusal when format is chosen: format prefers e1, which has none yet (same method rank).
    pool = {"refusal": [_candidate("e0", "refusal", "rule_refusal", "no")],
            "format": [_candidate("e0", "format", "rule_template_leak", "f0", False),
                       _candidate("e1", "format", "rule_template_leak", "f1", False)]}
    for seed in range(10):
        chosen, _ = negatives.select(pool, {"refusal": 1, "format": 1}, random.Random(seed))
        assert [c["sft_id"] for c in chosen] == ["e0", "e1"]


def test_select_spreads_one_type_over_examples() -> None:
    # 4 examples x 2 refusal candidates, 4 wanted: one per example.
    pool = {"refusal": [_candidate(f"e{i}", "refusal", "rule_refusal", f"r{j}") for i in range(4) for j in range(2)]}
    for seed in range(10):
        chosen, _ = negatives.select(pool, {"refusal": 4}, random.Random(seed))
        assert Counter(c["sft_id"] for c in chosen) == {"e0": 1, "e1": 1, "e2": 1, "e3": 1}, seed


def test_select_is_reproducible_and_does_not_mutate_the_pool() -> None:
    pool = {t: [_candidate(f"e{i}", t, "rule_x", f"{t}{i}") for i in range(6)] for t in NEGATIVE_TYPES}
    before = {t: list(v) for t, v in pool.items()}
    counts = negatives.allocate(10, SEED_MIX)
    assert negatives.select(pool, counts, random.Random(3)) == negatives.select(pool, counts, random.Random(3))
    assert pool == before


# --------------------------------------------------------------------------------------------------
# negatives_for: one split end to end (no model)
# --------------------------------------------------------------------------------------------------


def _cfg(*overrides: str):
    return config.resolve("smoke", overrides=["negatives.types=[format, incorrect]",
                                              "negatives.mix={format: 0.5, incorrect: 0.5}", *overrides])


def test_negatives_for_applies_the_mix_on_policy_first() -> None:
    chosen, summary = negatives.negatives_for(_cfg(), ROWS, POOL_ANSWERS, POOL_BASE, 6, 0, strict=True)
    # 3 format: the two END-less samples, then the base continuation; 3 incorrect: Madrid and 7, then one rule.
    assert Counter((c["type"], c["method"]) for c in chosen) == {
        ("format", "sft_sample"): 2, ("format", "base_continuation"): 1,
        ("incorrect", "sft_sample"): 2, ("incorrect", "rule_wrong_answer"): 1}
    assert summary["total"] == 6 and summary["wanted"] == {"format": 3, "incorrect": 3}
    assert summary["shortfall"] == {}
    assert summary["mix_declared"] == {"format": 0.5, "incorrect": 0.5}
    assert summary["mix_applied"] == {"format": 0.5, "incorrect": 0.5}
    assert summary["on_policy_share"] == {"format": 0.6667, "incorrect": 0.6667}
    assert summary["end_less"] == {"format": 3, "incorrect": 0}
    assert summary["observed_failure_rates"] == {"format": 0.3333, "incorrect": 0.3333}
    assert summary["pool"] == {"format": 5, "incorrect": 4}
    # Sorted by example, then type, then text; END-less ones keep no END.
    assert [c["sft_id"] for c in chosen] == sorted(c["sft_id"] for c in chosen)
    for negative in chosen:
        assert (template.STOP_STRING in negative["completion"]) == negative["emitted_end"]


def test_negatives_for_refuses_a_shortfall_when_strict_and_counts_it_otherwise() -> None:
    # 20 wanted, 10 + 10; the pool has 5 format and 4 incorrect negatives.
    with pytest.raises(RuntimeError, match="too few valid negatives"):
        negatives.negatives_for(_cfg(), ROWS, POOL_ANSWERS, POOL_BASE, 20, 0, strict=True)
    chosen, summary = negatives.negatives_for(_cfg(), ROWS, POOL_ANSWERS, POOL_BASE, 20, 1, strict=False)
    assert len(chosen) == 9
    assert summary["shortfall"] == {"format": 5, "incorrect": 6}


def test_negatives_for_observed_mix() -> None:
    # Observed rates over format and incorrect are 1/3 each: an even split of 4.
    chosen, summary = negatives.negatives_for(_cfg("negatives.mix=observed"), ROWS, POOL_ANSWERS, POOL_BASE, 4, 0,
                                              strict=True)
    assert summary["mix_declared"] == "observed"
    assert summary["mix_used"] == {"format": 0.5, "incorrect": 0.5}
    assert Counter(c["type"] for c in chosen) == {"format": 2, "incorrect": 2}
    assert {c["method"] for c in chosen} == {"sft_sample"}
