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

>>> import random
>>> item = get_family("capitals").make_item("capitals:france", random.Random(0), "demo-capitals-000")
>>> item.reference, get_family("capitals").verify(item.params, "The capital is Paris.")
('Paris', True)

The submodules, each importing only those listed before it:

- :mod:`~alignkit.world.text`: normalisation, content tokens and near-duplicates (:func:`near_duplicate`,
  :func:`find_overlaps`); the word, number, plural and article helpers the families share;
- :mod:`~alignkit.world.items`: :class:`Item` and :class:`Family`, the interface of a task family;
- :mod:`~alignkit.world.topics`: :data:`TOPICS`, the sentence generator (:func:`topic_sentence`) and
  :func:`is_complete_sentence`;
- one module per task family, with its tables, templates, facts and verifier: :mod:`~alignkit.world.arithmetic`,
  :mod:`~alignkit.world.capitals`, :mod:`~alignkit.world.word_transform`, :mod:`~alignkit.world.list_category`,
  :mod:`~alignkit.world.comparison`, :mod:`~alignkit.world.constraint`, :mod:`~alignkit.world.open_ended`;
- :mod:`~alignkit.world.registry`: :data:`FAMILIES`, :data:`FAMILY_NAMES` and :func:`get_family`;
- :mod:`~alignkit.world.split`: the held-out, dev and training items (:func:`heldout_items`, :func:`dev_items`,
  :func:`training_items`);
- :mod:`~alignkit.world.pretraining`: the pretraining corpus (:func:`corpus`, :func:`corpus_coverage`,
  :func:`vocabulary`).

This package re-exports the public names below.
"""

from __future__ import annotations

from alignkit.world.items import Family, Item
from alignkit.world.pretraining import corpus, corpus_coverage, vocabulary
from alignkit.world.registry import FAMILIES, FAMILY_NAMES, get_family
from alignkit.world.split import dev_items, heldout_items, training_items
from alignkit.world.text import (
    NEAR_DUPLICATE_THRESHOLD,
    content_tokens,
    find_overlaps,
    near_duplicate,
    normalise,
)
from alignkit.world.topics import (
    TOPICS,
    Topic,
    is_complete_sentence,
    topic_sentence,
)

__all__ = [
    "FAMILIES", "FAMILY_NAMES", "NEAR_DUPLICATE_THRESHOLD", "TOPICS", "Family", "Item", "Topic", "content_tokens",
    "corpus", "corpus_coverage", "dev_items", "find_overlaps", "get_family", "heldout_items", "is_complete_sentence",
    "near_duplicate", "normalise",
    "topic_sentence", "training_items", "vocabulary",
]
