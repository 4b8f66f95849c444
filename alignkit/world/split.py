"""Sampling items for the study's splits: the held-out test items (:func:`heldout_items`), the dev items
(:func:`dev_items`) and the training items (:func:`training_items`), disjoint by key and by near-duplicate
instruction.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

from alignkit.world.items import Item
from alignkit.world.registry import FAMILY_NAMES, get_family
from alignkit.world.text import _OverlapIndex

logger = logging.getLogger("alignkit.world")  # the package logger: records keep the name they had in world.py


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
