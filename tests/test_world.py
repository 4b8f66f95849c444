"""Tests of the embedded world: verifiers (hand-worked cases), sampling, the split, near-duplicates, the corpus."""

from __future__ import annotations

import json
import random
import re
import time
from collections import Counter

import pytest

from alignkit import world
from alignkit.world import (
    FAMILIES,
    FAMILY_NAMES,
    Item,
    content_tokens,
    corpus,
    corpus_coverage,
    find_overlaps,
    get_family,
    heldout_items,
    near_duplicate,
    normalise,
    training_items,
)
from alignkit.world.capitals import _CAPITAL_OF, _CAPITALS
from alignkit.world.comparison import _WEIGHTS
from alignkit.world.list_category import _CATEGORIES, _LIST_FILLER
from alignkit.world.text import _mentions, _word_count
from alignkit.world.topics import _EXACT_WORD_COUNTS, _topic_sentences
from alignkit.world.word_transform import _TRANSFORM_OPS, _TRANSFORM_WORDS


def make(key: str, seed: int = 0) -> Item:
    family = get_family(key.split(":")[0])
    return family.make_item(key, random.Random(seed), "test-000")


def check(key: str, response: str) -> bool | None:
    item = make(key)
    return get_family(item.family).verify(item.params, response)


@pytest.fixture(scope="module")
def one_item_per_key() -> list[Item]:
    return [
        family.make_item(key, random.Random(key), f"all-{index}")
        for family in FAMILIES.values()
        for index, key in enumerate(family.keys())
    ]


# ---------------------------------------------------------------- registry and tables


def test_registry_follows_family_names() -> None:
    assert FAMILY_NAMES == (
        "arithmetic", "capitals", "word_transform", "list_category", "comparison", "constraint", "open_ended",
    )
    assert tuple(FAMILIES) == FAMILY_NAMES
    assert all(get_family(name).name == name for name in FAMILY_NAMES)


def test_get_family_unknown_lists_known_names() -> None:
    with pytest.raises(ValueError, match="unknown task family 'poetry'.*capitals.*open_ended"):
        get_family("poetry")


def test_key_spaces_are_sorted_unique_and_large_enough() -> None:
    for family in FAMILIES.values():
        keys = family.keys()
        assert keys == sorted(set(keys))
        assert all(key.startswith(family.name + ":") for key in keys)
        # 19 held-out + 29 training items per family must fit with room to spare.
        assert len(keys) >= 60, family.name
    assert len(_CAPITALS) >= 60
    assert len(world.TOPICS) >= 55
    assert len(_CATEGORIES) >= 14 and all(len(m) >= 8 for m in _CATEGORIES.values())


def test_entity_tables_are_unambiguous() -> None:
    places = [name.lower() for pair in _CAPITALS for name in pair]
    assert len(places) == len(set(places)), "a country or capital token appears twice"
    for category, members in _CATEGORIES.items():
        assert len(set(members)) == len(members), category
        assert not set(members) & _LIST_FILLER, f"{category} has a member that list answers may drop as filler"
    for word in _TRANSFORM_WORDS:
        assert 3 <= len(word) <= 7 and word != word[::-1] and word.upper() != "END"


def test_arithmetic_keys_canonicalise_commutative_operations() -> None:
    family = get_family("arithmetic")
    assert "arithmetic:add:5:7" in family.keys() and "arithmetic:add:7:5" not in family.keys()
    assert "arithmetic:sub:7:5" in family.keys() and "arithmetic:sub:5:7" not in family.keys()
    with pytest.raises(ValueError, match="unknown arithmetic key 'arithmetic:add:7:5'"):
        family.make_item("arithmetic:add:7:5", random.Random(0), "x")
    instructions = {family.make_item("arithmetic:add:5:7", random.Random(s), "x").instruction for s in range(30)}
    assert any(re.search(r"\b7\b.*\b5\b", text) for text in instructions)
    assert any(re.search(r"\b5\b.*\b7\b", text) for text in instructions)


# ---------------------------------------------------------------- verifiers, hand-worked


def test_arithmetic_verifier() -> None:
    params = {"key": "arithmetic:add:5:7", "op": "add", "a": 7, "b": 5, "answer": 12}
    family = get_family("arithmetic")
    for good in ["12", "The answer is 12.", "7 plus 5 is 12.", "twelve"]:
        assert family.verify(params, good) is True, good
    for bad in ["13", "12 or 13", "12 or 7", "", "I do not know."]:
        assert family.verify(params, bad) is False, bad
    assert make("arithmetic:sub:9:4").reference == "5"
    assert check("arithmetic:sub:9:4", "9 minus 4 is 5.") is True
    assert check("arithmetic:sub:9:4", "4") is False
    assert make("arithmetic:mul:3:4").reference == "12"
    assert check("arithmetic:mul:3:4", "7") is False
    # An answer equal to an operand still counts.
    assert check("arithmetic:add:0:5", "5") is True
    assert family.addresses(params, "13") and not family.addresses(params, "Sorry, I cannot help.")


def test_capitals_verifier_and_addresses() -> None:
    family = get_family("capitals")
    item = make("capitals:france")
    assert item.reference == "Paris" and "France" in item.instruction
    for good in ["Paris", "paris", "The capital of France is Paris."]:
        assert family.verify(item.params, good) is True, good
    for bad in ["Madrid", "Paris or Madrid", "Lyon", "France", ""]:
        assert family.verify(item.params, bad) is False, bad
    assert family.addresses(item.params, "Madrid")
    assert family.addresses(item.params, "Lyon")
    assert family.addresses(item.params, "I think it is Lyon.")
    assert not family.addresses(item.params, "I do not know.")
    assert not family.addresses(item.params, "Sorry, I cannot help with that.")
    assert family.topic_words(item.params) == {"france", "paris"}


def test_capitals_are_also_asked_in_reverse() -> None:
    family = get_family("capitals")
    assert {"capitals:france", "capitals:country_of:paris"} <= set(family.keys())
    item = make("capitals:country_of:paris")
    assert item.reference == "France" and "Paris" in item.instruction
    for good in ["France", "Paris is the capital of France."]:
        assert family.verify(item.params, good) is True, good
    for bad in ["Spain", "France or Spain", "Paris", ""]:
        assert family.verify(item.params, bad) is False, bad
    assert family.topic_words(item.params) == {"france", "paris"}


@pytest.mark.parametrize(
    ("op", "good", "bad"),
    [
        ("uppercase", ["APPLE", "The word in capital letters is APPLE."], ["apple", "Apple", "APPLE ELPPA", "APPEL"]),
        ("reverse", ["elppa", "Apple spelled backwards is elppa."],
         ["apple", "elpap", "elppa or elpap", "elppa and appel"]),
        ("first_letter", ["a", "A", "The first letter of apple is a.", "A is the first letter."],
         ["b", "It is a b.", "a or p", "apple"]),
        ("letter_count", ["5", "five", "Apple has 5 letters."], ["6", "5 or 6", "apple"]),
    ],
)
def test_word_transform_verifier(op: str, good: list[str], bad: list[str]) -> None:
    item = make(f"word_transform:{op}:apple")
    family = get_family("word_transform")
    assert family.verify(item.params, item.reference)
    for response in good:
        assert family.verify(item.params, response) is True, response
    for response in bad:
        assert family.verify(item.params, response) is False, response


def test_word_transform_references_and_addresses() -> None:
    assert [make(f"word_transform:{op}:tiger").reference for op in _TRANSFORM_OPS] == ["TIGER", "regit", "t", "5"]
    family = get_family("word_transform")
    reverse = make("word_transform:reverse:tiger").params
    assert family.addresses(reverse, "regti")
    assert not family.addresses(reverse, "tiger") and not family.addresses(reverse, "I like dogs.")
    upper = make("word_transform:uppercase:tiger").params
    assert family.addresses(upper, "TIGRE") and not family.addresses(upper, "tiger")
    first = make("word_transform:first_letter:tiger").params
    assert family.addresses(first, "q") and not family.addresses(first, "Tigers are big.")


def test_list_category_verifier() -> None:
    family = get_family("list_category")
    item = make("list_category:animals:3")
    assert item.instruction.lower().count("three") == 1 and "animals" in item.instruction
    for good in [
        "cat, dog, horse", "Cats, dogs and horses.", "1. cat\n2. dog\n3. horse",
        "Three animals are cat, dog and horse.", "a mouse, a sheep and a deer", "mice, sheep and wolves",
    ]:
        assert family.verify(item.params, good) is True, good
    for bad in ["cat, dog", "cat, dog, horse, cow", "cat, dog, apple", "cat, dog, cat", "cat, cats, dog",
                "big cat, dog, horse", ""]:
        assert family.verify(item.params, bad) is False, bad
    assert family.addresses(item.params, "cat and dog") and family.addresses(item.params, "apple, pear")
    assert not family.addresses(item.params, "I like cats.")
    two_word = make("list_category:body_parts:2")
    assert family.verify(two_word.params, "arm and leg") and not family.verify(two_word.params, "arm and tail")


def test_comparison_verifier() -> None:
    family = get_family("comparison")
    numbers = make("comparison:larger:7:12")
    assert numbers.reference == "12" and set(numbers.params["options"]) == {7, 12}
    for good in ["12", "12 is larger.", "twelve"]:
        assert family.verify(numbers.params, good) is True, good
    for bad in ["7", "12 or 7", "12 is larger than 7", "13", ""]:
        assert family.verify(numbers.params, bad) is False, bad
    assert family.verify(make("comparison:smaller:7:12").params, "7") is True
    weights = make("comparison:heavier:elephant:mouse")
    assert weights.reference == "An elephant."
    for good in ["An elephant.", "The elephant is heavier.", "elephants"]:
        assert family.verify(weights.params, good) is True, good
    for bad in ["A mouse.", "An elephant, not a mouse.", "A whale."]:
        assert family.verify(weights.params, bad) is False, bad
    assert family.verify(make("comparison:lighter:elephant:mouse").params, "The mouse.") is True
    assert family.addresses(weights.params, "A mouse.") and not family.addresses(weights.params, "A whale.")


def test_comparison_asks_only_clear_weight_pairs() -> None:
    for key in get_family("comparison").keys():
        relation, a, b = key.split(":")[1:]
        if relation in ("heavier", "lighter"):
            ratio = _WEIGHTS[a] / _WEIGHTS[b]
            assert max(ratio, 1 / ratio) >= 4, key


@pytest.mark.parametrize(
    ("key", "good", "bad"),
    [
        ("constraint:lowercase:moon", ["the moon is bright.", "i like the moon at night."],
         ["The moon is bright.", "the sun is hot.", "moon", "the moon shines at Night."]),
        ("constraint:exact_words:5:rain", ["Rain falls on the roof.", "rain - falls on the roof"],
         ["Rain falls on the old roof.", "Rain falls.", "Snow is very cold today."]),
        ("constraint:include_word:blue:cats", ["I drew cats with a blue pencil.", "Cats are BLUE."],
         ["Cats are soft.", "The sky is blue.", "Cats are blueish."]),
        ("constraint:no_commas:sea", ["The sea is deep and blue."], ["Today, the sea is deep.", "The sun is hot."]),
    ],
)
def test_constraint_verifier(key: str, good: list[str], bad: list[str]) -> None:
    item = make(key)
    family = get_family("constraint")
    for response in good:
        assert family.verify(item.params, response) is True, response
    for response in bad:
        assert family.verify(item.params, response) is False, response


def test_constraint_instructions_name_their_constraint() -> None:
    assert "five" in make("constraint:exact_words:5:rain").instruction
    assert "blue" in make("constraint:include_word:blue:cats").instruction
    assert "lowercase" in content_tokens(make("constraint:lowercase:moon", seed=3).instruction)
    assert "commas" in content_tokens(make("constraint:no_commas:sea", seed=3).instruction)


def test_open_ended_has_no_correctness_check() -> None:
    family = get_family("open_ended")
    item = make("open_ended:moon")
    assert item.reference is None and "moon" in item.instruction
    why = make("open_ended:why:moon")
    assert why.reference is None and "why" in why.instruction.lower() and "moon" in why.instruction
    assert family.verify(why.params, "People like the moon because it is bright.") is None
    assert family.verify(item.params, "The moon is bright.") is None
    assert family.addresses(item.params, "The moon is bright.") and not family.addresses(item.params, "Moon.")
    assert "moon" in family.topic_words(item.params)
    for seed in range(20):
        other = family.wrong_answer(item.params, random.Random(seed))
        assert not _mentions(other, family.topic_words(item.params)), other


def test_verifiers_report_missing_params() -> None:
    with pytest.raises(ValueError, match="arithmetic params lack the field 'answer'"):
        get_family("arithmetic").verify({"key": "k", "a": 1, "b": 2}, "3")


# ---------------------------------------------------------------- every key of every family


def test_every_key_reference_verifies_and_wrong_answer_fails(one_item_per_key: list[Item]) -> None:
    for item in one_item_per_key:
        family = get_family(item.family)
        rng = random.Random(item.key)
        wrong = family.wrong_answer(item.params, rng)
        if item.family == "open_ended":
            assert family.verify(item.params, wrong) is None
            continue
        assert family.verify(item.params, item.reference) is True, item
        assert family.verify(item.params, wrong) is False, (item, wrong)
        assert family.addresses(item.params, item.reference), item
        low, high = family.length_bounds
        assert low <= _word_count(item.reference) <= high, item
        assert _mentions(item.reference, family.topic_words(item.params)), item


def test_references_verify_across_many_sampled_items() -> None:
    for seed in range(3):
        for item in heldout_items(seed, n=140):
            family = get_family(item.family)
            if item.reference is not None:
                assert family.verify(item.params, item.reference) is True, item


def test_every_topic_has_sentences_of_every_exact_length() -> None:
    for topic in world.TOPICS:
        lengths = {_word_count(s) for s in _topic_sentences(topic)}
        assert set(_EXACT_WORD_COUNTS) <= lengths, topic
        assert all("," not in s and s[0].isupper() for s in _topic_sentences(topic))


# ---------------------------------------------------------------- sampling and the split


def test_heldout_items_are_deterministic_and_seed_dependent() -> None:
    first = heldout_items(0)
    assert first == heldout_items(0)
    assert [i.instruction for i in first] != [i.instruction for i in heldout_items(1)]


def test_heldout_items_are_stratified_with_distinct_keys_and_ids() -> None:
    items = heldout_items(7)
    assert len(items) == 130
    counts = Counter(item.family for item in items)
    assert set(counts) == set(FAMILY_NAMES) and max(counts.values()) - min(counts.values()) <= 1
    assert [counts[name] for name in FAMILY_NAMES] == [19, 19, 19, 19, 18, 18, 18]
    assert len({item.key for item in items}) == 130
    assert len({item.id for item in items}) == 130
    assert all(re.fullmatch(rf"eval-{item.family}-\d{{3}}", item.id) for item in items)
    assert [i.id for i in items if i.family == "capitals"][:2] == ["eval-capitals-000", "eval-capitals-001"]


def test_heldout_items_subset_of_families() -> None:
    items = heldout_items(0, n=5, families=("capitals", "comparison"))
    assert Counter(i.family for i in items) == {"capitals": 3, "comparison": 2}
    with pytest.raises(ValueError, match="unknown task family"):
        heldout_items(0, n=5, families=("capitals", "nonsense"))


def test_training_items_are_disjoint_from_heldout() -> None:
    held = heldout_items(0)
    train = training_items(0, 200, exclude=held)
    assert len(train) == 200
    counts = Counter(item.family for item in train)
    assert max(counts.values()) - min(counts.values()) <= 1
    assert not {i.key for i in train} & {i.key for i in held}
    assert len({i.key for i in train}) == 200
    assert find_overlaps([i.instruction for i in train], [i.instruction for i in held]) == []
    assert all(re.fullmatch(rf"train-{item.family}-\d{{3}}", item.id) for item in train)
    assert train == training_items(0, 200, exclude=held)
    assert [i.key for i in train] != [i.key for i in training_items(1, 200, exclude=held)]


def test_training_items_skip_near_duplicates_of_excluded_instructions() -> None:
    outsider = Item("ext-1", "capitals", "Name the capital city of France.", "Paris", {"key": "external:1"})
    n_keys = len(get_family("capitals").keys())
    train = training_items(0, n_keys - 1, exclude=[outsider], families=("capitals",))
    assert "capitals:france" not in {item.key for item in train}
    with pytest.raises(ValueError, match=r"family 'capitals' cannot supply .* 1 by near-duplicate"):
        training_items(0, n_keys, exclude=[outsider], families=("capitals",))


def test_training_items_name_the_family_whose_key_space_is_too_small() -> None:
    with pytest.raises(ValueError, match="family 'open_ended' cannot supply 200 training items"):
        training_items(0, 400, exclude=[], families=("comparison", "open_ended"))


# ---------------------------------------------------------------- near-duplicates


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("What is the capital of France?", "Name the capital city of France."),
        ("What is 7 plus 5?", "What is 5 plus 7?"),
        ("What is 7 plus 5?", "Add 5 and 7."),
        ("Write a sentence about the moon.", "Write one sentence about the moon."),
        ("List three animals.", "Name 3 animals."),
        ("Spell the word apple backwards.", "What is apple spelled backwards?"),
        ("Write the word apple in capital letters.", "Convert apple to upper case."),
        ("Which is heavier, a horse or a cat?", "Which weighs more, a cat or a horse?"),
        ("what is the capital of france", "What is the capital of France?"),
    ],
)
def test_near_duplicate_flags_paraphrases(a: str, b: str) -> None:
    assert near_duplicate(a, b) and near_duplicate(b, a)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("What is the capital of France?", "What is the capital of Spain?"),
        ("What is 7 plus 5?", "What is 7 plus 6?"),
        ("What is 7 plus 5?", "What is 7 times 5?"),
        ("List three animals.", "List three fruits."),
        ("List three animals.", "List four animals."),
        ("Write a sentence about cats that includes the word blue.",
         "Write a sentence about dogs that includes the word blue."),
        ("Write a sentence about cats that includes the word blue.",
         "Write a sentence about cats that includes the word red."),
        ("Write a sentence about the sea using only lowercase letters.",
         "Write a sentence about the moon using only lowercase letters."),
        ("Name two trees.", "Write a sentence about trees."),
        ("Why do people like the moon?", "Why do people like the sun?"),
        ("Why do people like the moon?", "Write a sentence about the moon."),
        ("What is the capital of France?", "Paris is the capital of which country?"),
        ("Write exactly five words about rain.", "Write exactly six words about rain."),
        ("Name four birds.", "Write exactly four words about birds."),
        ("Which is larger, 12 or 7?", "Which is smaller, 12 or 7?"),
        ("Write a sentence about the moon.", "Write the word moon in capital letters."),
        ("Write a sentence.", "Tell me something."),
    ],
)
def test_near_duplicate_separates_different_tasks(a: str, b: str) -> None:
    assert not near_duplicate(a, b) and not near_duplicate(b, a)


def test_normalise_and_content_tokens() -> None:
    assert normalise("  Hello,   WORLD!! ") == "hello world"
    assert content_tokens("What is the sum of 7 and 5?") == frozenset({"plus", "7", "5"})
    assert content_tokens("Which letter does the word apple start with?") == frozenset({"first", "apple"})


def test_all_phrasings_of_a_key_are_near_duplicates_and_different_keys_are_not(one_item_per_key: list[Item]) -> None:
    for family in FAMILIES.values():
        for key in family.keys()[:: max(1, len(family.keys()) // 12)]:
            phrasings = {family.make_item(key, random.Random(s), "x").instruction for s in range(25)}
            assert len(phrasings) >= 2, key
            assert all(near_duplicate(a, b) for a in phrasings for b in phrasings), key
    texts = [item.instruction for item in one_item_per_key]
    cross = [(i, j) for i, j, _ in find_overlaps(texts, texts) if one_item_per_key[i].key != one_item_per_key[j].key]
    assert cross == [], [(texts[i], texts[j]) for i, j in cross[:5]]


def test_find_overlaps_reports_exact_and_near_pairs() -> None:
    train = ["What is 7 plus 5?", "List three fruits.", "Name the capital city of France."]
    held = ["what is 7 plus 5", "What is the capital of France?", "List three animals."]
    assert find_overlaps(train, held) == [(0, 0, "exact"), (2, 1, "near")]
    assert find_overlaps([], held) == [] and find_overlaps(train, []) == []


def test_find_overlaps_is_fast_enough(one_item_per_key: list[Item]) -> None:
    train = [item.instruction for item in one_item_per_key][:2000]
    held = [item.instruction for item in heldout_items(3, n=200)]
    start = time.perf_counter()
    overlaps = find_overlaps(train, held)
    assert time.perf_counter() - start < 2.0
    assert overlaps  # held-out keys are among the first 2000 keys, so some instructions overlap
    assert all(one_item_per_key[i].key == heldout_items(3, n=200)[j].key for i, j, _ in overlaps[:20])


# ---------------------------------------------------------------- corpus


@pytest.fixture(scope="module")
def big_corpus() -> list[str]:
    return corpus(0, 1300)


def test_corpus_never_contains_the_template(big_corpus: list[str]) -> None:
    for document in big_corpus:
        assert "Instruction:" not in document and "Response:" not in document
        assert not re.search(r"\bEND\b", document), document


def test_corpus_covers_every_key_of_every_family() -> None:
    assert corpus_coverage(0, 1300) == dict.fromkeys(FAMILY_NAMES, 1.0)
    assert all(0 < fraction < 1 for fraction in corpus_coverage(0, 50).values())


def test_corpus_text_states_facts_and_qa_of_every_family(big_corpus: list[str]) -> None:
    text = "\n\n".join(big_corpus)
    for _, capital in _CAPITALS:
        assert re.search(rf"\b{capital}\b", text), capital
    assert "\nA: " in text and "Q: " in text and "Question: " in text and "Answer: " in text
    for probe in ["plus", "capital of", "backwards", "List ", "heavier", "lowercase", "sentence about"]:
        assert probe in text, probe
    qa_pair = re.compile(r"^Q: (.+)\nA: (.+)$", re.MULTILINE)
    pairs = qa_pair.findall(text)
    assert len(pairs) > 500
    # Answers are the items' references: every capitals question is answered with its capital.
    forward = [(re.search(r"capital (?:city )?of ([A-Z]\w+)", q), a) for q, a in pairs]
    forward = [(match.group(1), answer) for match, answer in forward if match]
    assert len(forward) > 20
    for country, answer in forward:
        assert _CAPITAL_OF[country.lower()] == answer, (country, answer)
    backward = [(re.search(r"([A-Z]\w+) is the capital of which country", q), a) for q, a in pairs]
    backward = [(match.group(1), answer) for match, answer in backward if match]
    assert backward
    for capital, answer in backward:
        assert _CAPITAL_OF[answer.lower()] == capital, (capital, answer)


def test_corpus_documents_are_short_and_deterministic(big_corpus: list[str]) -> None:
    lengths = [len(document.split()) for document in big_corpus]
    assert min(lengths) >= 30 and max(lengths) <= 130
    assert corpus(0, 30) == big_corpus[:30]
    assert corpus(1, 30) != big_corpus[:30]
    assert corpus(0, 0) == []


def test_corpus_vocabulary_is_small(big_corpus: list[str]) -> None:
    assert len(world.vocabulary(big_corpus)) < 1000


# ---------------------------------------------------------------- records


def test_item_records_round_trip_through_json(one_item_per_key: list[Item]) -> None:
    for item in one_item_per_key[:: 50]:
        record = json.loads(json.dumps(item.to_record()))
        assert set(record) == {"id", "family", "instruction", "reference", "params"}
        assert Item.from_record(record) == item
        assert record["params"]["key"] == item.key


def test_item_from_record_names_the_bad_field() -> None:
    record = make("capitals:peru").to_record()
    del record["instruction"]
    with pytest.raises(ValueError, match=r"lacks field\(s\) \['instruction'\]"):
        Item.from_record(record)
    record = make("capitals:peru").to_record()
    record["reference"] = 5
    with pytest.raises(ValueError, match="field 'reference' must be str or null, got int"):
        Item.from_record(record)
    record = make("capitals:peru").to_record()
    del record["params"]["key"]
    with pytest.raises(ValueError, match="params lack the field 'key'"):
        Item.from_record(record)
