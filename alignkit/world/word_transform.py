"""Task family 3, word_transform: uppercase, reverse, first letter and letter count of a common word
("Spell the word apple backwards.").
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping
from typing import Any

from alignkit.world.items import Family, Item, _param
from alignkit.world.text import _capitalise, _response_numbers, _tokens

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


class WordTransformFamily(Family, name="word_transform", length_bounds=(1, 12)):
    """Uppercase, reverse, first letter and letter count of common words.

    uppercase: the all-caps word appears (case-sensitive) and no other all-caps word does; reverse: the reversed
    word appears and no other anagram attempt does; first_letter: the named letters are exactly the answer;
    letter_count: as arithmetic, the count is the only number.
    """

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
