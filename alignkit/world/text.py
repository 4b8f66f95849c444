"""Text helpers the task families share: normalisation and content tokens, near-duplicate detection
(:func:`near_duplicate`, :func:`find_overlaps`), and the word, number, plural and article helpers of the verifiers
and the sentence templates.
"""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence

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


# --------------------------------------------------------------------------------------------------------
# Articles, plurals and lists for the templates
# --------------------------------------------------------------------------------------------------------


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
