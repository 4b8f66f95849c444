"""Task family 6, constraint: IFEval-style formatting constraints on a sentence about a topic ("Write exactly
five words about the moon.").
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from typing import Any

from alignkit.world.items import Item, _param
from alignkit.world.text import (
    _WORD_FOR_NUMBER,
    _capitalise,
    _mentions,
    _tokens,
    _word_count,
)
from alignkit.world.topics import (
    _EXACT_WORD_COUNTS,
    _INCLUDE_WORDS,
    TOPICS,
    _topic_sentences,
    _TopicFamily,
    is_complete_sentence,
    topic_sentence,
)

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


class ConstraintFamily(_TopicFamily, name="constraint", length_bounds=(3, 30)):
    """IFEval-style formatting constraints on a sentence about a topic.

    Correct when the response is a complete sentence (:func:`is_complete_sentence`), mentions a topic word, and
    satisfies the constraint:
    lowercase (no uppercase letter), exact_words (exactly N words), include_word (the word appears as a whole
    word, any case), no_commas (no comma).
    """

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
