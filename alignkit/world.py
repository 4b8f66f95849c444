"""The embedded world: task families, instruction sampling, the train/held-out split and the pretraining corpus.

Seven task families (:data:`FAMILY_NAMES`) each own an entity table, a few instruction templates
(paraphrases) per task and a verifier. A task is named by a *semantic key* (``"capitals:france"``,
``"arithmetic:add:5:7"``); every phrasing of a key is the same task, so the train/held-out split is made on
keys and then double-checked on the text with :func:`near_duplicate`.

The world is deliberately small and regular (under a thousand distinct words, answers of one to a dozen
words) so that a tiny Llama model pretrained on :func:`corpus` answers many instructions under a few-shot
``Q: ... / A: ...`` prompt, the way a real base model does. The corpus never contains the
``Instruction:/Response:/END`` template: like a real base model, the tiny one has to learn it from SFT.

Everything is deterministic for a seed: sampling uses ``random.Random`` objects seeded with strings, which
Python hashes with SHA-512 (independent of ``PYTHONHASHSEED``), never the global ``random`` state.

>>> item = get_family("capitals").make_item("capitals:france", random.Random(0), "demo-capitals-000")
>>> item.reference, get_family("capitals").verify(item.params, "The capital is Paris.")
('Paris', True)
"""

from __future__ import annotations

import abc
import copy
import functools
import itertools
import logging
import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from alignkit.config import FAMILIES

logger = logging.getLogger(__name__)

#: The families, in their canonical order (one definition, in :mod:`alignkit.config`).
FAMILY_NAMES: tuple[str, ...] = FAMILIES

#: Jaccard similarity of content tokens at or above which two instructions count as near-duplicates.
#: Instructions in this world have at most three content tokens, so two *different* tasks that share a frame
#: and differ in one entity score at most 2/4 = 0.5, while paraphrases of one task score 1.0.
NEAR_DUPLICATE_THRESHOLD = 0.6

# --------------------------------------------------------------------------------------------------------
# Text normalisation and content tokens
# --------------------------------------------------------------------------------------------------------

_APOSTROPHES = re.compile(r"['\u2019]")
_NON_ALNUM = re.compile(r"[^0-9a-z]+")

_NUMBER_WORDS: dict[str, int] = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40,
    "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100,
}
_WORD_FOR_NUMBER = {value: word for word, value in _NUMBER_WORDS.items()}

# Multi-word phrases that name one concept, rewritten to a single canonical token before tokenising.
# Order matters: "no capital letters" (lowercase) must win over "capital letters" (uppercase).
_PHRASES: tuple[tuple[str, str], ...] = (
    ("without any capital letters", "lowercase"),
    ("without capital letters", "lowercase"),
    ("no capital letters", "lowercase"),
    ("lower case", "lowercase"),
    ("small letters", "lowercase"),
    ("capital letters", "uppercase"),
    ("upper case", "uppercase"),
    ("all caps", "uppercase"),
    ("number of letters", "count letters"),
    ("how many", "count"),
    ("take away", "minus"),
    ("weighs more", "heavier"),
    ("weigh more", "heavier"),
    ("weighs less", "lighter"),
    ("weigh less", "lighter"),
    ("using the word", "include"),
    ("use the word", "include"),
    ("with the word", "include"),
)
_PHRASE_RE = re.compile(r"\b(" + "|".join(re.escape(phrase) for phrase, _ in _PHRASES) + r")\b")
_PHRASE_MAP = dict(_PHRASES)

# Single-word synonyms mapped to one canonical token, so that paraphrases share their content tokens.
_SYNONYMS: dict[str, str] = {
    "add": "plus", "adding": "plus", "added": "plus", "sum": "plus",
    "subtract": "minus", "subtracting": "minus", "subtracted": "minus", "difference": "minus",
    "multiply": "times", "multiplied": "times", "multiplying": "times", "product": "times",
    "bigger": "larger", "greater": "larger", "higher": "larger", "largest": "larger", "biggest": "larger",
    "less": "smaller", "lower": "smaller", "smallest": "smaller", "fewer": "smaller",
    "heaviest": "heavier", "lightest": "lighter",
    "capitalized": "uppercase", "capitalised": "uppercase",
    "backwards": "reverse", "backward": "reverse", "reversed": "reverse", "reversing": "reverse",
    "start": "first", "starts": "first", "begin": "first", "begins": "first",
    "includes": "include", "including": "include", "contain": "include", "contains": "include",
    "containing": "include",
    "comma": "commas", "precisely": "exactly",
}

# Instruction verbs, function words and response-form nouns: they say *how* to answer, not *what* the task is
# about, so they are not content. "one" is here (not a number) because "a sentence" ~ "one sentence".
_STOPWORDS: frozenset[str] = frozenset(
    """
    a an the what which who whom whose is are was were be been being of in on to for from by with and or
    it its this that these those me you your i my we us our please can could would will shall should do
    does did have has had get gets got if when at as into out up just so then than there here how
    write name tell give list say state describe provide answer question one city word words sentence
    sentences letter letters spell spelled spelling about something some any all only using use used
    no not without kind kinds type types country called short simple brief briefly following number
    numbers calculate compute work convert change find show put make different many much explain like people
    """.split()
)


@functools.lru_cache(maxsize=1 << 16)
def normalise(text: str) -> str:
    """Lowercase, drop apostrophes, turn every other non-alphanumeric run into one space, and strip.

    >>> normalise("  What is the Capital of FRANCE?! ")
    'what is the capital of france'
    >>> normalise("Don't add: 7+5")
    'dont add 7 5'
    """
    lowered = _APOSTROPHES.sub("", text.lower())
    return " ".join(_NON_ALNUM.sub(" ", lowered).split())


@functools.lru_cache(maxsize=1 << 16)
def content_tokens(text: str) -> frozenset[str]:
    """What an instruction is about: normalised tokens, phrases and synonyms canonicalised, stopwords removed.

    Number words become digits ("three" -> "3"), so "List 3 animals" and "List three animals" agree.

    >>> sorted(content_tokens("What is the capital of France?"))
    ['capital', 'france']
    >>> sorted(content_tokens("Name the capital city of France."))
    ['capital', 'france']
    >>> sorted(content_tokens("Write the word apple in capital letters."))
    ['apple', 'uppercase']
    >>> sorted(content_tokens("Subtract 4 from 9."))
    ['4', '9', 'minus']
    >>> sorted(content_tokens("List three animals."))
    ['3', 'animals']
    """
    text = _PHRASE_RE.sub(lambda match: _PHRASE_MAP[match.group(1)], normalise(text))
    tokens = set()
    for token in text.split():
        if token in _STOPWORDS:
            continue
        if token in _NUMBER_WORDS:
            token = str(_NUMBER_WORDS[token])
        tokens.add(_SYNONYMS.get(token, token))
    return frozenset(tokens)


#: Canonical operation words: what a task asks to *do* with its entities. Like numbers, they must agree
#: between near-duplicates ("List four birds." is not "Write exactly four words about birds.").
_OPERATION_TOKENS: frozenset[str] = frozenset(_SYNONYMS.values()) | frozenset(
    token for target in _PHRASE_MAP.values() for token in target.split() if token not in _STOPWORDS
) | {"exactly", "why"}


def _signature(tokens: frozenset[str]) -> frozenset[str]:
    """The numbers and operation words of a content-token set: these must match exactly."""
    return frozenset(token for token in tokens if token.isdigit() or token in _OPERATION_TOKENS)


def near_duplicate(a: str, b: str) -> bool:
    """Whether two instructions ask for the same thing (paraphrases count; different tasks do not).

    The rule:

    1. equal after :func:`normalise` -> duplicate;
    2. otherwise compare :func:`content_tokens` (instruction verbs and function words removed, synonyms and
       number words canonicalised). If either set is empty -> not a duplicate (nothing to compare);
    3. the numbers and the operation words (canonical tokens such as ``plus``, ``minus``, ``larger``,
       ``reverse``, ``exactly``, ``include``, ``lowercase``) must agree exactly: "7 plus 5" vs "7 plus 6" or
       "List four birds." vs "Write exactly four words about birds." are different tasks however similar;
    4. Jaccard similarity |A & B| / |A | B| must be at least :data:`NEAR_DUPLICATE_THRESHOLD` (0.6).

    >>> near_duplicate("What is the capital of France?", "Name the capital city of France.")
    True
    >>> near_duplicate("What is 7 plus 5?", "What is 5 plus 7?")
    True
    >>> near_duplicate("What is the capital of France?", "What is the capital of Spain?")
    False
    >>> near_duplicate("What is 7 plus 5?", "What is 7 plus 6?")
    False
    """
    return normalise(a) == normalise(b) or _similar_content(content_tokens(a), content_tokens(b))


def _similar_content(tokens_a: frozenset[str], tokens_b: frozenset[str]) -> bool:
    """Rules 2-4 of :func:`near_duplicate` on precomputed content tokens."""
    if not tokens_a or not tokens_b or _signature(tokens_a) != _signature(tokens_b):
        return False
    return len(tokens_a & tokens_b) / len(tokens_a | tokens_b) >= NEAR_DUPLICATE_THRESHOLD


class _OverlapIndex:
    """Instructions indexed by normalised text and by content token, to find overlaps without an all-pairs scan."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.tokens = [content_tokens(text) for text in texts]
        self.by_normalised: dict[str, list[int]] = defaultdict(list)
        # Near-duplicates share their signature (numbers and operation words) and at least one content token,
        # so candidates are looked up by (signature, token).
        self.by_token: dict[tuple[frozenset[str], str], list[int]] = defaultdict(list)
        for index, (text, tokens) in enumerate(zip(texts, self.tokens)):
            self.by_normalised[normalise(text)].append(index)
            signature = _signature(tokens)
            for token in tokens:
                self.by_token[signature, token].append(index)

    def matches(self, text: str) -> list[tuple[int, str]]:
        """``(index, "exact" | "near")`` for every indexed text overlapping ``text``, sorted by index."""
        exact = set(self.by_normalised.get(normalise(text), ()))
        tokens = content_tokens(text)
        signature = _signature(tokens)
        candidates: set[int] = set()
        for token in tokens:
            candidates.update(self.by_token.get((signature, token), ()))
        near = {index for index in candidates - exact if _similar_content(self.tokens[index], tokens)}
        return sorted([(index, "exact") for index in exact] + [(index, "near") for index in near])


def find_overlaps(train: Sequence[str], held_out: Sequence[str]) -> list[tuple[int, int, str]]:
    """Every ``(train_idx, heldout_idx, "exact" | "near")`` pair of overlapping instructions, sorted.

    "exact" means equal after :func:`normalise`; "near" means :func:`near_duplicate` but not exact. Train
    instructions are indexed by content token, so only pairs sharing a token are compared.

    >>> find_overlaps(["What is 7 plus 5?", "List three fruits."], ["what is 7 plus 5", "Add 5 and 7."])
    [(0, 0, 'exact'), (0, 1, 'near')]
    """
    index = _OverlapIndex(train)
    overlaps = [
        (train_idx, heldout_idx, kind)
        for heldout_idx, text in enumerate(held_out)
        for train_idx, kind in index.matches(text)
    ]
    return sorted(overlaps)


# --------------------------------------------------------------------------------------------------------
# Response helpers shared by the verifiers
# --------------------------------------------------------------------------------------------------------


def _tokens(text: str) -> list[str]:
    return normalise(text).split()


def _word_count(text: str) -> int:
    """Whitespace-separated tokens that contain a letter or digit (a lone dash is not a word).

    >>> _word_count("Rain falls - on the roof.")
    5
    """
    return sum(1 for token in text.split() if any(ch.isalnum() for ch in token))


def _response_numbers(text: str) -> list[int]:
    """Numbers in a response, in order: digit runs and number words.

    >>> _response_numbers("The answer is 12, not thirteen.")
    [12, 13]
    """
    numbers = []
    for token in _tokens(text):
        if token.isdigit():
            numbers.append(int(token))
        elif token in _NUMBER_WORDS:
            numbers.append(_NUMBER_WORDS[token])
    return numbers


def _singular(token: str) -> str:
    """A rough singular form, applied to both sides of a comparison so that "cats" matches "cat".

    >>> [_singular(t) for t in ["cats", "cherries", "boxes", "glass", "bus", "stars"]]
    ['cat', 'cherry', 'box', 'glass', 'bus', 'star']
    """
    if len(token) > 4 and token.endswith("ies"):
        return token[:-3] + "y"
    if len(token) > 4 and token.endswith(("ches", "shes", "sses", "xes", "zes")):
        return token[:-2]
    if len(token) > 3 and token.endswith("s") and not token.endswith(("ss", "us", "is")):
        return token[:-1]
    return token


def _mentions(text: str, words: Iterable[str]) -> bool:
    """Whether ``text`` contains any of ``words`` (case-insensitive, singular and plural alike)."""
    wanted = {_singular(word) for word in words}
    return any(_singular(token) in wanted for token in _tokens(text))


#: Finite verbs and auxiliaries a complete sentence can be built on: copulas, auxiliaries and modals, the verbs of
#: the world's sentence templates and topics, and common English verbs in base, third-person and past forms
#: (the same check serves real models' answers on a GPU, so the list is not limited to the embedded world).
_VERB_STEMS = """
    be am is are was were been being have has had do does did can could will would shall should may might must
    love like think say know see paint draw hold open help light shine rise warm set crash move learn make go come
    take give get find tell feel look want need use work call try ask seem leave keep let begin show hear play run
    live believe bring happen write sit stand lose pay meet include continue change lead understand watch follow
    stop create speak read spend grow walk win offer remember consider appear buy wait serve die send expect build
    stay fall cut reach kill remain suggest raise pass sell require report decide pull carry swim fly sing eat
    drink sleep fill flow glow sparkle cover protect bloom climb roll fall enjoy visit enjoy teach sound smell taste
    mean turn start hope wish dream shout cry smile laugh dance jump wave forget miss own hate prefer adore admire
    notice wonder imagine cook bake feed hide fit float sink burn freeze melt shake bark purr chase hunt bite
    dig nest hatch feel tend produce contain form cause allow add provide produce
"""
_IRREGULAR_VERB_FORMS = """
    saw seen drew drawn said knew known thought made went gone came took taken gave given got found told felt left
    kept let began begun showed shown heard ran brought wrote written sat stood lost paid met led understood spent
    grew grown won bought sent built fell fallen cut rose risen swam flew flown sang sung ate eaten drank drunk slept
    held meant taught forgot forgotten hid fed froze frozen shook bit dug
    dont doesnt didnt cant couldnt wont wouldnt shouldnt isnt arent wasnt werent hasnt havent hadnt im ive youre
    weve theyre
"""


def _verb_forms(stem: str) -> set[str]:
    """A verb stem with its third-person, past and -ing forms (regular rules; irregulars are listed apart).

    >>> sorted(_verb_forms("carry"))
    ['carried', 'carries', 'carry', 'carrying']
    """
    if stem.endswith("e"):
        return {stem, stem + "s", stem + "d", stem[:-1] + "ing"}
    if stem.endswith("y") and stem[-2:-1] not in ("a", "e", "o", "u"):
        return {stem, stem[:-1] + "ies", stem[:-1] + "ied", stem + "ing"}
    if stem.endswith(("s", "sh", "ch", "x", "z", "o")):
        return {stem, stem + "es", stem + "ed", stem + "ing"}
    return {stem, stem + "s", stem + "ed", stem + "ing"}


@functools.lru_cache(maxsize=1)
def verbs() -> frozenset[str]:
    """Every verb form :func:`is_complete_sentence` accepts: the lists above plus each topic's verbs."""
    stems = set(_VERB_STEMS.split()) | {predicate.split()[0] for topic in TOPICS.values() for predicate in topic.verbs}
    return frozenset({form for stem in stems for form in _verb_forms(stem)} | set(_IRREGULAR_VERB_FORMS.split()))
#: Words a complete sentence cannot end on: a copula or auxiliary still waiting for its complement ("The moon
#: is."), an article, a preposition, a conjunction, a possessive, an intensifier.
_DANGLING = frozenset("""
    a an the is are was were am be been being has have had do does did can could will would shall should may might
    must of in on at to for from by with into about and or but because that which who whose than very so my your
    our their its his her
""".split())


def is_complete_sentence(text: str) -> bool:
    """Whether ``text`` opens with a complete sentence: three words or more, a finite verb (:func:`verbs`), and
    not cut off on a word that needs a continuation (:data:`_DANGLING`). A documented heuristic, not a parser:
    it separates sentences from lists of words and from fragments (verbs: :func:`verbs`).

    >>> [is_complete_sentence(t) for t in ["The moon is bright.", "Birds fly over the sea.", "I love the sun."]]
    [True, True, True]
    >>> [is_complete_sentence(t) for t in ["Moon apple tiger river.", "The moon is.", "bright moon", ""]]
    [False, False, False, False]
    """
    first = re.split(r"(?<=[.!?])\s", text.strip(), maxsplit=1)[0]
    words = _tokens(first)
    if _word_count(first) < 3 or not any(ch.isalpha() for ch in first):
        return False
    if not any(word in verbs() for word in words):
        return False
    return words[-1] not in _DANGLING


def _article(noun: str) -> str:
    """``"an apple"``, ``"a horse"``.

    >>> _article("elephant"), _article("mouse")
    ('an elephant', 'a mouse')
    """
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _plural(noun: str) -> str:
    """English plural of the world's nouns (irregulars listed).

    >>> [_plural(n) for n in ["cat", "mouse", "cherry", "peach", "knife", "sheep"]]
    ['cats', 'mice', 'cherries', 'peaches', 'knives', 'sheep']
    """
    if noun in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[noun]
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


_IRREGULAR_PLURALS = {
    "mouse": "mice", "sheep": "sheep", "deer": "deer", "fish": "fish", "goose": "geese", "foot": "feet",
    "knife": "knives", "shelf": "shelves", "wolf": "wolves", "leaf": "leaves", "scarf": "scarves",
    "potato": "potatoes", "tomato": "tomatoes", "mango": "mangoes",
}


def _capitalise(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


def _join_list(items: Sequence[str]) -> str:
    """``"a, b and c"``.

    >>> _join_list(["cat", "dog", "horse"])
    'cat, dog and horse'
    """
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _param(params: Mapping[str, Any], name: str, family: str) -> Any:
    if name not in params:
        raise ValueError(f"{family} params lack the field {name!r}; got fields {sorted(params)}")
    return params[name]


# --------------------------------------------------------------------------------------------------------
# Items and the family interface
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One instruction of the world with its verifier parameters.

    ``params`` is JSON-serialisable and always holds ``"key"``, the semantic key of the task.

    >>> item = Item("x-1", "capitals", "What is the capital of Peru?", "Lima", {"key": "capitals:peru"})
    >>> Item.from_record(item.to_record()) == item
    True
    """

    id: str
    family: str
    instruction: str
    reference: str | None
    params: dict[str, Any]

    @property
    def key(self) -> str:
        return str(self.params["key"])

    def to_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "family": self.family,
            "instruction": self.instruction,
            "reference": self.reference,
            "params": copy.deepcopy(self.params),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Item:
        """Build an item from :meth:`to_record` output; ``ValueError`` names the missing or mistyped field."""
        if not isinstance(record, Mapping):
            raise ValueError(f"an item record must be a JSON object, got {type(record).__name__}")
        expected: dict[str, tuple[type, ...]] = {
            "id": (str,), "family": (str,), "instruction": (str,), "reference": (str, type(None)), "params": (dict,),
        }
        missing = [name for name in expected if name not in record]
        if missing:
            raise ValueError(f"item record lacks field(s) {missing}; it has {sorted(record)}")
        for name, types in expected.items():
            if not isinstance(record[name], types):
                wanted = " or ".join("null" if t is type(None) else t.__name__ for t in types)
                raise ValueError(f"item record field {name!r} must be {wanted}, got {type(record[name]).__name__}")
        if "key" not in record["params"]:
            raise ValueError(f"item record {record['id']!r}: params lack the field 'key'")
        return cls(
            id=record["id"],
            family=record["family"],
            instruction=record["instruction"],
            reference=record["reference"],
            params=copy.deepcopy(dict(record["params"])),
        )


class Family(abc.ABC):
    """A task family: its keys, instruction sampling, verifier and the facts it contributes to the corpus."""

    name: str
    #: (min_words, max_words) of an appropriate response.
    length_bounds: tuple[int, int]

    @abc.abstractmethod
    def _all_keys(self) -> Iterable[str]:
        """Every semantic key, in any order (:meth:`keys` sorts and caches)."""

    @abc.abstractmethod
    def make_item(self, key: str, rng: random.Random, item_id: str) -> Item:
        """An item for ``key`` with a phrasing (and, where there is a choice, a reference) drawn from ``rng``."""

    @abc.abstractmethod
    def verify(self, params: Mapping[str, Any], response: str) -> bool | None:
        """Whether ``response`` correctly does the task; ``None`` where correctness does not apply."""

    @abc.abstractmethod
    def addresses(self, params: Mapping[str, Any], response: str) -> bool:
        """Whether ``response`` contains the kind of thing asked for, right or wrong."""

    @abc.abstractmethod
    def topic_words(self, params: Mapping[str, Any]) -> set[str]:
        """Lowercase words whose presence makes a response on topic."""

    @abc.abstractmethod
    def wrong_answer(self, params: Mapping[str, Any], rng: random.Random) -> str:
        """A fluent answer that :meth:`verify` rejects (for open-ended: a sentence about another topic)."""

    @abc.abstractmethod
    def facts(self, key: str, rng: random.Random) -> list[str]:
        """Declarative sentences stating what the task ``key`` is about, for the pretraining corpus."""

    def keys(self) -> list[str]:
        """Every semantic key of the family, sorted."""
        return list(self._key_tuple)

    @functools.cached_property
    def _key_tuple(self) -> tuple[str, ...]:
        return tuple(sorted(self._all_keys()))

    @functools.cached_property
    def _key_set(self) -> frozenset[str]:
        return frozenset(self._key_tuple)

    def _fields(self, key: str) -> list[str]:
        """The fields of a known key after the family prefix; ``ValueError`` for a key not in :meth:`keys`."""
        if key not in self._key_set:
            raise ValueError(
                f"unknown {self.name} key {key!r}; keys look like {self._key_tuple[0]!r} (see Family.keys())"
            )
        return key.split(":")[1:]

    def _item(self, item_id: str, instruction: str, reference: str | None, params: dict[str, Any]) -> Item:
        return Item(id=item_id, family=self.name, instruction=instruction, reference=reference, params=params)

    def __repr__(self) -> str:
        return f"<Family {self.name}: {len(self._key_tuple)} keys>"


# --------------------------------------------------------------------------------------------------------
# 1. arithmetic
# --------------------------------------------------------------------------------------------------------

# Operand ranges (inclusive). Results stay small (<= 100) so a tiny model can memorise the tables.
_ARITH_RANGES = {"add": (0, 12), "sub": (0, 12), "mul": (1, 10)}
_ARITH_WORD = {"add": "plus", "sub": "minus", "mul": "times"}
_ARITH_TEMPLATES = {
    "add": ("What is {a} plus {b}?", "Add {a} and {b}.", "What is the sum of {a} and {b}?", "Calculate {a} plus {b}."),
    "sub": (
        "What is {a} minus {b}?", "Subtract {b} from {a}.", "What is {a} take away {b}?", "Calculate {a} minus {b}.",
    ),
    "mul": (
        "What is {a} times {b}?", "Multiply {a} by {b}.", "What is the product of {a} and {b}?",
        "What is {a} multiplied by {b}?",
    ),
}
_ARITH_FACTS = {
    "add": ("{a} plus {b} is {c}.", "{a} plus {b} equals {c}.", "The sum of {a} and {b} is {c}."),
    "sub": ("{a} minus {b} is {c}.", "{a} minus {b} equals {c}.", "If you take {b} away from {a} you get {c}."),
    "mul": ("{a} times {b} is {c}.", "{a} times {b} equals {c}.", "The product of {a} and {b} is {c}."),
}


def _arith(op: str, a: int, b: int) -> int:
    return a + b if op == "add" else a - b if op == "sub" else a * b


class ArithmeticFamily(Family):
    """Add, subtract (non-negative results) and multiply small numbers. Commutative keys are sorted.

    Correct when the answer is the last number in the response and no number other than the operands and
    the answer appears ("7 plus 5 is 12." passes, "12 or 13" fails).
    """

    name = "arithmetic"
    length_bounds = (1, 15)

    def _all_keys(self) -> Iterable[str]:
        for op, (low, high) in _ARITH_RANGES.items():
            for a in range(low, high + 1):
                for b in range(low, high + 1):
                    if (op == "sub" and a >= b) or (op != "sub" and a <= b):
                        yield f"arithmetic:{op}:{a}:{b}"

    def make_item(self, key: str, rng: random.Random, item_id: str) -> Item:
        op, first, second = self._fields(key)
        a, b = int(first), int(second)
        if op != "sub" and rng.random() < 0.5:
            a, b = b, a
        instruction = rng.choice(_ARITH_TEMPLATES[op]).format(a=a, b=b)
        answer = _arith(op, a, b)
        params = {"key": key, "op": op, "a": a, "b": b, "answer": answer}
        return self._item(item_id, instruction, str(answer), params)

    def verify(self, params: Mapping[str, Any], response: str) -> bool:
        answer = _param(params, "answer", self.name)
        allowed = {_param(params, "a", self.name), _param(params, "b", self.name), answer}
        numbers = _response_numbers(response)
        return bool(numbers) and numbers[-1] == answer and set(numbers) <= allowed

    def addresses(self, params: Mapping[str, Any], response: str) -> bool:
        """A number is given as the answer, not only the operands echoed back ("5 plus 7" names no result).

        >>> family, params = ArithmeticFamily(), {"a": 5, "b": 7, "answer": 12, "op": "add"}
        >>> [family.addresses(params, r) for r in ["12", "5 plus 7 is 13", "5 plus 7", "seven", "no idea"]]
        [True, True, False, True, False]
        """
        numbers = _response_numbers(response)
        operands = Counter([_param(params, "a", self.name), _param(params, "b", self.name)])
        echo = len(numbers) >= 2 and not Counter(numbers) - operands
        return bool(numbers) and not echo

    def topic_words(self, params: Mapping[str, Any]) -> set[str]:
        op = _param(params, "op", self.name)
        numbers = {params["a"], params["b"], params["answer"]}
        return {str(n) for n in numbers} | {_ARITH_WORD[op]}

    def wrong_answer(self, params: Mapping[str, Any], rng: random.Random) -> str:
        answer = _param(params, "answer", self.name)
        wrong = answer + rng.choice([d for d in (-2, -1, 1, 2, 3) if answer + d >= 0])
        a, b, op = params["a"], params["b"], params["op"]
        return rng.choice([str(wrong), f"The answer is {wrong}.", f"{a} {_ARITH_WORD[op]} {b} is {wrong}."])

    def facts(self, key: str, rng: random.Random) -> list[str]:
        op, first, second = self._fields(key)
        a, b = int(first), int(second)
        if op != "sub" and rng.random() < 0.5:
            a, b = b, a
        return [rng.choice(_ARITH_FACTS[op]).format(a=a, b=b, c=_arith(op, a, b))]


# --------------------------------------------------------------------------------------------------------
# 2. capitals
# --------------------------------------------------------------------------------------------------------

# One-word countries and capitals only, so that matching is by whole token.
_CAPITALS: tuple[tuple[str, str], ...] = (
    ("France", "Paris"), ("Spain", "Madrid"), ("Italy", "Rome"), ("Germany", "Berlin"), ("Portugal", "Lisbon"),
    ("Greece", "Athens"), ("Ireland", "Dublin"), ("Norway", "Oslo"), ("Sweden", "Stockholm"),
    ("Finland", "Helsinki"), ("Denmark", "Copenhagen"), ("Poland", "Warsaw"), ("Austria", "Vienna"),
    ("Hungary", "Budapest"), ("Belgium", "Brussels"), ("Netherlands", "Amsterdam"), ("Switzerland", "Bern"),
    ("Russia", "Moscow"), ("Ukraine", "Kyiv"), ("Turkey", "Ankara"), ("Egypt", "Cairo"), ("Kenya", "Nairobi"),
    ("Nigeria", "Abuja"), ("Ghana", "Accra"), ("Morocco", "Rabat"), ("Japan", "Tokyo"), ("China", "Beijing"),
    ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"), ("Indonesia", "Jakarta"), ("Philippines", "Manila"),
    ("Australia", "Canberra"), ("Canada", "Ottawa"), ("Brazil", "Brasilia"), ("Peru", "Lima"),
    ("Chile", "Santiago"), ("Colombia", "Bogota"), ("Venezuela", "Caracas"), ("Cuba", "Havana"),
    ("Iran", "Tehran"), ("Iraq", "Baghdad"), ("Syria", "Damascus"), ("Lebanon", "Beirut"), ("Jordan", "Amman"),
    ("Afghanistan", "Kabul"), ("Pakistan", "Islamabad"), ("Bangladesh", "Dhaka"), ("Nepal", "Kathmandu"),
    ("Romania", "Bucharest"), ("Bulgaria", "Sofia"), ("Serbia", "Belgrade"), ("Croatia", "Zagreb"),
    ("Czechia", "Prague"), ("Iceland", "Reykjavik"), ("Tunisia", "Tunis"), ("Algeria", "Algiers"),
    ("Libya", "Tripoli"), ("Senegal", "Dakar"), ("Qatar", "Doha"), ("Ecuador", "Quito"), ("Uruguay", "Montevideo"),
    ("Jamaica", "Kingston"), ("Georgia", "Tbilisi"), ("England", "London"), ("Scotland", "Edinburgh"),
    ("Wales", "Cardiff"),
)
_CAPITAL_OF = {country.lower(): capital for country, capital in _CAPITALS}
_COUNTRY_NAME = {country.lower(): country for country, _ in _CAPITALS}
_COUNTRY_OF_CAPITAL = {capital.lower(): country for country, capital in _CAPITALS}
_CAPITAL_TOKENS = frozenset(_COUNTRY_OF_CAPITAL)
_COUNTRY_TOKENS = frozenset(_CAPITAL_OF)
_PLACE_TOKENS = _CAPITAL_TOKENS | _COUNTRY_TOKENS
_CAPITAL_TEMPLATES = (
    "What is the capital of {c}?",
    "Name the capital city of {c}.",
    "Which city is the capital of {c}?",
    "Tell me the capital of {c}.",
)
_COUNTRY_TEMPLATES = (
    "Which country has {cap} as its capital?",
    "{cap} is the capital of which country?",
    "Name the country with the capital {cap}.",
    "Of which country is {cap} the capital?",
)
_CAPITAL_FACTS = (
    "{cap} is the capital of {c}.",
    "The capital of {c} is {cap}.",
    "The capital city of {c} is {cap}.",
    "{cap} is the biggest city in {c} that runs the country.",
)
# Capitalised words that are not proper nouns: function words and openers of non-answers ("Sorry.", "No.").
_NON_NAMES = _STOPWORDS | frozenset("yes no sorry maybe unknown none nothing ok okay hello hi thanks".split())


def _has_proper_noun(text: str) -> bool:
    """A capitalised word that is not just the start of a sentence (or a one-word name answer).

    >>> _has_proper_noun("The capital is Lyon."), _has_proper_noun("Lyon"), _has_proper_noun("Sorry, I cannot.")
    (True, True, False)
    """
    words = re.findall(r"[A-Za-z]+|[.!?]", text)
    short_answer = sum(1 for word in words if word not in ".!?") <= 2
    at_start = True
    for word in words:
        if word in ".!?":
            at_start = True
            continue
        name_like = word[0].isupper() and word != "I" and word.lower() not in _NON_NAMES
        if name_like and (not at_start or short_answer):
            return True
        at_start = False
    return False


class CapitalsFamily(Family):
    """Capitals of one-word countries, asked both ways: "What is the capital of France?" (key
    ``capitals:france``, answer Paris) and "Paris is the capital of which country?" (key
    ``capitals:country_of:paris``, answer France). Correct when the right name appears and no other name of
    the same kind (capital, or country) does."""

    name = "capitals"
    length_bounds = (1, 12)

    def _all_keys(self) -> Iterable[str]:
        for country, capital in _CAPITAL_OF.items():
            yield f"capitals:{country}"
            yield f"capitals:country_of:{capital.lower()}"

    def make_item(self, key: str, rng: random.Random, item_id: str) -> Item:
        fields = self._fields(key)
        if len(fields) == 1:
            country = _COUNTRY_NAME[fields[0]]
            capital, asked = _CAPITAL_OF[fields[0]], "capital"
            instruction = rng.choice(_CAPITAL_TEMPLATES).format(c=country)
        else:
            country = _COUNTRY_OF_CAPITAL[fields[1]]
            capital, asked = _CAPITAL_OF[country.lower()], "country"
            instruction = rng.choice(_COUNTRY_TEMPLATES).format(cap=capital)
        reference = capital if asked == "capital" else country
        params = {"key": key, "asked": asked, "country": country, "capital": capital}
        return self._item(item_id, instruction, reference, params)

    def verify(self, params: Mapping[str, Any], response: str) -> bool:
        asked = params.get("asked", "capital")
        right = _param(params, asked, self.name).lower()
        names = _CAPITAL_TOKENS if asked == "capital" else _COUNTRY_TOKENS
        tokens = set(_tokens(response))
        return right in tokens and not (tokens & (names - {right}))

    def addresses(self, params: Mapping[str, Any], response: str) -> bool:
        return bool(set(_tokens(response)) & _PLACE_TOKENS) or _has_proper_noun(response)

    def topic_words(self, params: Mapping[str, Any]) -> set[str]:
        return {_param(params, "country", self.name).lower(), _param(params, "capital", self.name).lower()}

    def wrong_answer(self, params: Mapping[str, Any], rng: random.Random) -> str:
        country, capital = _param(params, "country", self.name), _param(params, "capital", self.name)
        if params.get("asked", "capital") == "country":
            wrong = rng.choice([c for c, _ in _CAPITALS if c != country])
            return rng.choice([wrong, f"{capital} is the capital of {wrong}.", f"It is {wrong}."])
        wrong = rng.choice([cap for _, cap in _CAPITALS if cap != capital])
        return rng.choice([wrong, f"The capital of {country} is {wrong}.", f"It is {wrong}."])

    def facts(self, key: str, rng: random.Random) -> list[str]:
        fields = self._fields(key)
        country = _COUNTRY_NAME[fields[0]] if len(fields) == 1 else _COUNTRY_OF_CAPITAL[fields[1]]
        return [rng.choice(_CAPITAL_FACTS).format(c=country, cap=_CAPITAL_OF[country.lower()])]


# --------------------------------------------------------------------------------------------------------
# 3. word_transform
# --------------------------------------------------------------------------------------------------------

# Common words of 3-7 letters. None is a palindrome (its reverse would equal it) and none uppercases to the
# template's END marker ("end" is deliberately absent).
_TRANSFORM_WORDS: tuple[str, ...] = tuple(
    """
    apple house water green tiger river bread chair table light music happy stone cloud horse paper plant
    smile train beach bird fish book lamp moon star tree door milk rain snow ship road king frog ring cake
    gold leaf wind garden window orange yellow pencil rabbit flower candle summer winter basket rocket sister
    forest castle
    """.split()
)
_TRANSFORM_OPS = ("uppercase", "reverse", "first_letter", "letter_count")
_TRANSFORM_TEMPLATES = {
    "uppercase": (
        "Write the word {w} in capital letters.", "Convert the word {w} to uppercase.",
        "Write {w} in all capital letters.", "Change the word {w} to upper case.",
    ),
    "reverse": (
        "Spell the word {w} backwards.", "Write the word {w} in reverse.", "Reverse the letters of the word {w}.",
        "What is {w} spelled backwards?",
    ),
    "first_letter": (
        "What is the first letter of the word {w}?", "Which letter does the word {w} start with?",
        "Give the first letter of {w}.", "Tell me the first letter of the word {w}.",
    ),
    "letter_count": (
        "How many letters are in the word {w}?", "Count the letters in the word {w}.",
        "How many letters does the word {w} have?", "What is the number of letters in {w}?",
    ),
}
_TRANSFORM_FACTS = {
    "uppercase": ("The word {w} in capital letters is {x}.", "{w} written in capital letters is {x}."),
    "reverse": ("The word {w} spelled backwards is {x}.", "{w} backwards is {x}.", "If you reverse {w} you get {x}."),
    "first_letter": ("The word {w} starts with the letter {x}.", "The first letter of {w} is {x}."),
    "letter_count": ("The word {w} has {x} letters.", "There are {x} letters in the word {w}."),
}


def _transform(op: str, word: str) -> str:
    """The correct answer to a transform.

    >>> [_transform(op, "apple") for op in ("uppercase", "reverse", "first_letter", "letter_count")]
    ['APPLE', 'elppa', 'a', '5']
    """
    if op == "uppercase":
        return word.upper()
    if op == "reverse":
        return word[::-1]
    if op == "first_letter":
        return word[0]
    return str(len(word))


def _letters_named(text: str) -> set[str]:
    """Single letters a response names, ignoring the pronoun "I" and "a" used as an article (followed by
    another word that is not "is"/"was", as in "it is a t").

    >>> sorted(_letters_named("The first letter of apple is a.")), sorted(_letters_named("A is first."))
    (['a'], ['a'])
    >>> sorted(_letters_named("I think it is a t.")), sorted(_letters_named("b or c"))
    (['t'], ['b', 'c'])
    """
    raw = re.findall(r"[A-Za-z]+", text)
    letters = set()
    for index, token in enumerate(raw):
        if len(token) != 1 or token == "I":
            continue
        following = raw[index + 1].lower() if index + 1 < len(raw) else ""
        if token.lower() == "a" and following and following not in ("is", "was"):
            continue
        letters.add(token.lower())
    return letters


class WordTransformFamily(Family):
    """Uppercase, reverse, first letter and letter count of common words.

    uppercase: the all-caps word appears (case-sensitive) and no other all-caps word does; reverse: the reversed
    word appears and no other anagram attempt does; first_letter: the named letters are exactly the answer;
    letter_count: as arithmetic, the count is the only number.
    """

    name = "word_transform"
    length_bounds = (1, 12)

    def _all_keys(self) -> Iterable[str]:
        return (f"word_transform:{op}:{word}" for op in _TRANSFORM_OPS for word in _TRANSFORM_WORDS)

    def make_item(self, key: str, rng: random.Random, item_id: str) -> Item:
        op, word = self._fields(key)
        answer = _transform(op, word)
        instruction = rng.choice(_TRANSFORM_TEMPLATES[op]).format(w=word)
        return self._item(item_id, instruction, answer, {"key": key, "op": op, "word": word, "answer": answer})

    def verify(self, params: Mapping[str, Any], response: str) -> bool:
        op = _param(params, "op", self.name)
        word = _param(params, "word", self.name)
        answer = _transform(op, word)
        if op == "uppercase":
            caps = {token for token in re.findall(r"[A-Za-z]+", response) if len(token) >= 2 and token.isupper()}
            return caps == {answer}
        if op == "reverse":
            tokens = set(_tokens(response))
            attempts = {token for token in tokens if sorted(token) == sorted(word)} - {word}
            return attempts == {answer}
        if op == "first_letter":
            return _letters_named(response) == {answer}
        numbers = _response_numbers(response)
        return bool(numbers) and set(numbers) == {int(answer)}

    def addresses(self, params: Mapping[str, Any], response: str) -> bool:
        op = _param(params, "op", self.name)
        word = _param(params, "word", self.name)
        if op == "uppercase":
            return any(len(token) >= 2 and token.isupper() for token in re.findall(r"[A-Za-z]+", response))
        if op == "reverse":
            # A spelling attempt: a token other than the word, of similar length, made mostly of its letters.
            def attempt(token: str) -> bool:
                if token == word or abs(len(token) - len(word)) > 2:
                    return False
                pool = list(word)
                shared = 0
                for ch in token:
                    if ch in pool:
                        pool.remove(ch)
                        shared += 1
                return shared >= 0.6 * len(word)

            return any(attempt(token) for token in _tokens(response))
        if op == "first_letter":
            return bool(_letters_named(response))
        return bool(_response_numbers(response))

    def topic_words(self, params: Mapping[str, Any]) -> set[str]:
        word = _param(params, "word", self.name)
        return {word, _transform(_param(params, "op", self.name), word).lower()}

    def wrong_answer(self, params: Mapping[str, Any], rng: random.Random) -> str:
        op = _param(params, "op", self.name)
        word = _param(params, "word", self.name)
        if op == "uppercase":
            other = rng.choice([w for w in _TRANSFORM_WORDS if w != word])
            return rng.choice([word, _capitalise(word), other.upper()])
        if op == "reverse":
            letters = list(word[::-1])
            i = rng.randrange(len(letters) - 1)
            while letters[i] == letters[i + 1]:  # a swap of equal letters would change nothing
                i = (i + 1) % (len(letters) - 1)
            letters[i], letters[i + 1] = letters[i + 1], letters[i]
            return rng.choice(["".join(letters), word])
        if op == "first_letter":
            wrong = rng.choice([ch for ch in "bcdefghjklmnoprstuvwy" if ch != word[0]])
            return rng.choice([wrong, f"The first letter is {wrong}."])
        wrong = len(word) + rng.choice([-1, 1, 2])
        return rng.choice([str(wrong), f"The word {word} has {wrong} letters."])

    def facts(self, key: str, rng: random.Random) -> list[str]:
        op, word = self._fields(key)
        return [_capitalise(rng.choice(_TRANSFORM_FACTS[op]).format(w=word, x=_transform(op, word)))]


# --------------------------------------------------------------------------------------------------------
# 4. list_category
# --------------------------------------------------------------------------------------------------------

_CATEGORIES: dict[str, tuple[str, ...]] = {
    "animals": ("cat", "dog", "horse", "cow", "pig", "sheep", "goat", "lion", "tiger", "bear", "wolf", "fox",
                "rabbit", "mouse", "deer", "monkey", "elephant"),
    "colors": ("red", "blue", "green", "yellow", "orange", "purple", "pink", "brown", "black", "white", "gray"),
    "fruits": ("apple", "banana", "orange", "pear", "grape", "lemon", "cherry", "peach", "plum", "mango", "melon",
               "strawberry"),
    "vegetables": ("carrot", "potato", "onion", "pea", "bean", "cabbage", "lettuce", "tomato", "pepper",
                   "cucumber", "corn", "spinach"),
    "tools": ("hammer", "saw", "drill", "wrench", "shovel", "axe", "knife", "ruler", "ladder", "rake"),
    "body parts": ("arm", "leg", "hand", "foot", "head", "nose", "ear", "eye", "mouth", "knee", "finger", "neck"),
    "birds": ("eagle", "owl", "robin", "crow", "duck", "swan", "parrot", "pigeon", "sparrow", "penguin", "goose",
              "hawk"),
    "insects": ("ant", "bee", "fly", "moth", "beetle", "wasp", "butterfly", "ladybug", "grasshopper", "mosquito"),
    "vehicles": ("car", "bus", "train", "truck", "bicycle", "boat", "ship", "plane", "van", "tractor", "taxi"),
    "drinks": ("water", "milk", "tea", "coffee", "juice", "soda", "lemonade", "cocoa"),
    "clothes": ("shirt", "dress", "coat", "hat", "sock", "shoe", "skirt", "jacket", "scarf", "glove", "sweater"),
    "pieces of furniture": ("chair", "table", "bed", "sofa", "desk", "shelf", "stool", "bench", "cabinet", "wardrobe"),
    "musical instruments": ("piano", "guitar", "violin", "drum", "flute", "trumpet", "harp", "cello"),
    "sports": ("soccer", "tennis", "golf", "hockey", "baseball", "basketball", "swimming", "boxing", "rugby",
               "volleyball"),
    "shapes": ("circle", "square", "triangle", "rectangle", "oval", "star", "diamond", "hexagon", "pentagon"),
    "months": ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
               "november", "december"),
    "flowers": ("rose", "tulip", "daisy", "lily", "sunflower", "orchid", "daffodil", "violet"),
    "trees": ("oak", "pine", "maple", "birch", "willow", "elm", "cedar", "palm"),
    "jobs": ("teacher", "farmer", "baker", "driver", "cook", "artist", "doctor", "nurse", "pilot"),
    "desserts": ("cake", "pie", "candy", "chocolate", "cookie", "pudding", "muffin", "tart"),
    "metals": ("gold", "silver", "iron", "copper", "tin", "lead", "zinc", "nickel"),
}
_LIST_COUNTS = (2, 3, 4, 5)
_LIST_TEMPLATES = ("List {n} {c}.", "Name {n} {c}.", "Give me {n} {c}.", "Write a list of {n} {c}.")
_LIST_FACTS = ("Examples of {c} are {items}.", "{Items} are all {c}.", "Here are some {c}: {commas}.")
# Words a list answer may carry besides its members ("Three animals are cat, dog and horse.").
_LIST_FILLER = _STOPWORDS | frozenset(_NUMBER_WORDS) | frozenset(
    "and or are is some here examples example include such as like also few three".split()
)


def _category_key(category: str) -> str:
    return category.replace(" ", "_")


_CATEGORY_BY_KEY = {_category_key(category): category for category in _CATEGORIES}


def _member_forms(category: str) -> dict[str, str]:
    """Every accepted spelling (singular and plural) of a category's members -> the member."""
    forms = {}
    for member in _CATEGORIES[category]:
        forms[member] = member
        forms[_plural(member)] = member
    return forms


class ListCategoryFamily(Family):
    """"List three animals." Correct when exactly N distinct category members appear and nothing else does
    (separators, articles, number words and the category name are allowed)."""

    name = "list_category"
    length_bounds = (2, 25)

    def _all_keys(self) -> Iterable[str]:
        return (f"list_category:{_category_key(c)}:{n}" for c in _CATEGORIES for n in _LIST_COUNTS)

    def make_item(self, key: str, rng: random.Random, item_id: str) -> Item:
        category_key, count = self._fields(key)
        category, n = _CATEGORY_BY_KEY[category_key], int(count)
        members = _CATEGORIES[category]
        instruction = rng.choice(_LIST_TEMPLATES).format(n=_WORD_FOR_NUMBER[n], c=category)
        reference = ", ".join(rng.sample(members, n))
        params = {"key": key, "category": category, "n": n, "members": sorted(members)}
        return self._item(item_id, instruction, reference, params)

    def _members_named(self, params: Mapping[str, Any], response: str) -> list[str] | None:
        """Members named in order, or ``None`` if a word is neither a member nor filler."""
        category = _param(params, "category", self.name)
        forms = {}
        for member in _param(params, "members", self.name):
            forms[member] = member
            forms[_plural(member)] = member
        filler = _LIST_FILLER | set(category.split()) | {_singular(word) for word in category.split()}
        named = []
        for token in _tokens(response):
            if token in forms:
                named.append(forms[token])
            elif token not in filler and not token.isdigit():
                return None
        return named

    def verify(self, params: Mapping[str, Any], response: str) -> bool:
        named = self._members_named(params, response)
        n = _param(params, "n", self.name)
        return named is not None and len(named) == n and len(set(named)) == n

    def addresses(self, params: Mapping[str, Any], response: str) -> bool:
        parts = re.split(r",|;|\n|\band\b|\bor\b", response)
        return sum(1 for part in parts if re.search(r"[A-Za-z0-9]", part)) >= 2

    def topic_words(self, params: Mapping[str, Any]) -> set[str]:
        category = _param(params, "category", self.name)
        members = _param(params, "members", self.name)
        return set(category.split()) | set(members) | {_plural(m) for m in members}

    def wrong_answer(self, params: Mapping[str, Any], rng: random.Random) -> str:
        category, n = params["category"], params["n"]
        members = list(_param(params, "members", self.name))
        forms = _member_forms(category) if category in _CATEGORIES else {m: m for m in members}
        if rng.random() < 0.5:
            wrong_n = n + 1 if n < len(members) and (n == 2 or rng.random() < 0.5) else n - 1
            return ", ".join(rng.sample(members, wrong_n))
        outsiders = sorted(
            {m for members_ in _CATEGORIES.values() for m in members_ if m not in forms and _plural(m) not in forms}
        )
        items = rng.sample(members, n - 1) + [rng.choice(outsiders)]
        rng.shuffle(items)
        return ", ".join(items)

    def facts(self, key: str, rng: random.Random) -> list[str]:
        category_key, count = self._fields(key)
        category = _CATEGORY_BY_KEY[category_key]
        items = rng.sample(_CATEGORIES[category], int(count) + 1)
        template = rng.choice(_LIST_FACTS)
        joined = _join_list(items)
        return [template.format(c=category, items=joined, Items=_capitalise(joined), commas=", ".join(items))]


# --------------------------------------------------------------------------------------------------------
# 5. comparison
# --------------------------------------------------------------------------------------------------------

_COMPARE_NUMBERS = range(1, 21)
# Rough weights in kilograms; only pairs at least _WEIGHT_RATIO apart are asked, so answers are unambiguous.
_WEIGHTS: dict[str, float] = {
    "ant": 5e-6, "feather": 1e-3, "pencil": 1e-2, "apple": 0.2, "rabbit": 2.0, "cat": 4.0, "bicycle": 12.0,
    "dog": 25.0, "horse": 500.0, "piano": 300.0, "car": 1500.0, "elephant": 5000.0, "whale": 100000.0,
    "mouse": 0.02, "chair": 7.0,
}
_WEIGHT_RATIO = 4.0
_COMPARE_TEMPLATES = {
    "larger": ("Which is larger, {x} or {y}?", "Which number is bigger, {x} or {y}?", "Which is greater: {x} or {y}?",
               "Of {x} and {y}, which is larger?"),
    "smaller": ("Which is smaller, {x} or {y}?", "Which number is less, {x} or {y}?", "Which is lower: {x} or {y}?",
                "Of {x} and {y}, which is smaller?"),
    "heavier": ("Which is heavier, {x} or {y}?", "Which weighs more, {x} or {y}?", "What is heavier: {x} or {y}?"),
    "lighter": ("Which is lighter, {x} or {y}?", "Which weighs less, {x} or {y}?", "What is lighter: {x} or {y}?"),
}
_COMPARE_FACTS = {
    "larger": ("{big} is larger than {small}.", "{big} is bigger than {small}.", "{big} is greater than {small}."),
    "smaller": ("{small} is smaller than {big}.", "{small} is less than {big}."),
    "heavier": ("{Big} is heavier than {small}.", "{Big} weighs more than {small}."),
    "lighter": ("{Small} is lighter than {big}.", "{Small} weighs less than {big}."),
}


def _entity_forms(entity: str) -> set[str]:
    return {entity, _plural(entity)}


class ComparisonFamily(Family):
    """Larger/smaller of two numbers, heavier/lighter of two things. Correct when the right option appears and
    the other does not ("12 is larger than 7" names both and fails: the verifier cannot tell which is meant)."""

    name = "comparison"
    length_bounds = (1, 12)

    def _all_keys(self) -> Iterable[str]:
        for relation in ("larger", "smaller"):
            for x, y in itertools.combinations(_COMPARE_NUMBERS, 2):
                yield f"comparison:{relation}:{x}:{y}"
        for relation in ("heavier", "lighter"):
            for x, y in itertools.combinations(sorted(_WEIGHTS), 2):
                heavy, light = max(_WEIGHTS[x], _WEIGHTS[y]), min(_WEIGHTS[x], _WEIGHTS[y])
                if heavy / light >= _WEIGHT_RATIO:
                    yield f"comparison:{relation}:{x}:{y}"

    def make_item(self, key: str, rng: random.Random, item_id: str) -> Item:
        relation, first, second = self._fields(key)
        options: list[Any]
        if relation in ("larger", "smaller"):
            options = [int(first), int(second)]
            pick_max = relation == "larger"
            answer = max(options) if pick_max else min(options)
            shown = [str(option) for option in options]
        else:
            options = [first, second]
            pick_max = relation == "heavier"
            answer = (max if pick_max else min)(options, key=_WEIGHTS.__getitem__)
            shown = [_article(option) for option in options]
        order = [0, 1] if rng.random() < 0.5 else [1, 0]
        options = [options[i] for i in order]
        shown = [shown[i] for i in order]
        other = options[1] if options[0] == answer else options[0]
        instruction = rng.choice(_COMPARE_TEMPLATES[relation]).format(x=shown[0], y=shown[1])
        reference = str(answer) if isinstance(answer, int) else _capitalise(_article(answer)) + "."
        params = {"key": key, "relation": relation, "options": options, "answer": answer, "other": other}
        return self._item(item_id, instruction, reference, params)

    @staticmethod
    def _named(params: Mapping[str, Any], response: str) -> set[Any]:
        """Which of the two options the response names."""
        answer, other = params["answer"], params["other"]
        if isinstance(answer, int):
            return set(_response_numbers(response)) & {answer, other}
        tokens = set(_tokens(response))
        return {option for option in (answer, other) if tokens & _entity_forms(option)}

    def verify(self, params: Mapping[str, Any], response: str) -> bool:
        _param(params, "answer", self.name)
        _param(params, "other", self.name)
        return self._named(params, response) == {params["answer"]}

    def addresses(self, params: Mapping[str, Any], response: str) -> bool:
        return bool(self._named(params, response))

    def topic_words(self, params: Mapping[str, Any]) -> set[str]:
        words = set()
        for option in _param(params, "options", self.name):
            words |= {str(option)} if isinstance(option, int) else _entity_forms(option)
        return words

    def wrong_answer(self, params: Mapping[str, Any], rng: random.Random) -> str:
        other = _param(params, "other", self.name)
        if isinstance(other, int):
            return rng.choice([str(other), f"{other} is {params['relation']}."])
        return rng.choice([_capitalise(_article(other)) + ".", f"The {other} is {params['relation']}."])

    def facts(self, key: str, rng: random.Random) -> list[str]:
        relation, first, second = self._fields(key)
        if relation in ("larger", "smaller"):
            big, small = sorted((int(first), int(second)), reverse=True)
            return [rng.choice(_COMPARE_FACTS[relation]).format(big=big, small=small)]
        big, small = sorted((first, second), key=_WEIGHTS.__getitem__, reverse=True)
        big_np, small_np = _article(big), _article(small)
        template = rng.choice(_COMPARE_FACTS[relation])
        return [template.format(big=big_np, small=small_np, Big=_capitalise(big_np), Small=_capitalise(small_np))]


# --------------------------------------------------------------------------------------------------------
# Topics and the sentence generator (constraint, open_ended and the corpus)
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Topic:
    """A subject to write about: how to say it, what to say about it, and which words mark a text as on topic."""

    name: str  # key token, e.g. "moon"
    subject: str  # noun phrase used in sentences and instructions, e.g. "the moon"
    plural: bool
    adjectives: tuple[str, ...]
    verbs: tuple[str, ...]  # base-form predicates, e.g. "shine at night"
    words: frozenset[str]  # on-topic words: the subject noun and associated nouns


def _topic(name: str, subject: str, plural: bool, adjectives: str, verbs: str, words: str) -> Topic:
    noun = subject.split()[-1]
    return Topic(
        name=name,
        subject=subject,
        plural=plural,
        adjectives=tuple(adjectives.split()),
        verbs=tuple(verbs.split("|")),
        words=frozenset(words.split()) | {name, noun},
    )


_TOPIC_LIST: tuple[Topic, ...] = (
    _topic("moon", "the moon", False, "bright round pale",
           "shine at night|rise over the hills|light the dark sky", "night sky stars"),
    _topic("sun", "the sun", False, "hot bright yellow",
           "rise in the morning|warm the land|set in the evening", "sky light day sunshine"),
    _topic("sea", "the sea", False, "blue deep wide",
           "crash on the rocks|move with the wind|shine in the sun", "water waves beach ocean"),
    _topic("rain", "rain", False, "cold soft gray",
           "fall on the roof|fill the river|help the plants grow", "water clouds umbrella storm"),
    _topic("snow", "snow", False, "white cold soft",
           "fall in winter|cover the ground|melt in the sun", "winter ice snowman"),
    _topic("cats", "cats", True, "soft quiet clever", "sleep in the sun|chase mice|drink milk", "cat kitten fur mice"),
    _topic("dogs", "dogs", True, "loyal friendly happy",
           "run in the park|wag their tails|play with a ball", "dog puppy tail bark"),
    _topic("birds", "birds", True, "small free bright",
           "sing in the morning|fly over the trees|build nests", "bird nest wings feathers"),
    _topic("trees", "trees", True, "tall green old",
           "grow in the forest|give us shade|lose their leaves in autumn", "tree leaves forest branches"),
    _topic("flowers", "flowers", True, "pretty colorful sweet",
           "grow in the garden|open in the spring|smell sweet", "flower garden petals bees"),
    _topic("forest", "the forest", False, "dark quiet green",
           "hide many animals|grow thick with trees|fill with bird songs", "trees wood path"),
    _topic("mountains", "mountains", True, "tall cold rocky",
           "rise above the clouds|have snow on top|stand for many years", "mountain rocks hills peak"),
    _topic("rivers", "rivers", True, "long fast cool",
           "flow to the sea|carry water|run through the valley", "river water bridge valley"),
    _topic("beach", "the beach", False, "sunny warm sandy",
           "have soft sand|meet the sea|fill with people in summer", "sand sea waves shells"),
    _topic("winter", "winter", False, "cold dark long",
           "bring snow|make the days short|keep us inside", "snow ice coat"),
    _topic("summer", "summer", False, "hot sunny long",
           "bring warm days|make the fruit ripe|give us long evenings", "sun holiday beach"),
    _topic("spring", "spring", False, "fresh green warm",
           "bring new flowers|wake the trees|fill the fields with grass", "flowers grass birds"),
    _topic("autumn", "autumn", False, "cool golden windy",
           "turn the leaves red|bring the harvest|come after summer", "leaves harvest"),
    _topic("wind", "the wind", False, "strong cool wild",
           "blow through the trees|move the clouds|push the boats", "air storm breeze"),
    _topic("clouds", "clouds", True, "white soft gray",
           "float across the sky|bring rain|hide the sun", "cloud sky rain"),
    _topic("stars", "stars", True, "bright small far",
           "shine at night|fill the dark sky|shine over the sea", "star night sky space"),
    _topic("night", "the night", False, "dark quiet cool",
           "come after the evening|bring sleep|hide the hills", "moon stars sleep"),
    _topic("morning", "the morning", False, "fresh bright calm",
           "start the day|wake the birds|bring the light", "breakfast sunrise day"),
    _topic("bread", "bread", False, "warm soft fresh",
           "come from the oven|taste good with butter|feed many people", "oven butter baker flour"),
    _topic("coffee", "coffee", False, "hot dark strong",
           "wake people up|smell good in the morning|come from beans", "cup beans"),
    _topic("tea", "tea", False, "hot calm sweet", "warm the hands|come from leaves|taste good with milk", "cup kettle"),
    _topic("music", "music", False, "loud sweet happy",
           "fill the room|make people dance|help us relax", "song songs piano guitar"),
    _topic("books", "books", True, "old thick useful",
           "tell stories|teach us many things|sit on the shelf", "book stories pages reading library"),
    _topic("town", "the town", False, "busy loud big",
           "stay awake all night|have tall buildings|fill with cars", "streets buildings traffic"),
    _topic("farm", "the farm", False, "quiet green busy",
           "grow food|keep cows and pigs|wake early", "farmer cows fields barn"),
    _topic("horses", "horses", True, "strong fast gentle",
           "run across the field|eat hay|pull carts", "horse hay rider saddle"),
    _topic("fish", "fish", True, "quick shiny small",
           "swim in the river|live in the water|hide under rocks", "water fins pond"),
    _topic("garden", "the garden", False, "green quiet pretty",
           "grow flowers|need water|need sun and rain", "flowers plants soil"),
    _topic("school", "school", False, "busy big fun",
           "teach children|start in the morning|have many classes", "teacher students lessons classroom"),
    _topic("friends", "friends", True, "kind funny loyal",
           "help each other|share stories|laugh together", "friend friendship"),
    _topic("family", "family", False, "warm close big",
           "share meals|care for each other|meet on holidays", "parents children home"),
    _topic("kitchen", "the kitchen", False, "warm busy clean",
           "smell of fresh bread|hold many pots|feed the family", "cook pots food stove"),
    _topic("trains", "trains", True, "long fast loud",
           "run on tracks|carry people|stop at stations", "train tracks station rails"),
    _topic("cars", "cars", True, "fast shiny loud",
           "drive on roads|need fuel|carry families", "car road wheels driver"),
    _topic("boats", "boats", True, "small slow white",
           "sail on the water|carry people|rest in the harbor", "boat sail harbor"),
    _topic("sky", "the sky", False, "blue wide clear",
           "change color at sunset|hold the clouds|turn dark at night", "clouds blue"),
    _topic("fire", "fire", False, "hot bright red", "keep us warm|burn wood|give light", "flames smoke heat"),
    _topic("ice", "ice", False, "cold hard clear", "melt in the sun|cover the lake|keep drinks cold", "frozen lake"),
    _topic("bees", "bees", True, "busy small useful", "make honey|visit flowers|live in hives", "bee honey hive"),
    _topic("apples", "apples", True, "red sweet fresh",
           "grow on trees|make good pies|fall in autumn", "apple fruit pie orchard"),
    _topic("cake", "cake", False, "sweet soft rich",
           "make people happy|sit on the table|need sugar and eggs", "sugar birthday candles party"),
    _topic("soup", "soup", False, "hot thick good",
           "warm the body|cook in a big pot|taste good in winter", "bowl spoon pot"),
    _topic("park", "the park", False, "green quiet big",
           "have tall trees|welcome children|open every day", "grass bench playground"),
    _topic("games", "games", True, "fun long new",
           "bring friends together|teach us rules|make us laugh", "game players rules"),
    _topic("dancing", "dancing", False, "fun happy free",
           "make people happy|need good music|keep the body strong", "dance dancers steps"),
    _topic("painting", "painting", False, "calm colorful quiet",
           "need brushes and paint|use many colors|make people happy", "paint brush artist picture"),
    _topic("desert", "the desert", False, "hot dry wide",
           "have little water|hide small animals|glow at sunset", "sand camels dunes"),
    _topic("islands", "islands", True, "small sunny green",
           "sit in the sea|have long beaches|welcome many people", "island sea palm"),
    _topic("village", "the village", False, "small quiet old",
           "have one small shop|sit near the river|have a small school", "houses villagers"),
    _topic("candles", "candles", True, "small warm bright",
           "light the room|burn slowly|smell nice", "candle flame wax"),
    _topic("kites", "kites", True, "colorful light high",
           "fly in the wind|dance in the sky|need a long string", "kite string"),
    _topic("frogs", "frogs", True, "green small noisy", "jump into ponds|eat flies|sing at night", "frog pond"),
    _topic("rabbits", "rabbits", True, "soft fast shy",
           "eat carrots|dig holes|hop across the grass", "rabbit bunny carrots"),
    _topic("owls", "owls", True, "wise quiet old", "hunt at night|sleep during the day|have big eyes", "owl feathers"),
    _topic("elephants", "elephants", True, "big strong gentle",
           "have long trunks|live in herds|walk very far", "elephant trunk herd"),
    _topic("whales", "whales", True, "huge gentle slow",
           "swim in the ocean|sing long songs|eat small fish", "whale ocean"),
    _topic("lions", "lions", True, "brave strong proud",
           "hunt in groups|roar loudly|sleep in the shade", "lion mane roar"),
    _topic("home", "home", False, "warm safe quiet", "keep us safe|keep us warm|welcome our friends", "house rooms"),
    _topic("chocolate", "chocolate", False, "sweet dark rich",
           "melt in the mouth|come from cocoa|make a nice gift", "cocoa candy"),
    _topic("bicycles", "bicycles", True, "light fast quiet",
           "have two wheels|need no fuel|take us to school", "bicycle bike wheels ride"),
    _topic("cows", "cows", True, "big gentle calm", "eat grass|give milk|live on the farm", "cow milk grass farm"),
    _topic("ducks", "ducks", True, "noisy small happy", "swim in the pond|eat bread|fly south in autumn", "duck pond"),
    _topic("pigs", "pigs", True, "pink clever round", "roll in the mud|eat a lot|live on the farm", "pig mud farm"),
    _topic("sheep", "sheep", True, "soft white gentle",
           "eat grass|give us wool|walk in the fields", "wool lamb fields"),
    _topic("monkeys", "monkeys", True, "funny clever fast",
           "climb trees|eat bananas|play in the trees", "monkey bananas jungle"),
    _topic("tigers", "tigers", True, "strong fast proud",
           "hunt at night|have orange fur|live in the jungle", "tiger stripes jungle"),
    _topic("bears", "bears", True, "big strong brown",
           "sleep in winter|eat honey|catch fish in rivers", "bear cave honey"),
    _topic("wolves", "wolves", True, "wild fast strong",
           "hunt in packs|howl at the moon|live in the forest", "wolf pack howl"),
    _topic("lake", "the lake", False, "calm cold blue",
           "shine in the sun|turn to ice in winter|hold many fish", "water fish boats"),
    _topic("storms", "storms", True, "loud dark wild",
           "bring heavy rain|wake the town|pass by quickly", "storm thunder rain wind"),
    _topic("rainbows", "rainbows", True, "colorful bright pretty",
           "come after rain|fill the sky with color|make people smile", "rainbow colors sky"),
    _topic("milk", "milk", False, "white cold fresh",
           "come from cows|make us strong|taste good with cake", "cow glass"),
    _topic("holidays", "holidays", True, "happy long fun",
           "bring families together|give us time to rest|come every year", "holiday rest travel"),
    _topic("parties", "parties", True, "loud happy fun",
           "have music and cake|bring friends together|last all night", "party music guests"),
    _topic("shoes", "shoes", True, "new warm black",
           "keep our feet warm|come in pairs|come in many colors", "shoe feet laces"),
    _topic("harbor", "the harbor", False, "busy old quiet",
           "hold many boats|smell of fish|wake before the sun", "boats ships sea"),
    _topic("butterflies", "butterflies", True, "pretty colorful light",
           "dance in the air|visit the gardens|fly from flower to flower", "butterfly wings flowers"),
    _topic("penguins", "penguins", True, "funny small brave",
           "swim in cold water|live on the ice|walk in a line", "penguin ice snow"),
    _topic("library", "the library", False, "quiet big old",
           "hold many books|open every morning|help students learn", "books shelves reading"),
)
TOPICS: dict[str, Topic] = {topic.name: topic for topic in _TOPIC_LIST}


def _third_person(predicate: str) -> str:
    """Conjugate a base-form predicate for a singular subject.

    >>> [_third_person(p) for p in ["shine at night", "have snow", "carry water", "push the boats", "go home"]]
    ['shines at night', 'has snow', 'carries water', 'pushes the boats', 'goes home']
    """
    verb, _, rest = predicate.partition(" ")
    if verb == "have":
        verb = "has"
    elif verb.endswith(("s", "sh", "ch", "x", "z", "o")):
        verb += "es"
    elif verb.endswith("y") and verb[-2] not in "aeiou":
        verb = verb[:-1] + "ies"
    else:
        verb += "s"
    return f"{verb} {rest}".strip()


# Templates by shape. {S}/{s}: subject capitalised or not; {be}: is/are; {pron}: it/they; {A}/{B}: two
# different adjectives; {V}/{W}: two different predicates. Lengths (subject of L words) run from L+2 to L+7
# words, so every topic has sentences of every exact_words length 4..8.
_ADJECTIVE_TEMPLATES = (
    "{S} {be} {A}.",
    "We love {s}.",
    "{S} {be} so {A}.",
    "I really like {s}.",
    "I think {s} {be} {A}.",
    "{S} {be} very {A} today.",
    "{S} {be} {A} and {B}.",
    "Many people say {s} {be} {A}.",
    "My friends and I love {s}.",
    "I like {s} because {pron} {be} {A}.",
    "Children love {s} because {pron} {be} {A}.",
    "I think {s} {be} {A} and {B}.",
    "Many people say that {s} {be} very {A}.",
)
_VERB_TEMPLATES = (
    "{S} {V}.",
    "{S} always {V}.",
    "Everyone knows that {s} {V}.",
    "{S} {V} and {W}.",
)
_INCLUDE_TEMPLATES = (
    "I painted a picture of {s} in {w}.",
    "I drew {s} with {aw} pencil.",
    "My {w} book is about {s}.",
    "I saw {s} from my {w} window.",
)
_INCLUDE_WORDS = ("blue", "red", "green", "yellow", "white", "black")
_EXACT_WORD_COUNTS = (4, 5, 6, 7, 8)


@functools.lru_cache(maxsize=None)
def _topic_sentences(name: str) -> tuple[str, ...]:
    """Every sentence the generator can say about a topic (comma-free, first letter capitalised)."""
    topic = TOPICS[name]
    conjugate = (lambda v: v) if topic.plural else _third_person
    base = {
        "S": _capitalise(topic.subject), "s": topic.subject, "be": "are" if topic.plural else "is",
        "pron": "they" if topic.plural else "it",
    }
    sentences = []
    for template in _ADJECTIVE_TEMPLATES:
        for a, b in itertools.permutations(topic.adjectives, 2):
            if "{B}" not in template and b != topic.adjectives[(topic.adjectives.index(a) + 1) % 3]:
                continue  # one sentence per adjective for single-adjective templates
            sentences.append(template.format(A=a, B=b, **base))
    for template in _VERB_TEMPLATES:
        for v, w in itertools.permutations(topic.verbs, 2):
            if "{W}" not in template and w != topic.verbs[(topic.verbs.index(v) + 1) % 3]:
                continue
            sentences.append(template.format(V=conjugate(v), W=conjugate(w), **base))
    return tuple(dict.fromkeys(sentences))


def _include_sentence(topic: Topic, word: str, rng: random.Random) -> str:
    template = rng.choice(_INCLUDE_TEMPLATES)
    return _capitalise(template.format(s=topic.subject, w=word, aw=_article(word)))


def topic_sentence(topic: str, rng: random.Random, n_words: int | None = None, include: str | None = None) -> str:
    """A simple sentence about ``topic`` (a key of :data:`TOPICS`), optionally with exactly ``n_words`` words
    or containing the word ``include``.

    >>> sentence = topic_sentence("moon", random.Random(1), n_words=4)
    >>> sentence.startswith("The moon "), len(sentence.split())
    (True, 4)
    >>> topic_sentence("cats", random.Random(1), include="blue")
    'I drew cats with a blue pencil.'
    """
    if topic not in TOPICS:
        raise ValueError(f"unknown topic {topic!r}; known topics: {sorted(TOPICS)}")
    if include is not None:
        return _include_sentence(TOPICS[topic], include, rng)
    candidates = _topic_sentences(topic)
    if n_words is not None:
        candidates = tuple(s for s in candidates if _word_count(s) == n_words)
        if not candidates:
            raise ValueError(f"the generator has no {n_words}-word sentence about {topic!r}")
    return rng.choice(candidates)


def _other_topic_sentence(topic: Topic, rng: random.Random) -> str:
    """A sentence about a different topic that mentions none of ``topic``'s words."""
    names = [name for name in TOPICS if name != topic.name]
    rng.shuffle(names)
    for name in names:
        sentence = topic_sentence(name, rng)
        if not _mentions(sentence, topic.words):
            return sentence
    raise ValueError(f"every other topic's sentence mentions a word of {topic.name!r}")


class _TopicFamily(Family):
    """Shared parts of the constraint and open-ended families: topic lookup and on-topic words."""

    def _topic_of(self, params: Mapping[str, Any]) -> Topic:
        name = _param(params, "topic", self.name)
        if name not in TOPICS:
            raise ValueError(f"{self.name} params name unknown topic {name!r}; known topics: {sorted(TOPICS)}")
        return TOPICS[name]

    def topic_words(self, params: Mapping[str, Any]) -> set[str]:
        return set(self._topic_of(params).words)

    def addresses(self, params: Mapping[str, Any], response: str) -> bool:
        return is_complete_sentence(response)

    def facts(self, key: str, rng: random.Random) -> list[str]:
        topic = self._fields(key)[-1]
        return [topic_sentence(topic, rng)]


# --------------------------------------------------------------------------------------------------------
# 6. constraint
# --------------------------------------------------------------------------------------------------------

_CONSTRAINT_TEMPLATES = {
    "lowercase": (
        "Write a sentence about {s} using only lowercase letters.",
        "Write a sentence about {s} in lowercase letters only.",
        "Write one sentence about {s} with no capital letters.",
        "Describe {s} in one sentence using only lowercase letters.",
    ),
    "exact_words": (
        "Write exactly {n} words about {s}.",
        "Describe {s} in exactly {n} words.",
        "Write a sentence about {s} that has exactly {n} words.",
        "Use exactly {n} words to describe {s}.",
    ),
    "include_word": (
        "Write a sentence about {s} that includes the word {w}.",
        "Write a sentence about {s} containing the word {w}.",
        "Write a sentence about {s}. Use the word {w}.",
        "Use the word {w} in a sentence about {s}.",
    ),
    "no_commas": (
        "Write a sentence about {s} without using any commas.",
        "Write a sentence about {s} with no commas.",
        "Describe {s} in one sentence and do not use commas.",
        "Write one sentence about {s} and use no commas.",
    ),
}


class ConstraintFamily(_TopicFamily):
    """IFEval-style formatting constraints on a sentence about a topic.

    Correct when the response is a complete sentence (:func:`is_complete_sentence`), mentions a topic word, and
    satisfies the constraint:
    lowercase (no uppercase letter), exact_words (exactly N words), include_word (the word appears as a whole
    word, any case), no_commas (no comma).
    """

    name = "constraint"
    length_bounds = (3, 30)

    def _all_keys(self) -> Iterable[str]:
        for topic in TOPICS:
            yield f"constraint:lowercase:{topic}"
            yield f"constraint:no_commas:{topic}"
            for n in _EXACT_WORD_COUNTS:
                yield f"constraint:exact_words:{n}:{topic}"
            for word in _INCLUDE_WORDS:
                yield f"constraint:include_word:{word}:{topic}"

    def make_item(self, key: str, rng: random.Random, item_id: str) -> Item:
        fields = self._fields(key)
        kind, topic = fields[0], TOPICS[fields[-1]]
        params: dict[str, Any] = {"key": key, "kind": kind, "topic": topic.name}
        fmt = {"s": topic.subject}
        if kind == "lowercase":
            reference = topic_sentence(topic.name, rng).lower()
        elif kind == "no_commas":
            reference = topic_sentence(topic.name, rng)
        elif kind == "exact_words":
            params["n"] = int(fields[1])
            fmt["n"] = _WORD_FOR_NUMBER[params["n"]]
            reference = topic_sentence(topic.name, rng, n_words=params["n"])
        else:
            params["word"] = fields[1]
            fmt["w"] = fields[1]
            reference = topic_sentence(topic.name, rng, include=fields[1])
        instruction = _capitalise(rng.choice(_CONSTRAINT_TEMPLATES[kind]).format(**fmt))
        return self._item(item_id, instruction, reference, params)

    def verify(self, params: Mapping[str, Any], response: str) -> bool:
        kind = _param(params, "kind", self.name)
        text = response.strip()
        if not is_complete_sentence(text) or not _mentions(text, self.topic_words(params)):
            return False
        if kind == "lowercase":
            return not any(ch.isupper() for ch in text)
        if kind == "exact_words":
            return _word_count(text) == _param(params, "n", self.name)
        if kind == "include_word":
            return _param(params, "word", self.name).lower() in _tokens(text)
        if kind == "no_commas":
            return "," not in text and "\uff0c" not in text
        raise ValueError(f"constraint params name unknown kind {kind!r}; known: {sorted(_CONSTRAINT_TEMPLATES)}")

    def wrong_answer(self, params: Mapping[str, Any], rng: random.Random) -> str:
        kind = _param(params, "kind", self.name)
        topic = self._topic_of(params)
        if kind == "lowercase":
            return topic_sentence(topic.name, rng)  # every generated sentence opens with a capital letter
        if kind == "exact_words":
            n = _param(params, "n", self.name)
            return rng.choice([s for s in _topic_sentences(topic.name) if _word_count(s) != n])
        if kind == "include_word":
            word = _param(params, "word", self.name)
            return rng.choice([s for s in _topic_sentences(topic.name) if word not in _tokens(s)])
        sentence = topic_sentence(topic.name, rng)
        opening = sentence if sentence.startswith("I ") else sentence[:1].lower() + sentence[1:]
        return f"Today, {opening}"


# --------------------------------------------------------------------------------------------------------
# 7. open_ended
# --------------------------------------------------------------------------------------------------------

_OPEN_TEMPLATES = {
    "sentence": (
        "Write a sentence about {s}.",
        "Write one sentence about {s}.",
        "Tell me something about {s}.",
        "Describe {s} in one sentence.",
        "Say something about {s}.",
    ),
    "why": (
        "Why do people like {s}?",
        "Explain why people like {s}.",
        "Tell me why people like {s}.",
        "Say why people like {s}.",
    ),
}
# Answers to "why do people like X?" for the corpus ({B}: a second adjective, {V}: a predicate).
_WHY_TEMPLATES = (
    "People like {s} because {pron} {be} {A}.",
    "Many people like {s} because {pron} {be} {A} and {B}.",
    "People like {s} because {pron} {V}.",
)


def _why_sentence(topic: Topic, rng: random.Random) -> str:
    """A reason to like ``topic``, e.g. "People like the moon because it is bright."."""
    a, b = rng.sample(topic.adjectives, 2)
    verb = rng.choice(topic.verbs)
    return rng.choice(_WHY_TEMPLATES).format(
        s=topic.subject, pron="they" if topic.plural else "it", be="are" if topic.plural else "is", A=a, B=b,
        V=verb if topic.plural else _third_person(verb),
    )


class OpenEndedFamily(_TopicFamily):
    """"Write a sentence about <topic>." (key ``open_ended:moon``) or "Why do people like <topic>?" (key
    ``open_ended:why:moon``). No correctness check: :meth:`verify` returns ``None``."""

    name = "open_ended"
    length_bounds = (3, 40)

    def _all_keys(self) -> Iterable[str]:
        for topic in TOPICS:
            yield f"open_ended:{topic}"
            yield f"open_ended:why:{topic}"

    def make_item(self, key: str, rng: random.Random, item_id: str) -> Item:
        fields = self._fields(key)
        topic = TOPICS[fields[-1]]
        style = "sentence" if len(fields) == 1 else "why"
        instruction = _capitalise(rng.choice(_OPEN_TEMPLATES[style]).format(s=topic.subject))
        return self._item(item_id, instruction, None, {"key": key, "topic": topic.name, "style": style})

    def verify(self, params: Mapping[str, Any], response: str) -> None:
        return None

    def wrong_answer(self, params: Mapping[str, Any], rng: random.Random) -> str:
        return _other_topic_sentence(self._topic_of(params), rng)


# --------------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------------

FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        ArithmeticFamily(),
        CapitalsFamily(),
        WordTransformFamily(),
        ListCategoryFamily(),
        ComparisonFamily(),
        ConstraintFamily(),
        OpenEndedFamily(),
    )
}
assert tuple(FAMILIES) == FAMILY_NAMES, "FAMILIES must follow FAMILY_NAMES order"


def get_family(name: str) -> Family:
    """The family called ``name``; ``ValueError`` lists the known names.

    >>> get_family("capitals").name
    'capitals'
    """
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown task family {name!r}; known families: {', '.join(FAMILY_NAMES)}") from None


# --------------------------------------------------------------------------------------------------------
# Sampling: held-out and training items
# --------------------------------------------------------------------------------------------------------


def _stratify(n: int, families: Sequence[str]) -> dict[str, int]:
    """Per-family counts summing to ``n`` that differ by at most one (earlier families get the extras).

    >>> _stratify(10, ["capitals", "arithmetic", "comparison"])
    {'capitals': 4, 'arithmetic': 3, 'comparison': 3}
    """
    if n < 0:
        raise ValueError(f"the number of items must be >= 0, got {n}")
    if not families:
        raise ValueError("at least one family is needed")
    if len(set(families)) != len(families):
        raise ValueError(f"families must be distinct, got {list(families)}")
    for name in families:
        get_family(name)
    base, extra = divmod(n, len(families))
    return {name: base + (1 if index < extra else 0) for index, name in enumerate(families)}


def heldout_items(seed: int, n: int = 130, families: Sequence[str] = FAMILY_NAMES) -> list[Item]:
    """``n`` held-out evaluation items, stratified over ``families``, with distinct keys.

    Items are grouped by family (in ``families`` order) with ids ``eval-<family>-NNN``. Each family draws
    from its own ``Random(f"heldout:{seed}:{family}")``, so one family's items do not depend on the others.

    >>> [item.id for item in heldout_items(0, n=3, families=("capitals", "arithmetic"))]
    ['eval-capitals-000', 'eval-capitals-001', 'eval-arithmetic-000']
    """
    items: list[Item] = []
    for name, count in _stratify(n, list(families)).items():
        family = get_family(name)
        keys = family.keys()
        if count > len(keys):
            raise ValueError(f"family {name!r} has {len(keys)} keys, fewer than the {count} held-out items asked for")
        rng = random.Random(f"heldout:{seed}:{name}")
        for index, key in enumerate(rng.sample(keys, count)):
            items.append(family.make_item(key, rng, f"eval-{name}-{index:03d}"))
    return items


def dev_items(seed: int, n: int, exclude: Sequence[Item], families: Sequence[str] = FAMILY_NAMES) -> list[Item]:
    """``n`` dev-split items balanced over ``families``, disjoint from ``exclude`` (the test items) by key and
    near-duplicate instruction; ids ``dev-<family>-NNN``. Trainer eval sets and every choice of settings use
    them; the test items are never used to choose anything.

    >>> test = heldout_items(0, n=7)
    >>> dev = dev_items(0, 7, exclude=test)
    >>> dev[0].id, bool({i.key for i in dev} & {i.key for i in test})
    ('dev-arithmetic-000', False)
    """
    return training_items(seed, n, exclude, families, split="dev")


def training_items(seed: int, n: int, exclude: Sequence[Item], families: Sequence[str] = FAMILY_NAMES,
                   split: str = "train") -> list[Item]:
    """``n`` training items balanced over ``families``, disjoint from ``exclude``.

    A candidate is skipped if its key is the key of an excluded item or its instruction is a
    :func:`near_duplicate` of an excluded instruction; keys are distinct. Items are grouped by family with ids
    ``<split>-<family>-NNN`` (``split`` also names the random stream, so a dev sample differs from a training
    sample of the same seed). ``ValueError`` names the family whose key space is too small.
    """
    excluded_keys = {item.key for item in exclude}
    index = _OverlapIndex([item.instruction for item in exclude])
    items: list[Item] = []
    for name, count in _stratify(n, list(families)).items():
        family = get_family(name)
        rng = random.Random(f"{split}:{seed}:{name}")
        candidates = [key for key in family.keys() if key not in excluded_keys]
        rng.shuffle(candidates)
        chosen: list[Item] = []
        skipped_near = 0
        for key in candidates:
            if len(chosen) == count:
                break
            item = family.make_item(key, rng, f"{split}-{name}-{len(chosen):03d}")
            if index.matches(item.instruction):
                skipped_near += 1
                continue
            chosen.append(item)
        if len(chosen) < count:
            raise ValueError(
                f"family {name!r} cannot supply {count} {'training' if split == 'train' else split} items: it has {len(family.keys())} keys, "
                f"{len(family.keys()) - len(candidates)} excluded by key and {skipped_near} by near-duplicate "
                f"instructions, leaving {len(chosen)}"
            )
        if skipped_near:
            logger.info("training_items: skipped %d %s candidates as near-duplicates of excluded items",
                        skipped_near, name)
        items.extend(chosen)
    return items


# --------------------------------------------------------------------------------------------------------
# The pretraining corpus
# --------------------------------------------------------------------------------------------------------

# Question/answer layouts of the corpus. None of them is the study's Instruction:/Response: template.
_QA_FORMATS: tuple[tuple[str, str], ...] = (
    ("Q:", "A:"), ("Q:", "A:"), ("Question:", "Answer:"), ("Teacher:", "Student:"),
)
_FORBIDDEN_RE = re.compile(r"Instruction:|Response:|\bEND\b")
# Share of each document kind; the rest are topic paragraphs.
_QA_SHARE, _FACT_SHARE = 0.6, 0.25
_MIN_DOC_WORDS, _MAX_DOC_WORDS = 30, 120


class _KeySchedule:
    """Which task each Q/A pair asks: families by smooth weighted round-robin (weight = sqrt of the number of
    keys, so big families get more pairs without drowning the small ones), and within a family a shuffled cycle
    through all its keys, so every key is asked once before any is asked twice."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.weights = {name: math.sqrt(len(FAMILIES[name].keys())) for name in FAMILY_NAMES}
        self.total = sum(self.weights.values())
        self.credit = dict.fromkeys(FAMILY_NAMES, 0.0)
        self.queues: dict[str, list[str]] = {name: [] for name in FAMILY_NAMES}
        self.asked: dict[str, set[str]] = {name: set() for name in FAMILY_NAMES}

    def next(self) -> tuple[Family, str]:
        for name, weight in self.weights.items():
            self.credit[name] += weight
        name = max(FAMILY_NAMES, key=self.credit.__getitem__)
        self.credit[name] -= self.total
        if not self.queues[name]:
            self.queues[name] = FAMILIES[name].keys()
            self.rng.shuffle(self.queues[name])
        key = self.queues[name].pop()
        self.asked[name].add(key)
        return FAMILIES[name], key


def _qa_answer(item: Item, rng: random.Random) -> str:
    """The reference, or for open-ended items a fitting topic sentence."""
    if item.reference is not None:
        return item.reference
    if item.params["style"] == "why":
        return _why_sentence(TOPICS[item.params["topic"]], rng)
    return topic_sentence(item.params["topic"], rng)


def _qa_document(rng: random.Random, schedule: _KeySchedule) -> str:
    question_tag, answer_tag = rng.choice(_QA_FORMATS)
    # Stop adding pairs once past the target; a pair is at most ~25 words, so documents stay under the maximum.
    target = rng.randint(_MIN_DOC_WORDS, _MAX_DOC_WORDS - 25)
    pairs: list[str] = []
    words = 0
    while words < target or len(pairs) < 3:
        family, key = schedule.next()
        item = family.make_item(key, rng, "corpus")
        pairs.append(f"{question_tag} {item.instruction}\n{answer_tag} {_qa_answer(item, rng)}")
        words += _word_count(pairs[-1])
    return "\n\n".join(pairs)


def _fact_document(rng: random.Random) -> str:
    family = FAMILIES[rng.choice(FAMILY_NAMES[:5])]
    keys = family.keys()
    target = rng.randint(_MIN_DOC_WORDS, _MAX_DOC_WORDS // 2)
    sentences: list[str] = []
    while sum(_word_count(s) for s in sentences) < target:
        sentences.extend(family.facts(rng.choice(keys), rng))
    separator = "\n" if rng.random() < 0.5 else " "
    return separator.join(sentences)


def _topic_document(rng: random.Random) -> str:
    topic = rng.choice(sorted(TOPICS))
    sentences = list(_topic_sentences(topic))
    rng.shuffle(sentences)
    target = rng.randint(_MIN_DOC_WORDS, _MAX_DOC_WORDS // 2)
    chosen: list[str] = []
    while sum(_word_count(s) for s in chosen) < target and sentences:
        chosen.append(sentences.pop())
    return " ".join(chosen)


def _build_corpus(seed: int, n_documents: int) -> tuple[list[str], dict[str, set[str]]]:
    if n_documents < 0:
        raise ValueError(f"n_documents must be >= 0, got {n_documents}")
    rng = random.Random(f"corpus:{seed}")
    schedule = _KeySchedule(rng)
    documents = []
    for _ in range(n_documents):
        draw = rng.random()
        if draw < _QA_SHARE:
            document = _qa_document(rng, schedule)
        elif draw < _QA_SHARE + _FACT_SHARE:
            document = _fact_document(rng)
        else:
            document = _topic_document(rng)
        found = _FORBIDDEN_RE.search(document)
        if found:
            raise ValueError(f"corpus document {len(documents)} contains the template string {found.group(0)!r}")
        documents.append(document)
    return documents, schedule.asked


def corpus(seed: int, n_documents: int) -> list[str]:
    """``n_documents`` short pretraining documents (about 30-120 words) generated from the world.

    About 60% are Q/A documents (several ``Q:/A:``, ``Question:/Answer:`` or ``Teacher:/Student:`` pairs
    separated by blank lines, answers being the items' references), 25% fact sentences of the first five
    families ("Paris is the capital of France."), 15% topic paragraphs. Q/A pairs cycle through every key of
    every family, held-out keys included (a real base model has seen the web; only SFT data avoids them);
    about 1300 documents ask every key at least once (see :func:`corpus_coverage`). No document contains
    ``Instruction:``, ``Response:`` or the word ``END``.

    >>> docs = corpus(0, 3)
    >>> len(docs), all(30 <= len(d.split()) <= 130 for d in docs)
    (3, True)
    """
    return _build_corpus(seed, n_documents)[0]


def corpus_coverage(seed: int, n_documents: int) -> dict[str, float]:
    """Per family, the fraction of its keys asked in Q/A pairs of ``corpus(seed, n_documents)``."""
    _, asked = _build_corpus(seed, n_documents)
    return {name: len(asked[name]) / len(FAMILIES[name].keys()) for name in FAMILY_NAMES}


def vocabulary(documents: Iterable[str]) -> set[str]:
    """Distinct normalised words (digit runs excluded) of ``documents``: the size a tokenizer must cover.

    >>> sorted(vocabulary(["The cat sat.", "the dog, 12"]))
    ['cat', 'dog', 'sat', 'the']
    """
    return {token for document in documents for token in _tokens(document) if not token.isdigit()}


__all__ = [
    "FAMILIES", "FAMILY_NAMES", "NEAR_DUPLICATE_THRESHOLD", "TOPICS", "Family", "Item", "Topic", "content_tokens",
    "corpus", "corpus_coverage", "dev_items", "find_overlaps", "get_family", "heldout_items", "is_complete_sentence",
    "near_duplicate", "normalise",
    "topic_sentence", "training_items", "vocabulary",
]
