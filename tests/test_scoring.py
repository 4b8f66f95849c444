"""Tests for alignkit.eval.scoring: each criterion on hand-worked cases, the refusal detector, the coherence and
repetition measures with values computed by hand (arithmetic in the comments), agreement with the labelled
fixtures in tests/data/scorer_fixtures.jsonl, and the ``alignkit score`` file round trip.

The fixture labels were written by hand, case by case, from the criterion definitions in
alignkit/eval/scoring.py's docstring; they are not produced by the scorer. Labelling policy for ``coherent``: a
response is coherent when a reader would call it readable language; token soup (mostly non-words or symbol
junk) and verbatim loops (the same word or phrase three or more times in a row) are not.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from alignkit import files, schemas, template, world
from alignkit.eval import checks, scoring
from alignkit.eval.checks import (
    COHERENCE_THRESHOLD,
    answer_segment,
    coherence,
    coherence_parts,
    is_refusal,
    is_word_like,
    mentions_topic,
    repetition,
    run_on,
    template_residue,
    word_count,
)
from alignkit.eval.scoring import (
    CRITERIA,
    ENDPOINTS,
    score_file,
    score_record,
    score_response,
)
from alignkit.world.text import _word_count

FIXTURES = Path(__file__).parent / "data" / "scorer_fixtures.jsonl"
T, F, N = True, False, None


def make(key: str, item_id: str = "t-1") -> world.Item:
    family = world.get_family(key.split(":")[0])
    return family.make_item(key, random.Random(0), item_id)


ADD = make("arithmetic:add:5:7")  # 5 plus 7 = 12
FRANCE = make("capitals:france")  # Paris
FRUITS = make("list_category:fruits:3")
SEA = make("open_ended:sea")
LOWER = make("constraint:lowercase:moon")


# ---------------------------------------------------------------------------------------------- API shape
def test_criteria_names_and_overall_key():
    assert CRITERIA == (
        "ends_with_end", "proper_structure", "no_rambling", "addresses_instruction", "appropriate_length",
        "no_unwarranted_refusal", "factually_correct", "coherent", "on_topic",
    )
    scores = score_response(ADD, "12", True)
    assert list(scores) == [*CRITERIA, "format", "content", "overall"]
    assert all(isinstance(value, bool) for value in scores.values())


def test_emitted_end_must_be_a_bool():
    with pytest.raises(TypeError, match="emitted_end must be a bool"):
        score_response(ADD, "12", 1)  # type: ignore[arg-type]


def test_unknown_family_is_an_error():
    item = world.Item("x", "poetry", "Write a poem.", None, {"key": "poetry:x"})
    with pytest.raises(ValueError, match="unknown task family 'poetry'"):
        score_response(item, "Roses.", True)


# ---------------------------------------------------------------------------------------------- ends_with_end
def test_ends_with_end_follows_emitted_end_only():
    assert score_response(ADD, "12", True)["ends_with_end"] is True
    assert score_response(ADD, "12", False)["ends_with_end"] is False
    assert score_response(ADD, "12", False)["overall"] is False
    # score_record takes it from the raw output: "\nEND" present or not.
    assert score_record(ADD, " 12\nEND")["ends_with_end"] is True
    assert score_record(ADD, " 12")["ends_with_end"] is False
    assert score_record(ADD, " 12 END")["ends_with_end"] is False  # END must start a line


def test_score_record_never_shortens_a_run_on_without_end():
    # Without END the whole continuation is scored: the second line makes it ramble.
    scores = score_record(ADD, " 12\n13")
    assert scores["no_rambling"] is False and scores["factually_correct"] is False


# ---------------------------------------------------------------------------------------------- proper_structure
@pytest.mark.parametrize(
    "response, residue",
    [
        ("12", []),
        ("Paris is the capital.", []),
        ("12\nInstruction: Add 3 and 4.", ["template tag", "turn label at line start"]),
        ("Response: 12", ["template tag", "turn label at line start"]),
        ("12\nQ: next", ["turn label at line start"]),
        ("12\n  A: 12", ["turn label at line start"]),
        ("Student: Paris", ["turn label at line start"]),
        ("12\nEND", ["END line"]),
        ("Paris</s>", ["special token"]),
        ("<|im_end|>", ["special token"]),
        ("Paris [PAD]", ["special token"]),
        ("The ENDING was sad.", []),  # END inside a word is not a marker line
        ("It was 10:30 when the answer came.", []),  # a colon alone is not a label
    ],
)
def test_template_residue(response, residue):
    assert template_residue(response) == residue


def test_proper_structure_fails_on_empty_and_residue():
    assert score_response(ADD, "", True)["proper_structure"] is False
    assert score_response(ADD, "   ", True)["proper_structure"] is False
    assert score_response(ADD, "12\nResponse: 12", True)["proper_structure"] is False
    assert score_response(ADD, "12", True)["proper_structure"] is True


# ---------------------------------------------------------------------------------------------- no_rambling
@pytest.mark.parametrize(
    "response, short, reasons",
    [
        ("12", True, []),
        ("5 plus 7 is 12.", True, []),
        ("12\nInstruction: What is 3 plus 4?", True, ["new task", "second line"]),
        ("12. What is 3 plus 4?", True, ["new task"]),
        ("Paris. Name the capital of Spain.", True, ["new task"]),
        ("Paris. Which is a lovely city.", True, []),  # no question mark, not a question opener we list
        ("The sea is wide. Tell me about cats.", False, ["new task"]),
        ("The sea is wide. How many fish live in it?", False, ["new task"]),
        ("The sea is wide. When the sun sets it glows.", False, []),  # "When" starting a clause, not a question
        ("apple\nbanana\ncherry", False, []),  # a list on lines is fine for a long-answer family
        ("apple\nbanana\ncherry", True, ["second line"]),
        ("The sea is wide.\n\nThe sea is blue.", False, ["second paragraph"]),
        ("Paris Paris Paris Paris Paris", True, ["repetition"]),
    ],
)
def test_run_on(response, short, reasons):
    assert run_on(response, short_answer=short) == reasons


def test_short_answer_families_come_from_length_bounds():
    # max words 15/12/12/12 -> short; list 25, constraint 30, open_ended 40 -> not short.
    short = [name for name in world.FAMILY_NAMES if checks.is_short_answer(world.get_family(name))]
    assert short == ["arithmetic", "capitals", "word_transform", "comparison"]


def test_no_rambling_second_line_depends_on_family():
    assert score_response(ADD, "12\n12", True)["no_rambling"] is False
    assert score_response(FRUITS, "apple\nbanana\ncherry", True)["no_rambling"] is True


# ---------------------------------------------------------------------------------------------- repetition
def test_repetition_hand_values():
    # 6 words -> 4 trigrams, all "paris paris paris": 3 repeat the first -> 3/4.
    assert repetition("Paris Paris Paris Paris Paris Paris") == 0.75
    # 9 words -> 7 trigrams; distinct: (i like cats) (like cats i) (cats i like) = 3 -> (7 - 3) / 7.
    assert repetition("I like cats. I like cats. I like cats.") == pytest.approx(4 / 7)
    # 9 words -> 7 trigrams; only "the sea is" repeats -> 1/7.
    assert repetition("the sea is deep and the sea is wide") == pytest.approx(1 / 7)
    assert repetition("The capital of France is Paris.") == 0.0
    assert repetition("a b") == 0.0  # fewer words than n: no trigram
    assert repetition("") == 0.0
    # Bigrams of "a a a": (a a) twice -> 1 repeat of 2.
    assert repetition("a a a", n=2) == 0.5
    with pytest.raises(ValueError, match="n-gram size"):
        repetition("a", n=0)


def test_repetition_threshold_a_sentence_said_twice_is_a_loop_a_reused_phrase_is_not():
    once = "I like cats because they are soft. I like cats because they are soft."
    # 14 words -> 12 trigrams; the second copy's 5 inner trigrams repeat -> 5/12 = 0.417: above 0.25.
    assert repetition(once) == pytest.approx(5 / 12)
    assert run_on(once, short_answer=False) == ["repetition"]
    assert repetition("The sea is blue and the sea is deep.") <= checks.REPETITION_THRESHOLD


# ---------------------------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, but I can't help with that.",
        "I cannot answer that request.",
        "As an AI, I am unable to do that.",
        "Sorry, I won't be able to help with this one.",
        "I'm unable to help with that request.",
        "I can't assist with that.",
        "I am not able to do this.",
        "I must decline.",
        "I refuse to answer.",
        "I'd rather not say.",
        "Unfortunately, I cannot do that.",
        "As a language model, I have no opinions.",
        "I apologize, but that is not possible.",
        "I\u2019m sorry, but I can\u2019t help.",  # curly apostrophes
        "i'm sorry, but i cannot write that.",
        "Hmm. I'm sorry, but I can't. I won't answer.",  # most sentences decline
        "I'm afraid I cannot help with that.",
        "Well, as an AI I have no view on this.",
    ],
)
def test_is_refusal_true(text):
    assert is_refusal(text) is True


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Paris",
        "Paris. I cannot think of a prettier city.",
        "12. I'm sorry, but that is all.",  # 1 of 2 sentences: not mainly a refusal
        "I can't wait to see the sea in summer.",
        "I won't forget my cats.",
        "Sorry, the capital is Paris.",
        "The answer is not something I can forget: 12.",
        "I cannot believe how big elephants are.",
        "Cats are soft and I am unable to resist them.",  # mid-sentence: not declining
        "The capital is Paris, as an AI would tell you.",
    ],
)
def test_is_refusal_false(text):
    assert is_refusal(text) is False


def test_refusal_phrase_in_first_sentence_counts_even_if_an_answer_follows():
    # Opening by declining is a refusal (documented); the answer after it does not undo that.
    assert is_refusal("I'm sorry, but I can't help with that. The capital is Paris.") is True


def test_refusal_patterns_are_compiled_regexes():
    assert checks.REFUSAL_PATTERNS
    assert all(hasattr(pattern, "search") for pattern in checks.REFUSAL_PATTERNS)


# ---------------------------------------------------------------------------------------------- coherence
@pytest.mark.parametrize(
    "text, expected",
    [
        ("The capital of France is Paris.", 1.0),
        # 3 tokens, 2 word-like ("xqzt" has no vowel) -> 2/3; one unmatched "(" -> x 0.75.
        ("xqzt the (cat", 2 / 3 * 0.75),
        # 8 tokens: cat, hmm, cats word-like (hmm is a known vowel-less word); tsk brrr pfft zzz grr not -> 3/8.
        ("cat tsk brrr pfft zzz hmm cats grr", 3 / 8),
        # words 1/2; characters "7#@cat": 2 of 6 are junk -> 4/6; product 1/3.
        ("7#@ cat", 1 / 2 * 4 / 6),
        # no adjacent duplicates; repetition 4/7 -> 3/7.
        ("I like cats. I like cats. I like cats.", 3 / 7),
        # one adjacent pair, the same word -> stutter factor 0.
        ("Paris Paris", 0.0),
        ("", 0.0),
        # two unmatched brackets and an odd double quote -> 1 - 3 * 0.25.
        ('The sea ) is ( "wide.', 0.25),
    ],
)
def test_coherence_hand_values(text, expected):
    assert coherence(text) == pytest.approx(expected)


def test_coherence_parts_and_range():
    parts = coherence_parts("xqzt the (cat")
    assert parts == {"words": pytest.approx(2 / 3), "characters": 1.0, "repetition": 1.0, "stutter": 1.0,
                     "balance": 0.75}
    for text in ["", "a", "@@@@", "Paris " * 50, "((((((((", "\u0000\u0001"]:
        assert 0.0 <= coherence(text) <= 1.0


@pytest.mark.parametrize(
    "token, ok",
    [
        ("Paris.", T), ("APPLE", T), ("elppa", T), ("regit", T), ("h", T), ("12,", T), ("3.5", T), ("1st", T),
        ("50%", T), ("5+7=12", T), ("+", T), ("=", T), ("--", T), ("...", T), ("don't", T), ("well-known", T),
        ("(cats)", T), ('"APPLE"', T), ("**Paris**", T), ("Brasília", T), ("strengths", T), ("Mr.", T),
        ("USA", T),
        ("xqzt", F), ("7#@", F), (",,;;", F), ("a3b", F), ("@@", F), ("_", F), ("aBcDe", F), ("zzkt", F),
        ("?!?!?!", F), ("a" * 21, F), ("tchstrs", F), ("##ing", F),
    ],
)
def test_is_word_like(token, ok):
    assert is_word_like(token) is ok


def test_coherent_criterion_uses_threshold():
    assert COHERENCE_THRESHOLD == 0.5
    assert score_response(SEA, "xqzt the (cat", True)["coherent"] is True  # exactly 0.5: at the threshold
    assert score_response(SEA, "xqzt vbnm the sea", True)["coherent"] is True  # 2/4 = 0.5
    assert score_response(SEA, "xqzt vbnm zzkt the sea", True)["coherent"] is False  # 2/5 = 0.4


# ---------------------------------------------------------------------------------------------- length
def test_word_count_matches_the_world_rule():
    for text in ["7 + 5 = 12.", "Rain falls - on the roof.", "", "  a  b ", "\u2014 dash \u2014", "x, y; z"]:
        assert word_count(text) == _word_count(text)
    assert word_count("7 + 5 = 12.") == 3


def test_appropriate_length_bounds_are_inclusive():
    low, high = world.get_family("arithmetic").length_bounds
    assert (low, high) == (1, 15)
    words = [f"w{i}" for i in range(high + 1)]
    assert score_response(ADD, " ".join(words[:high]), True)["appropriate_length"] is True
    assert score_response(ADD, " ".join(words[: high + 1]), True)["appropriate_length"] is False
    assert score_response(ADD, "", True)["appropriate_length"] is False
    # open_ended needs at least 3 words.
    assert score_response(SEA, "The sea.", True)["appropriate_length"] is False
    assert score_response(SEA, "The sea shines.", True)["appropriate_length"] is True


# ---------------------------------------------------------------------------------------------- addresses / factual
def test_addresses_instruction_is_the_family_check():
    assert score_response(ADD, "13", True)["addresses_instruction"] is True  # a number, wrong or right
    assert score_response(ADD, "Paris", True)["addresses_instruction"] is False
    assert score_response(FRUITS, "apple, hammer", True)["addresses_instruction"] is True
    assert score_response(FRUITS, "apple", True)["addresses_instruction"] is False
    assert score_response(ADD, "", True)["addresses_instruction"] is False


def test_content_criteria_judge_the_answer_segment_format_criteria_the_whole_generation():
    assert score_response(ADD, "12", True)["factually_correct"] is True
    assert score_response(ADD, "13", True)["factually_correct"] is False
    # A correct answer followed by a run-on naming other numbers: the answer "12" is correct; the run-on is
    # penalised once, by the format criteria (and so by format and overall).
    scores = score_response(ADD, "12\nInstruction: What is 3 plus 4?\nResponse: 7", False)
    assert (scores["factually_correct"], scores["addresses_instruction"], scores["appropriate_length"]) == \
        (True, True, True)
    assert (scores["proper_structure"], scores["no_rambling"], scores["format"]) == (False, False, False)
    assert (scores["content"], scores["overall"]) == (True, False)
    # A new turn after a blank line in the base model's own Q:/A: layout is cut the same way.
    scores = score_response(ADD, "12\n\nQ: What is 3 plus 4?\nA: 7", False)
    assert (scores["factually_correct"], scores["no_rambling"]) == (True, False)
    # A wrong answer stays wrong whatever follows.
    assert score_response(ADD, "13\nInstruction: Name a fruit.", False)["factually_correct"] is False


def test_answer_segment_cuts_at_new_turns_only():
    assert answer_segment("12") == ("12", "")
    assert answer_segment("12\nWhat is 3 plus 4?") == ("12", "What is 3 plus 4?")
    assert answer_segment("7 plus 5 is 12. Instruction: next") == ("7 plus 5 is 12.", "Instruction: next")
    assert answer_segment("Paris\nEND\nmore") == ("Paris", "END\nmore")
    # Ordinary second lines and sentences are part of the answer.
    assert answer_segment("The sea is deep.\nIt is blue.") == ("The sea is deep.\nIt is blue.", "")
    assert answer_segment("The sea is deep. What is more, it is wide.")[1] == ""
    # A generation that opens with a new turn has an empty answer.
    assert answer_segment("Instruction: What is 2 plus 2?") == ("", "Instruction: What is 2 plus 2?")


def test_composites_follow_their_criteria():
    scores = score_response(ADD, "12", False)  # correct, but no END
    assert (scores["format"], scores["content"], scores["overall"]) == (False, True, False)
    scores = score_response(ADD, "13", True)  # format fine, wrong
    assert (scores["format"], scores["content"], scores["overall"]) == (True, False, False)
    scores = score_response(SEA, "The sea is deep and blue.", True)  # factually_correct not applicable
    assert (scores["format"], scores["content"], scores["overall"]) == (True, True, True)
    # appropriate_length and coherent are in overall only.
    scores = score_response(ADD, "12 " + "and so on " * 10, True)
    assert (scores["appropriate_length"], scores["content"], scores["overall"]) == (False, True, False)


def test_factually_correct_not_applicable_to_open_ended_and_ignored_by_overall():
    scores = score_response(SEA, "The sea is deep and blue.", True)
    assert scores["factually_correct"] is None
    assert scores["overall"] is True


def test_lowercase_constraint_broken_by_one_capital():
    assert score_response(LOWER, "the moon is bright tonight.", True)["factually_correct"] is True
    assert score_response(LOWER, "the moon is bright over Paris tonight.", True)["factually_correct"] is False


# ---------------------------------------------------------------------------------------------- on_topic
def test_mentions_topic():
    assert mentions_topic("The capital is Paris.", {"france", "paris"}) is True
    assert mentions_topic("PARIS", {"paris"}) is True
    assert mentions_topic("Kittens purr.", {"kitten"}) is True  # plural s
    assert mentions_topic("Peaches.", {"peach"}) is True  # plural es
    assert mentions_topic("Parisian food", {"paris"}) is False  # whole words only
    assert mentions_topic("120", {"12"}) is False
    assert mentions_topic("7+5=12", {"12"}) is True
    assert mentions_topic("Body parts: arm.", {"body parts"}) is True  # multi-word topic word as a phrase
    assert mentions_topic("", {"sea"}) is False


def test_on_topic_right_answer_for_the_wrong_item_fails():
    wrong_item = score_response(FRANCE, "Madrid", True)  # Spain's capital
    assert (wrong_item["factually_correct"], wrong_item["on_topic"]) == (False, False)
    assert score_response(ADD, "35", True)["on_topic"] is False  # 5 times 7
    assert score_response(FRANCE, "The capital of France is Madrid.", True)["on_topic"] is True
    assert score_response(SEA, "Cats sleep in the sun.", True)["on_topic"] is False


def test_on_topic_accepts_a_verified_answer_without_topic_words():
    # Letter count of "garden": topic words {"garden", "6"}. "six" names neither, but the verifier reads number
    # words and accepts it, and a correct answer is about its item.
    item = make("word_transform:letter_count:garden")
    assert score_response(item, "six", True)["factually_correct"] is True
    assert mentions_topic("six", world.get_family("word_transform").topic_words(item.params)) is False
    assert score_response(item, "six", True)["on_topic"] is True


# ---------------------------------------------------------------------------------------------- overall
def test_overall_ignores_not_applicable_and_fails_on_any_false():
    assert scoring.overall({name: True for name in CRITERIA}) is True
    assert scoring.overall({**{name: True for name in CRITERIA}, "factually_correct": None}) is True
    assert scoring.overall({**{name: True for name in CRITERIA}, "coherent": False}) is False


def test_world_references_pass_every_criterion():
    items = world.heldout_items(0, 70)
    rng = random.Random(0)
    failures = []
    for item in items:
        reference = item.reference or world.topic_sentence(item.params["topic"], rng)
        scores = score_record(item, template.completion(reference))
        if not scores["overall"]:
            failures.append((item.id, reference, [c for c in CRITERIA if scores[c] is False]))
    assert failures == []


def test_world_wrong_answers_fail_factually_correct():
    items = [item for item in world.heldout_items(1, 70) if item.family != "open_ended"]
    rng = random.Random(1)
    for item in items:
        wrong = world.get_family(item.family).wrong_answer(item.params, rng)
        assert score_response(item, wrong, True)["factually_correct"] is False, (item.id, wrong)


# ---------------------------------------------------------------------------------------------- fixtures
def _load_fixtures() -> list[dict[str, Any]]:
    return [json.loads(line) for line in FIXTURES.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_fixtures_cover_every_criterion_both_ways():
    cases = _load_fixtures()
    assert len(cases) >= 100
    for case in cases:
        assert set(case["expected"]) <= set(ENDPOINTS), case["note"]
        assert case["note"].strip()
        world.Item.from_record(case["item"])
    for name in ENDPOINTS:
        labels = Counter(case["expected"][name] for case in cases if name in case["expected"])
        assert labels[True] >= 3 and labels[False] >= 3, (name, labels)
    assert any(case["expected"].get("factually_correct", "") is None for case in cases)
    assert any(template.STOP_STRING not in case["raw_output"] for case in cases)  # missing END cases


def test_scorer_agrees_with_every_labelled_fixture(capsys):
    cases = _load_fixtures()
    agree: Counter = Counter()
    total: Counter = Counter()
    mismatches = []
    for index, case in enumerate(cases):
        scores = score_record(world.Item.from_record(case["item"]), case["raw_output"])
        for name, expected in case["expected"].items():
            total[name] += 1
            if scores[name] == expected:
                agree[name] += 1
            else:
                mismatches.append(f"case {index} ({case['note']}): {name} expected {expected}, got {scores[name]}")
    with capsys.disabled():
        print(f"\nscorer agreement with {len(cases)} labelled fixtures:")
        for name in ENDPOINTS:
            print(f"  {name:24s} {agree[name]:3d}/{total[name]:3d} = {agree[name] / total[name]:.0%}")
    assert mismatches == []


def test_coherence_measure_agrees_with_labels():
    """Validation of the documented coherence measure: its threshold separates the hand labels exactly."""
    labelled = [(case["raw_output"], case["expected"]["coherent"]) for case in _load_fixtures()
                if "coherent" in case["expected"]]
    assert sum(1 for _, label in labelled if label) >= 10 and sum(1 for _, label in labelled if not label) >= 10
    values = [(coherence(template.split_output(raw)[0]), label) for raw, label in labelled]
    assert all((value >= COHERENCE_THRESHOLD) == label for value, label in values)


# ---------------------------------------------------------------------------------------------- score_file
def _response(model: str, item: world.Item, raw: str) -> dict[str, Any]:
    response, emitted_end = template.split_output(raw)
    return {"model": model, "item_id": item.id, "prompt": template.prompt(item.instruction), "raw_output": raw,
            "response": response, "emitted_end": emitted_end, "prompt_tokens": 9, "output_tokens": 3}


def test_score_file_round_trip(tmp_path):
    france, add = make("capitals:france", "i-fr"), make("arithmetic:add:5:7", "i-add")
    sea = make("open_ended:sea", "i-sea")
    items_path = tmp_path / "eval_items.jsonl"
    files.write_jsonl(items_path, [france.to_record(), add.to_record(), sea.to_record()])
    responses_path = tmp_path / "responses.jsonl"
    files.write_jsonl(responses_path, [
        _response("sft", france, " Paris\nEND"),
        _response("sft", add, " 12\nEND"),
        _response("base", france, " Paris\nQ: What is the capital of Spain?\nA: Madrid"),
        _response("base", add, " 13\nEND"),
        _response("solo", sea, " The sea is deep.\nEND"),
    ])
    out_path = tmp_path / "scores.jsonl"
    summary = score_file(items_path, responses_path, out_path)

    rows = files.read_jsonl(out_path)
    assert [(row["model"], row["item_id"], row["family"]) for row in rows] == [
        ("sft", "i-fr", "capitals"), ("sft", "i-add", "arithmetic"), ("base", "i-fr", "capitals"),
        ("base", "i-add", "arithmetic"), ("solo", "i-sea", "open_ended"),
    ]
    assert set(rows[0]) == {"model", "item_id", "family", *ENDPOINTS}
    assert rows[2]["proper_structure"] is False and rows[3]["factually_correct"] is False
    assert rows[4]["factually_correct"] is None

    assert list(summary) == ["sft", "base", "solo"]
    assert summary["sft"] == {name: 1.0 for name in ENDPOINTS}
    base = summary["base"]
    # France: the answer "Paris" is right, the run-on (no END, residue, rambling) fails format; "13": wrong and
    # off topic, format fine.
    assert base["ends_with_end"] == 0.5 and base["proper_structure"] == 0.5 and base["no_rambling"] == 0.5
    assert base["factually_correct"] == 0.5 and base["on_topic"] == 0.5 and base["overall"] == 0.0
    assert base["format"] == 0.5 and base["content"] == 0.5
    assert base["coherent"] == 1.0 and base["no_unwarranted_refusal"] == 1.0
    assert summary["solo"]["factually_correct"] is None and summary["solo"]["overall"] == 1.0


def test_score_file_unknown_item_id_names_the_line(tmp_path):
    add = make("arithmetic:add:5:7", "i-add")
    items_path = tmp_path / "eval_items.jsonl"
    files.write_jsonl(items_path, [add.to_record()])
    responses_path = tmp_path / "responses.jsonl"
    lines = [json.dumps(_response("sft", add, " 12\nEND")), "",
             json.dumps({**_response("sft", add, " 12\nEND"), "item_id": "i-missing"})]
    responses_path.write_text("\n".join(lines) + "\n", encoding="utf-8")  # a blank line 2: the bad row is line 3
    out_path = tmp_path / "scores.jsonl"
    with pytest.raises(schemas.InvalidInputError) as caught:
        score_file(items_path, responses_path, out_path)
    message = str(caught.value)
    assert f"{responses_path}:3: item_id: unknown item id 'i-missing'" in message
    assert not out_path.exists()  # nothing written before every response is known


def test_score_file_refuses_invalid_inputs(tmp_path):
    items_path = tmp_path / "eval_items.jsonl"
    files.write_jsonl(items_path, [ADD.to_record()])
    responses_path = tmp_path / "responses.jsonl"
    responses_path.write_text('{"model": "sft"}\n', encoding="utf-8")
    with pytest.raises(schemas.InvalidInputError, match=r"responses.jsonl:1: item_id: missing"):
        score_file(items_path, responses_path, tmp_path / "out.jsonl")
