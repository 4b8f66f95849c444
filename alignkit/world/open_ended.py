"""Task family 7, open_ended: "Write a sentence about the moon." or "Why do people like the moon?", with no
correctness check; also the reasons to like a topic that answer the "why" questions in the corpus.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from typing import Any

from alignkit.world.items import Item
from alignkit.world.text import _capitalise
from alignkit.world.topics import (
    TOPICS,
    Topic,
    _other_topic_sentence,
    _third_person,
    _TopicFamily,
)

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


class OpenEndedFamily(_TopicFamily, name="open_ended", length_bounds=(3, 40)):
    """"Write a sentence about <topic>." (key ``open_ended:moon``) or "Why do people like <topic>?" (key
    ``open_ended:why:moon``). No correctness check: :meth:`verify` returns ``None``."""

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
