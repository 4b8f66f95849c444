"""The few-shot completion format a base model can continue: question/answer pairs, blank-line separated.

This is the format the tiny base model's pretraining corpus uses (see :func:`alignkit.world.corpus`), and the
kind of text any real base model has seen on the web. It is deliberately *not* the study's
``Instruction:/Response:/END`` template, which the base model only learns through SFT.

    >>> print(prompt([("What is 2 plus 2?", "4")], "What is 3 plus 1?"))
    Q: What is 2 plus 2?
    A: 4
    <BLANKLINE>
    Q: What is 3 plus 1?
    A:
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alignkit.world import Item

QUESTION = "Q:"
ANSWER = "A:"
#: A continuation ends where the next pair would start.
STOP_STRINGS = ("\n\n", "\nQ:")


def prompt(shots: Sequence[tuple[str, str]], instruction: str) -> str:
    """``shots`` as answered pairs, then ``instruction`` with an open answer for the model to complete."""
    parts = [f"{QUESTION} {q.strip()}\n{ANSWER} {a.strip()}\n\n" for q, a in shots]
    return "".join(parts) + f"{QUESTION} {instruction.strip()}\n{ANSWER}"


def prompts_for(items: Sequence[Item], shots_pool: Sequence[Item], k: int, seed: int) -> list[str]:
    """One few-shot prompt per item, with ``k`` exemplars (their reference answers) of the item's family drawn
    from ``shots_pool`` (items of another family when the family has none with a reference, e.g. open-ended).

    Stage 01 uses it to have the base model answer training and dev instructions, and stage 06 to prompt the
    ``base_fewshot`` arm; ``shots_pool`` always comes from the training split, so an evaluated item never
    appears as an exemplar.
    """
    rng = random.Random(seed)
    by_family: dict[str, list[Item]] = defaultdict(list)
    for shot in shots_pool:
        if shot.reference is not None:
            by_family[shot.family].append(shot)
    prompts = []
    for item in items:
        pool = by_family.get(item.family) or [s for group in by_family.values() for s in group]
        shots = rng.sample(pool, min(k, len(pool)))
        prompts.append(prompt([(s.instruction, s.reference) for s in shots], item.instruction))
    return prompts
