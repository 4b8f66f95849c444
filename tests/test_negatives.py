"""Tests for alignkit.negatives: the mix allocation, the "bad in its own way" check, candidates and selection."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from alignkit import negatives, world
from alignkit.config import FAMILIES, NEGATIVE_TYPES, NegativesConfig

CAPITAL = world.Item("train-capitals-000", "capitals", "What is the capital of France?", "Paris",
                     {"key": "capitals:france", "asked": "capital", "country": "France", "capital": "Paris"})
ARITH = world.Item("train-arithmetic-000", "arithmetic", "Calculate 2 plus 3.", "5",
                   {"key": "arithmetic:add:2:3", "op": "add", "a": 2, "b": 3, "answer": 5})


# --------------------------------------------------------------------------------------------------
# allocate
# --------------------------------------------------------------------------------------------------


def test_allocate_default_mix_on_520() -> None:
    assert negatives.allocate(520, NegativesConfig().mix) == {
        "refusal": 156, "format": 130, "incorrect": 104, "off_topic": 78, "verbose": 52}


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
    mix = NegativesConfig().mix
    counts = negatives.allocate(total, mix)
    assert sum(counts.values()) == total
    assert list(counts) == list(mix)
    for name, share in mix.items():
        assert abs(counts[name] - total * share) < 1


# --------------------------------------------------------------------------------------------------
# fails_as_intended: scored by the stage-06 scorer
# --------------------------------------------------------------------------------------------------

REFUSAL = "I'm sorry, but I can't help with that."
WRONG_CAPITAL = "The capital of France is Madrid."
LEAK = "Paris\nInstruction: Calculate 2 plus 3.\nResponse: 5"
OTHER_FAMILY = "5"
ELABORATED = ("Paris. To say it again, the answer is Paris. This is about france, and france matters here. "
              "Let me explain once more that it is about paris. In other words, Paris. To say it again, the "
              "answer is Paris.")


@pytest.mark.parametrize(("text", "negative_type", "criteria"), [
    (REFUSAL, "refusal", {"no_unwarranted_refusal"}),
    (WRONG_CAPITAL, "incorrect", {"factually_correct"}),
    (LEAK, "format", {"proper_structure", "no_rambling"}),
    (OTHER_FAMILY, "off_topic", {"on_topic"}),
    (ELABORATED, "verbose", {"appropriate_length"}),
])
def test_each_type_fails_its_own_criterion(text: str, negative_type: str, criteria: set) -> None:
    ok, failed = negatives.fails_as_intended(CAPITAL, text, negative_type)
    assert ok
    assert criteria <= set(failed)
    assert set(failed) & set(negatives.TYPE_CRITERIA[negative_type])


def test_a_negative_of_the_wrong_type_is_not_accepted() -> None:
    # The wrong capital is on topic, well formed, short and not a refusal: only "incorrect" fits it.
    verdicts = {t: negatives.fails_as_intended(CAPITAL, WRONG_CAPITAL, t)[0] for t in NEGATIVE_TYPES}
    assert verdicts == {"refusal": False, "format": False, "incorrect": True, "off_topic": False, "verbose": False}
    # The elaboration is correct and on topic: only "verbose".
    verdicts = {t: negatives.fails_as_intended(CAPITAL, ELABORATED, t)[0] for t in NEGATIVE_TYPES}
    assert verdicts == {"refusal": False, "format": False, "incorrect": False, "off_topic": False, "verbose": True}


@pytest.mark.parametrize(("item", "text"), [
    (CAPITAL, "Paris"), (CAPITAL, "The capital of France is Paris."), (ARITH, "5"), (ARITH, "2 plus 3 is 5."),
])
def test_a_correct_answer_is_not_a_negative_of_any_type(item: world.Item, text: str) -> None:
    for negative_type in NEGATIVE_TYPES:
        ok, failed = negatives.fails_as_intended(item, text, negative_type)
        assert not ok, negative_type
        assert failed == []


def test_type_criteria_cover_every_type_with_known_criteria() -> None:
    from alignkit import scoring

    assert set(negatives.TYPE_CRITERIA) == set(NEGATIVE_TYPES)
    for criteria in negatives.TYPE_CRITERIA.values():
        assert criteria and set(criteria) <= set(scoring.CRITERIA)


# --------------------------------------------------------------------------------------------------
# clean_text
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [
    ("  12\nEND\nmore ", "12"),
    ("Paris", "Paris"),
    ("  a\n b \n", "a\n b"),          # inner newlines are kept (format negatives may span lines)
    ("Paris\nEND", "Paris"),
    ("\nEND", ""),
    ("Paris ENDING soon", "Paris ENDING soon"),   # END inside a line is no marker
    ("Paris\nENDING", "Paris"),                    # cut where generation stops: at the first "\nEND"
    ("Paris\nInstruction: x", "Paris\nInstruction: x"),
])
def test_clean_text(raw: str, expected: str) -> None:
    assert negatives.clean_text(raw) == expected


# --------------------------------------------------------------------------------------------------
# candidates_for
# --------------------------------------------------------------------------------------------------

EXAMPLE = {"id": CAPITAL.id, "family": "capitals", "instruction": CAPITAL.instruction, "response": "Paris"}
OTHERS = [EXAMPLE, {"id": ARITH.id, "family": "arithmetic", "instruction": ARITH.instruction, "response": "5"}]
ANSWERS = {"greedy": "Paris", "samples": ["Paris", "Madrid", "The capital of France is Paris."]}
BASE_OUTPUT = " Paris\nQ: What is 2 plus 2?\nA: 4"


def _candidates(**changes) -> list[tuple[str, str, str]]:
    args = {"example": EXAMPLE, "item": CAPITAL, "answers": ANSWERS, "base_output": BASE_OUTPUT, "others": OTHERS,
            "rng": random.Random(0), **changes}
    return negatives.candidates_for(**args)


def test_candidates_cover_every_type_with_a_method() -> None:
    found = _candidates()
    assert {t for t, _, _ in found} == set(NEGATIVE_TYPES)
    for negative_type, method, text in found:
        assert negative_type in NEGATIVE_TYPES
        assert method.split("_")[0] in ("mined", "rule", "swap"), method
        assert isinstance(text, str) and text
    methods = {(t, m) for t, m, _ in found}
    assert {("incorrect", "mined_sft_sample"), ("incorrect", "rule_wrong_answer"),
            ("format", "mined_base_continuation"), ("format", "rule_template_leak"),
            ("verbose", "mined_sft_sample"), ("verbose", "rule_elaboration"),
            ("refusal", "rule_refusal"), ("off_topic", "swap_other_family")} <= methods


def test_candidates_mined_before_rules_within_each_type() -> None:
    found = _candidates()
    for negative_type in NEGATIVE_TYPES:
        kinds = [m.startswith("mined") for t, m, _ in found if t == negative_type]
        assert kinds == sorted(kinds, reverse=True), (negative_type, kinds)


def test_incorrect_is_mined_only_from_samples_the_verifier_rejects() -> None:
    mined = [text for t, m, text in _candidates() if (t, m) == ("incorrect", "mined_sft_sample")]
    assert mined == ["Madrid"]
    # No wrong sample: incorrect falls back to the rule only, whose answer the verifier rejects.
    found = _candidates(answers={"samples": ["Paris"]})
    incorrect = [(m, text) for t, m, text in found if t == "incorrect"]
    assert [m for m, _ in incorrect] == ["rule_wrong_answer"]
    assert world.get_family("capitals").verify(CAPITAL.params, incorrect[0][1]) is False


def test_candidates_rules_and_swaps() -> None:
    found = _candidates()
    refusals = [text for t, _, text in found if t == "refusal"]
    assert len(refusals) == 2 and len(set(refusals)) == 2 and set(refusals) <= set(negatives.REFUSALS)
    assert [text for t, _, text in found if t == "off_topic"] == ["5"]  # the other family's response
    leak = [text for t, m, text in found if m == "rule_template_leak"]
    assert leak == ["Paris\nInstruction: Calculate 2 plus 3.\nResponse: 5"]
    base = [text for t, m, text in found if m == "mined_base_continuation"]
    assert base == [BASE_OUTPUT.strip()] * 2  # as format and as verbose, stripped


def test_candidates_without_other_families_or_base_output() -> None:
    found = _candidates(others=[EXAMPLE], base_output="   ")
    types = Counter(t for t, _, _ in found)
    assert types["off_topic"] == 0
    assert not any(m == "mined_base_continuation" or m == "rule_template_leak" for _, m, _ in found)


def test_open_ended_gets_no_rule_wrong_answer() -> None:
    item = world.get_family("open_ended").make_item("open_ended:moon", random.Random(0), "train-open_ended-000")
    example = {"id": item.id, "family": item.family, "instruction": item.instruction,
               "response": "The moon shines in the night sky."}
    found = negatives.candidates_for(example, item, {"samples": ["The moon is bright."]}, "", OTHERS,
                                     random.Random(0))
    assert not any(t == "incorrect" for t, _, _ in found)


def test_candidates_are_reproducible_for_a_seed() -> None:
    assert _candidates(rng=random.Random(5)) == _candidates(rng=random.Random(5))


def test_every_rule_candidate_is_a_valid_negative_for_every_family() -> None:
    """Rule-based candidates are the fallback when mining yields too few: each must fail its type's criterion.

    (Off-topic swaps are not rules: another family's answer can happen to mention this item's topic, e.g. a
    colour in a list-of-colours task; those are dropped and counted by the stage, so they are not checked here.)
    """
    rng = random.Random(0)
    items = world.training_items(0, 5 * len(FAMILIES), exclude=[], families=FAMILIES)
    rows = [{"id": it.id, "family": it.family, "instruction": it.instruction,
             "response": it.reference or world.topic_sentence(it.params["topic"], rng)} for it in items]
    seen: Counter = Counter()
    for item, row in zip(items, rows):
        for negative_type, method, text in negatives.candidates_for(row, item, {"samples": []}, "", rows, rng):
            if not method.startswith("rule"):
                continue
            text = negatives.clean_text(text)
            ok, failed = negatives.fails_as_intended(item, text, negative_type)
            assert ok, (item.instruction, negative_type, method, text, failed)
            seen[negative_type] += 1
    assert set(seen) == set(NEGATIVE_TYPES) - {"off_topic"}
    assert seen["incorrect"] == 5 * (len(FAMILIES) - 1)  # every family but open_ended has a wrong answer


def test_off_topic_swaps_are_mostly_valid_negatives() -> None:
    rng = random.Random(0)
    items = world.training_items(1, 10 * len(FAMILIES), exclude=[], families=FAMILIES)
    rows = [{"id": it.id, "family": it.family, "instruction": it.instruction,
             "response": it.reference or world.topic_sentence(it.params["topic"], rng)} for it in items]
    verdicts = []
    for item, row in zip(items, rows):
        for negative_type, _, text in negatives.candidates_for(row, item, {"samples": []}, "", rows, rng):
            if negative_type == "off_topic":
                assert text in {r["response"] for r in rows if r["family"] != item.family}
                verdicts.append(negatives.fails_as_intended(item, text, "off_topic")[0])
    assert len(verdicts) == len(items)
    assert sum(verdicts) >= 0.8 * len(verdicts)


# --------------------------------------------------------------------------------------------------
# select
# --------------------------------------------------------------------------------------------------


def _candidate(sft_id: str, negative_type: str, method: str, response: str) -> dict:
    return {"sft_id": sft_id, "type": negative_type, "method": method, "response": response}


def test_select_meets_counts_and_reports_zero_shortfall() -> None:
    pool = {t: [_candidate(f"e{i}", t, "rule_x", f"{t}-{i}-{j}") for i in range(4) for j in range(3)]
            for t in NEGATIVE_TYPES}
    counts = {"refusal": 3, "format": 2, "incorrect": 2, "off_topic": 1, "verbose": 1}
    chosen, shortfall = negatives.select(pool, counts, random.Random(0))
    assert Counter(c["type"] for c in chosen) == counts
    assert shortfall == {t: 0 for t in NEGATIVE_TYPES}


def test_select_prefers_mined_over_rule() -> None:
    pool = {"incorrect": [_candidate("e0", "incorrect", "rule_wrong_answer", "r0"),
                          _candidate("e1", "incorrect", "rule_wrong_answer", "r1"),
                          _candidate("e2", "incorrect", "mined_sft_sample", "m2"),
                          _candidate("e3", "incorrect", "rule_wrong_answer", "r3")]}
    for seed in range(10):
        chosen, _ = negatives.select(pool, {"incorrect": 1}, random.Random(seed))
        assert [c["response"] for c in chosen] == ["m2"]
        chosen, _ = negatives.select(pool, {"incorrect": 2}, random.Random(seed))
        assert chosen[0]["response"] == "m2" and chosen[1]["method"].startswith("rule")


def test_select_never_repeats_a_text_for_the_same_example() -> None:
    # The same text is a format and a verbose candidate of e0; it may be used once only.
    pool = {"format": [_candidate("e0", "format", "mined_sft_sample", "same")],
            "verbose": [_candidate("e0", "verbose", "mined_sft_sample", "same"),
                        _candidate("e1", "verbose", "mined_sft_sample", "same")]}
    chosen, shortfall = negatives.select(pool, {"format": 1, "verbose": 2}, random.Random(0))
    keys = [(c["sft_id"], c["response"]) for c in chosen]
    assert len(keys) == len(set(keys))
    assert keys == [("e0", "same"), ("e1", "same")]  # the same text for another example is fine
    assert shortfall["verbose"] == 1 and shortfall["format"] == 0


def test_select_reports_shortfall() -> None:
    pool = {"refusal": [_candidate("e0", "refusal", "rule_refusal", "no")], "format": []}
    chosen, shortfall = negatives.select(pool, {"refusal": 3, "format": 2, "incorrect": 1}, random.Random(0))
    assert len(chosen) == 1
    assert shortfall == {"refusal": 2, "format": 2, "incorrect": 1, "off_topic": 0, "verbose": 0}


def test_select_spreads_types_over_examples() -> None:
    # e0 already has a refusal when format is chosen: format prefers e1, which has none yet.
    pool = {"refusal": [_candidate("e0", "refusal", "rule_refusal", "no")],
            "format": [_candidate("e0", "format", "rule_template_leak", "f0"),
                       _candidate("e1", "format", "rule_template_leak", "f1")]}
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
    counts = negatives.allocate(10, NegativesConfig().mix)
    assert negatives.select(pool, counts, random.Random(3)) == negatives.select(pool, counts, random.Random(3))
    assert pool == before
