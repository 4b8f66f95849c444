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

from collections.abc import Sequence

QUESTION = "Q:"
ANSWER = "A:"
#: A continuation ends where the next pair would start.
STOP_STRINGS = ("\n\n", "\nQ:")


def prompt(shots: Sequence[tuple[str, str]], instruction: str) -> str:
    """``shots`` as answered pairs, then ``instruction`` with an open answer for the model to complete."""
    parts = [f"{QUESTION} {q.strip()}\n{ANSWER} {a.strip()}\n\n" for q, a in shots]
    return "".join(parts) + f"{QUESTION} {instruction.strip()}\n{ANSWER}"
