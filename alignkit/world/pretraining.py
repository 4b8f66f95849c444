"""The pretraining corpus of the embedded base model: short Q/A, fact and topic documents generated from the world
(:func:`corpus`), how much of each family's key space it asks (:func:`corpus_coverage`) and its
:func:`vocabulary`.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterable

from alignkit.world.items import Family, Item
from alignkit.world.open_ended import _why_sentence
from alignkit.world.registry import FAMILIES, FAMILY_NAMES
from alignkit.world.text import _tokens, _word_count
from alignkit.world.topics import TOPICS, _topic_sentences, topic_sentence

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
