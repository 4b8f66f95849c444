"""Tests for alignkit.stages.sft_data: acceptance of sampled answers, de-duplication, balancing, records, QC summary."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from alignkit import schemas, template, world
from alignkit.stages import sft_data
from alignkit.world import fewshot


def _capitals_item(item_id: str = "c1", instruction: str = "What is the capital of France?") -> world.Item:
    return world.Item(item_id, "capitals", instruction, "Paris",
                      {"key": "capitals:france", "asked": "capital", "country": "France", "capital": "Paris"})


@pytest.fixture
def arithmetic() -> world.Item:
    return world.get_family("arithmetic").make_item("arithmetic:add:2:3", random.Random(0), "a1")


@pytest.fixture
def moon() -> world.Item:
    return world.get_family("open_ended").make_item("open_ended:moon", random.Random(0), "o1")


# --------------------------------------------------------------------------------------------------
# acceptance
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("response", ["Paris", "The capital of France is Paris.", "It is Paris."])
def test_acceptance_accepts_correct_capitals(response: str) -> None:
    assert sft_data.acceptance(_capitals_item(), response, True) == (True, "accepted")


@pytest.mark.parametrize("response", ["5", "2 plus 3 is 5.", "The answer is 5."])
def test_acceptance_accepts_correct_arithmetic(arithmetic: world.Item, response: str) -> None:
    assert sft_data.acceptance(arithmetic, response, True) == (True, "accepted")


def test_acceptance_rejects_wrong_answers(arithmetic: world.Item) -> None:
    # On topic but wrong: the verifier decides.
    assert sft_data.acceptance(_capitals_item(), "The capital of France is Madrid.", True) == \
        (False, "verifier_rejected")
    assert sft_data.acceptance(arithmetic, "2 plus 3 is 6.", True) == (False, "verifier_rejected")
    # A bare wrong name/number is rejected too (it is also off topic, which is checked first).
    for item, wrong in ((_capitals_item(), "Madrid"), (arithmetic, "6")):
        ok, reason = sft_data.acceptance(item, wrong, True)
        assert not ok and reason in ("verifier_rejected", "fails_on_topic")


def test_acceptance_needs_a_stop(arithmetic: world.Item) -> None:
    # A correct answer that ran to the token limit without its stop is not accepted.
    assert sft_data.acceptance(arithmetic, "5", False) == (False, "no_stop")
    assert sft_data.acceptance(arithmetic, "", False) == (False, "no_stop")


@pytest.mark.parametrize("response", ["", "   ", "\n"])
def test_acceptance_rejects_empty(arithmetic: world.Item, response: str) -> None:
    assert sft_data.acceptance(arithmetic, response, True) == (False, "empty")


@pytest.mark.parametrize("response", [
    "Paris\nInstruction: What is the capital of Spain?",
    "Response: Paris",
    "Paris\nResponse: Paris",
    "Paris\nEND",
])
def test_acceptance_rejects_template_residue(response: str) -> None:
    ok, reason = sft_data.acceptance(_capitals_item(), response, True)
    assert not ok
    assert reason in ("fails_proper_structure", "fails_no_rambling")


def test_acceptance_rejects_refusals_and_rambling() -> None:
    ok, reason = sft_data.acceptance(_capitals_item(), "I cannot answer that request.", True)
    assert not ok and reason.startswith("fails_")
    ok, reason = sft_data.acceptance(_capitals_item(), " ".join(["Paris"] * 14), True)
    assert (ok, reason) == (False, "fails_no_rambling")
    ok, reason = sft_data.acceptance(
        _capitals_item(), "Paris. The capital of France is Paris. France is a country. Paris is big.", True)
    assert (ok, reason) == (False, "fails_appropriate_length")


def test_acceptance_open_ended_on_and_off_topic(moon: world.Item) -> None:
    assert moon.reference is None and world.get_family("open_ended").verify(moon.params, "x") is None
    assert sft_data.acceptance(moon, "The moon shines brightly in the night sky.", True) == (True, "accepted")
    assert sft_data.acceptance(moon, "Cats like to sleep in the warm sun all day.", True) == \
        (False, "fails_on_topic")
    assert sft_data.acceptance(moon, "The moon shines brightly in the night sky.", False) == (False, "no_stop")


# --------------------------------------------------------------------------------------------------
# deduplicate
# --------------------------------------------------------------------------------------------------


def test_deduplicate_removes_paraphrases_of_the_same_key_and_counts_them() -> None:
    first = _capitals_item("a", "What is the capital of France?")
    paraphrase = _capitals_item("b", "Tell me the capital of France.")
    same_normalised = _capitals_item("d", "what is the CAPITAL of france")
    spain = world.Item("c", "capitals", "What is the capital of Spain?", "Madrid",
                       {"key": "capitals:spain", "asked": "capital", "country": "Spain", "capital": "Madrid"})
    kept, removed = sft_data.deduplicate([first, paraphrase, spain, same_normalised])
    assert [item.id for item in kept] == ["a", "c"]
    assert removed == 2


def test_deduplicate_arithmetic_paraphrase_but_not_other_numbers() -> None:
    family = world.get_family("arithmetic")
    a = world.Item("x1", "arithmetic", "Calculate 2 plus 3.", "5",
                   {"key": "arithmetic:add:2:3", "op": "add", "a": 2, "b": 3, "answer": 5})
    b = world.Item("x2", "arithmetic", "What is the sum of 2 and 3?", "5", dict(a.params))
    c = family.make_item("arithmetic:add:2:4", random.Random(0), "x3")
    kept, removed = sft_data.deduplicate([a, b, c])
    assert [item.id for item in kept] == ["x1", "x3"]
    assert removed == 1
    assert sft_data.deduplicate([]) == ([], 0)


# --------------------------------------------------------------------------------------------------
# balance
# --------------------------------------------------------------------------------------------------


def _items(family: str, n: int) -> list[world.Item]:
    keys = world.get_family(family).keys()[:n]
    rng = random.Random(1)
    return [world.get_family(family).make_item(key, rng, f"{family}-{i}") for i, key in enumerate(keys)]


def test_balance_takes_n_round_robin_with_counts_within_one() -> None:
    families = ("capitals", "arithmetic", "comparison")
    pool = _items("capitals", 5) + _items("arithmetic", 5) + _items("comparison", 5)
    random.Random(0).shuffle(pool)
    for n in range(0, 16):
        chosen = sft_data.balance(pool, n, families)
        assert len(chosen) == n
        counts = Counter(item.family for item in chosen)
        assert max(counts.values(), default=0) - min((counts[f] for f in families), default=0) <= 1
        assert len({item.id for item in chosen}) == n
    # n = 7: 3/2/2, earlier families in the given order get the extra one.
    assert Counter(i.family for i in sft_data.balance(pool, 7, families)) == \
        {"capitals": 3, "arithmetic": 2, "comparison": 2}


def test_balance_keeps_order_within_a_family_and_fills_from_others_when_one_runs_out() -> None:
    families = ("capitals", "arithmetic")
    caps, ariths = _items("capitals", 1), _items("arithmetic", 6)
    chosen = sft_data.balance(caps + ariths, 5, families)
    assert [item.id for item in chosen] == ["capitals-0", "arithmetic-0", "arithmetic-1", "arithmetic-2",
                                            "arithmetic-3"]
    # Asking for more than there is returns everything, once.
    assert len(sft_data.balance(caps + ariths, 50, families)) == 7


def test_balance_ignores_families_not_listed() -> None:
    chosen = sft_data.balance(_items("capitals", 3) + _items("arithmetic", 3), 10, ("arithmetic",))
    assert [item.family for item in chosen] == ["arithmetic"] * 3


# --------------------------------------------------------------------------------------------------
# sft_record
# --------------------------------------------------------------------------------------------------


def test_sft_record_follows_the_template_and_validates() -> None:
    item = world.get_family("capitals").make_item("capitals:france", random.Random(0), "train-capitals-000")
    shots = [("What is the capital of Spain?", "Madrid"), ("What is 2 plus 2?", "4")]
    prompt = fewshot.prompt(shots, item.instruction)
    raw = " Paris\n\nQ: What is the capital of Peru?"
    sampling = {"do_sample": True, "temperature": 0.7, "top_p": 0.95, "seed": 1001}
    record = sft_data.sft_record(item, prompt, raw, "Paris", 2, sampling)
    assert record["prompt"] == template.prompt(item.instruction) == f"Instruction: {item.instruction}\nResponse:"
    assert record["completion"] == template.completion("Paris") == " Paris\nEND"
    assert record["response"] == "Paris"
    assert record["generation"] == {"prompt": prompt, "raw_output": raw, "attempt": 2, "sampling": sampling}
    assert (record["id"], record["family"], record["instruction"]) == (item.id, "capitals", item.instruction)
    assert record["params"] == item.params
    assert schemas.check_record("sft", record) == []
    # The few-shot prompt sent is kept verbatim and is not the study template.
    assert template.INSTRUCTION_TAG not in record["generation"]["prompt"]


def test_sft_record_of_a_response_the_model_did_not_write_is_invalid() -> None:
    item = _capitals_item("train-capitals-001")
    record = sft_data.sft_record(item, "Q: x\nA:", " Lyon\n\n", "Paris", 1, {})
    assert [field for field, _ in schemas.check_record("sft", record)] == ["response"]


# --------------------------------------------------------------------------------------------------
# qc_summary
# --------------------------------------------------------------------------------------------------


def test_qc_summary_hand_worked() -> None:
    rows = [{"family": "capitals"}, {"family": "capitals"}, {"family": "arithmetic"}]
    tally = {"capitals": Counter(attempts=5, accepted=2, dropped=1),
             "arithmetic": Counter(attempts=4, accepted=1, dropped=1)}
    summary = sft_data.qc_summary(rows, tally, Counter({3: 1, 1: 2}), Counter({"verifier_rejected": 1, "no_stop": 1}),
                                  duplicates_removed=2, n_candidates=5, wanted=4, token_lengths=[4, 1, 2])
    assert summary == {
        "wanted": 4, "kept": 3, "shortfall": 1, "candidates": 5, "duplicates_removed": 2,
        "accepted_total": 3, "acceptance_rate": 0.6,  # 3 accepted of 5 candidates
        "per_family": {
            "arithmetic": {"candidates": 2, "accepted": 1, "dropped": 1, "attempts": 4, "acceptance_rate": 0.5,
                           "kept": 1},
            "capitals": {"candidates": 3, "accepted": 2, "dropped": 1, "attempts": 5, "acceptance_rate": 0.667,
                         "kept": 2},
        },
        "attempts_histogram": {"1": 2, "3": 1},
        "dropped": {"no_stop": 1, "verifier_rejected": 1},
        "response_tokens": {"min": 1, "median": 2, "max": 4, "mean": 2.33},  # mean 7 / 3
    }
    assert list(summary["per_family"]) == ["arithmetic", "capitals"]
    assert list(summary["dropped"]) == ["no_stop", "verifier_rejected"]


def test_qc_summary_with_nothing_accepted() -> None:
    summary = sft_data.qc_summary([], {}, Counter(), Counter(), 0, 0, 10, [])
    assert summary["kept"] == 0 and summary["shortfall"] == 10
    assert summary["acceptance_rate"] is None and summary["response_tokens"] is None
    assert summary["per_family"] == {} and summary["attempts_histogram"] == {}
    # More kept than wanted never gives a negative shortfall; even counts take the middle mean as median.
    more = sft_data.qc_summary([{"family": "capitals"}] * 3, {}, Counter({1: 3}), Counter(), 0, 3, 2, [1, 2, 3, 10])
    assert more["shortfall"] == 0
    assert more["response_tokens"] == {"min": 1, "median": 2.5, "max": 10, "mean": 4.0}
