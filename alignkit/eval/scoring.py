"""The nine deterministic criteria, the ``format`` / ``content`` composites and ``overall``: one scorer for
stages 01, 03 and 06.

Every criterion is a pure function of ``(item, response, emitted_end)``: ``True`` (pass), ``False`` (fail) or
``None`` (not applicable; only ``factually_correct`` for the open-ended family). ``response`` is the text
before ``END`` as :func:`alignkit.template.split_output` cuts it; without ``END`` it is the whole continuation
as generated.

**The answer segment.** :func:`answer_segment` cuts a response into its *answer* and the *run-on* after it: the
answer ends where the model starts a new turn or instruction, i.e. at a template tag (``Instruction:``,
``Response:``) anywhere, or at the start of a later line that opens with a turn label (``Q:``, ``A:``,
``Question:``, ``Teacher:`` ...), is an ``END`` line, or starts a new task (an instruction verb such as "Write"
or a question such as "What is ..."). *Format* criteria (``ends_with_end``, ``proper_structure``,
``no_rambling``) judge the **whole generation**; *content* criteria (``factually_correct``,
``addresses_instruction``, ``on_topic``, ``appropriate_length``, ``no_unwarranted_refusal``, ``coherent``) judge
the **answer**. Nothing is ever shortened to make a criterion pass that judges the whole generation, so a run-on
is penalised once, by the format criteria, and a correct answer followed by a run-on is still a correct answer:

- ``"12\\nInstruction: What is 3 plus 4?\\nResponse: 7"`` for 7 plus 5: answer ``"12"`` (factually correct), run-on
  from ``Instruction:`` (fails ``proper_structure`` and ``no_rambling``);
- ``"Paris\\n\\nQ: What is the capital of Spain?"``: answer ``"Paris"``;
- ``"The moon is bright.\\nIt shines at night."``: no new turn, the whole text is the answer.

========================  =================================================================================
criterion                 passes when
========================  =================================================================================
ends_with_end             ``emitted_end`` is True: the model wrote ``\\nEND`` before the token limit.
proper_structure          the generation is non-empty and has no template residue: no ``Instruction:`` /
                          ``Response:``, no line that is just ``END``, no few-shot turn label (``Q:``, ``A:``,
                          ``Question:``, ``Answer:``, ``Teacher:``, ``Student:``) at the start of a line, no
                          special-token text (``</s>``, ``<|endoftext|>``, ``[PAD]``).
no_rambling               nothing runs on (:func:`run_on`): after the first sentence no sentence or line
                          starts a new instruction or question; a short-answer family's generation stays on
                          one line and every generation in one paragraph; :func:`repetition` is at most
                          :data:`REPETITION_THRESHOLD`.
addresses_instruction     the family's ``addresses(params, answer)``: the kind of thing asked for is there (a
                          number that is an answer rather than an echo of the operands; a complete sentence
                          for sentence tasks; ...).
appropriate_length        :func:`word_count` of the answer within the family's ``length_bounds`` (inclusive).
no_unwarranted_refusal    the answer is not :func:`is_refusal` (every instruction of the world is benign).
factually_correct         the family's ``verify(params, answer)``; ``None`` for open-ended.
coherent                  :func:`coherence` of the answer >= :data:`COHERENCE_THRESHOLD`.
on_topic                  the answer mentions one of the family's ``topic_words(params)`` (whole words,
                          case-insensitive, a plural ``s``/``es`` allowed; digits count, so arithmetic's
                          operands and answer are topic words), or the family's verifier accepts it.
========================  =================================================================================

Composites (:data:`COMPOSITES`): ``format`` = ends_with_end ∧ proper_structure ∧ no_rambling; ``content`` =
factually_correct (where applicable) ∧ addresses_instruction ∧ on_topic ∧ no_unwarranted_refusal; ``overall`` =
every applicable criterion passes (the seed study's endpoint).

>>> from alignkit import world
>>> import random
>>> item = world.get_family("arithmetic").make_item("arithmetic:add:5:7", random.Random(0), "demo")
>>> score_record(item, " 12\\nEND")["overall"]
True
>>> scores = score_record(item, " 12\\nInstruction: What is 3 plus 4?\\nResponse: 7")
>>> [name for name in ENDPOINTS if scores[name] is False]
['ends_with_end', 'proper_structure', 'no_rambling', 'format', 'overall']
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alignkit import files, schemas, template, world
from alignkit.eval.checks import (
    COHERENCE_THRESHOLD,
    answer_segment,
    coherence,
    is_refusal,
    is_short_answer,
    mentions_topic,
    run_on,
    template_residue,
    word_count,
)

log = logging.getLogger(__name__)

CRITERIA: tuple[str, ...] = (
    "ends_with_end",
    "proper_structure",
    "no_rambling",
    "addresses_instruction",
    "appropriate_length",
    "no_unwarranted_refusal",
    "factually_correct",
    "coherent",
    "on_topic",
)
OVERALL = "overall"
#: The composites beside ``overall``: each passes when all of its applicable criteria pass.
COMPOSITES: dict[str, tuple[str, ...]] = {
    "format": ("ends_with_end", "proper_structure", "no_rambling"),
    "content": ("factually_correct", "addresses_instruction", "on_topic", "no_unwarranted_refusal"),
}
#: One-sentence definitions, as the report prints them (the module docstring has the full rules).
DEFINITIONS: dict[str, str] = {
    "ends_with_end": "The model wrote END on its own line before the token limit (whole generation).",
    "proper_structure": "Non-empty, and no template residue anywhere: no Instruction:/Response: tags, no END line "
                        "inside, no few-shot turn label (Q:, A:, Question:...) at a line start, no special-token "
                        "text (whole generation).",
    "no_rambling": "Nothing runs on: no new instruction or question after the first sentence, one line for "
                   "short-answer tasks, one paragraph, no degenerate repetition (whole generation).",
    "addresses_instruction": "The answer contains the kind of thing asked for: a number that is an answer (not the "
                             "operands echoed), a list for list tasks, a complete sentence for sentence tasks.",
    "appropriate_length": "The answer's word count is within the task family's bounds (not truncated, not "
                          "verbose).",
    "no_unwarranted_refusal": "The answer does not decline the (always benign) instruction.",
    "factually_correct": "The task family's verifier accepts the answer (not applicable to open-ended tasks).",
    "coherent": "The answer reads as text rather than token soup (coherence score >= 0.5: word-like tokens, clean "
                "characters, no loops or stutters, balanced brackets).",
    "on_topic": "The answer mentions the item's subject (or the verifier accepts it).",
    "format": "Composite: ends_with_end, proper_structure and no_rambling all pass.",
    "content": "Composite: factually_correct (where applicable), addresses_instruction, on_topic and "
               "no_unwarranted_refusal all pass.",
    "overall": "Every applicable criterion passes (the seed study's endpoint).",
}
#: Every endpoint a score row carries, in report order: the nine criteria, the composites, ``overall``.
ENDPOINTS: tuple[str, ...] = (*CRITERIA, *COMPOSITES, OVERALL)
#: Criteria that judge the whole generation; the others judge the answer segment.
FORMAT_CRITERIA: tuple[str, ...] = COMPOSITES["format"]

# --------------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------------


def overall(scores: Mapping[str, bool | None]) -> bool:
    """All applicable criteria pass (``None`` criteria are ignored).

    >>> overall({"coherent": True, "factually_correct": None}), overall({"coherent": False})
    (True, False)
    """
    return all(scores[name] is not False for name in CRITERIA if name in scores)


def composites(scores: Mapping[str, bool | None]) -> dict[str, bool]:
    """``format`` and ``content`` from the criteria: each passes when all its applicable criteria pass.

    >>> composites({"ends_with_end": True, "proper_structure": True, "no_rambling": False,
    ...             "factually_correct": None, "addresses_instruction": True, "on_topic": True,
    ...             "no_unwarranted_refusal": True})
    {'format': False, 'content': True}
    """
    return {name: all(scores[c] is not False for c in parts) for name, parts in COMPOSITES.items()}


def score_response(item: world.Item, response: str, emitted_end: bool) -> dict[str, bool | None]:
    """The nine criteria, the composites and ``overall`` for one response to ``item`` (module docstring).

    ``response`` is the text before ``END`` (from :func:`alignkit.template.split_output`); with
    ``emitted_end`` False it is the whole continuation as generated. Format criteria judge it whole; content
    criteria judge its :func:`answer_segment`. ``item`` needs ``family`` and ``params`` (a
    :class:`alignkit.world.Item` or an eval-items record read into one).

    >>> from alignkit import world
    >>> import random
    >>> item = world.get_family("capitals").make_item("capitals:france", random.Random(0), "demo")
    >>> score_response(item, "Paris", True)["overall"]
    True
    >>> scores = score_response(item, "Madrid", True)
    >>> scores["factually_correct"], scores["on_topic"], scores["overall"]
    (False, False, False)
    """
    if not isinstance(emitted_end, bool):
        raise TypeError(f"emitted_end must be a bool, got {type(emitted_end).__name__}")
    family = world.get_family(item.family)
    params = item.params
    text = response.strip()
    answer, _run_on = answer_segment(text)
    verdict = family.verify(params, answer)
    low, high = family.length_bounds
    scores: dict[str, bool | None] = {
        "ends_with_end": emitted_end,
        "proper_structure": bool(text) and not template_residue(text),
        "no_rambling": not run_on(text, is_short_answer(family)),
        "addresses_instruction": bool(answer) and bool(family.addresses(params, answer)),
        "appropriate_length": low <= word_count(answer) <= high,
        "no_unwarranted_refusal": not is_refusal(answer),
        "factually_correct": None if verdict is None else bool(verdict),
        "coherent": coherence(answer) >= COHERENCE_THRESHOLD,
        "on_topic": bool(answer) and (verdict is True or mentions_topic(answer, family.topic_words(params))),
    }
    scores.update(composites(scores))
    scores[OVERALL] = overall(scores)
    return scores


def score_record(item: world.Item, raw_output: str) -> dict[str, bool | None]:
    """Score a raw generated continuation: :func:`alignkit.template.split_output`, then :func:`score_response`.

    >>> from alignkit import world
    >>> import random
    >>> item = world.get_family("capitals").make_item("capitals:france", random.Random(0), "demo")
    >>> score_record(item, " Paris")["ends_with_end"], score_record(item, " Paris\\nEND")["overall"]
    (False, True)
    """
    response, emitted_end = template.split_output(raw_output)
    return score_response(item, response, emitted_end)


def _record_lines(path: str | os.PathLike) -> list[int]:
    """1-based line numbers of the non-blank lines of a JSON Lines file, i.e. of the rows
    :func:`alignkit.schemas.load_records` returns, in the same order (it skips blank lines the same way)."""
    data = Path(path).read_bytes()
    return [
        number
        for number, raw in enumerate(data.split(b"\n"), start=1)
        if raw.removesuffix(b"\r").strip()
    ]


def rates(rows: list[Mapping[str, Any]]) -> dict[str, float | None]:
    """Pass rate per criterion (and ``overall``) over ``rows``: passes / applicable; None if none applicable.

    >>> rates([{"coherent": True, "factually_correct": None}, {"coherent": False, "factually_correct": None}])
    {'factually_correct': None, 'coherent': 0.5}
    """
    names = [name for name in ENDPOINTS if any(name in row for row in rows)]
    out: dict[str, float | None] = {}
    for name in names:
        values = [row[name] for row in rows if row.get(name) is not None]
        out[name] = sum(1 for value in values if value) / len(values) if values else None
    return out


def score_file(
    items_path: str | os.PathLike, responses_path: str | os.PathLike, out_path: str | os.PathLike
) -> dict[str, dict[str, float | None]]:
    """``alignkit score``: score every response of ``responses_path`` against its item; write and summarise.

    Both inputs are validated first (kinds ``eval-items`` and ``scorable-responses``: a response needs only
    ``item_id`` and its text, as ``raw_output``, or ``response`` with ``emitted_end``, so answers from another
    system can be scored as they are); every defect, including an ``item_id`` that is not an item, raises
    :class:`alignkit.schemas.InvalidInputError` naming its file and line. A response with ``raw_output`` is scored
    from it (:func:`score_record`, the text as generated). ``out_path`` gets one JSON line per response,
    ``{"model", "item_id", "family", <endpoints>...}``, written atomically. Returns ``{model: {endpoint: pass
    rate}}`` with models in order of first appearance (``model`` defaults to ``responses``).
    """
    item_rows = schemas.load_records(items_path, "eval-items")
    response_rows = schemas.load_records(responses_path, "scorable-responses")
    items = {row["id"]: world.Item.from_record(row) for row in item_rows}
    lines = _record_lines(responses_path)
    defects = [
        schemas.Defect(
            str(responses_path), line, "item_id",
            f"unknown item id {row['item_id']!r}: not an item of {items_path} ({len(items)} items)",
        )
        for line, row in zip(lines, response_rows)
        if row["item_id"] not in items
    ]
    if defects:
        raise schemas.InvalidInputError(defects, "scorable-responses")
    scored: list[dict[str, Any]] = []
    disagreements = 0
    for row in response_rows:
        item = items[row["item_id"]]
        if "raw_output" in row:
            response, emitted_end = template.split_output(row["raw_output"])
            if "response" in row and (response, emitted_end) != (row["response"].strip(), row.get("emitted_end")):
                disagreements += 1
        else:
            response, emitted_end = row["response"].strip(), row["emitted_end"]
        scores = score_response(item, response, emitted_end)
        scored.append({"model": row.get("model", "responses"), "item_id": item.id, "family": item.family, **scores})
    if disagreements:
        log.warning(
            "%s: %d response(s) whose stored response/emitted_end differ from template.split_output(raw_output); "
            "scored from raw_output", responses_path, disagreements,
        )
    files.write_jsonl(out_path, scored)
    summary: dict[str, dict[str, float | None]] = {}
    for model in dict.fromkeys(row["model"] for row in scored):
        summary[model] = rates([row for row in scored if row["model"] == model])
    log.info("scored %d responses of %d model(s) -> %s", len(scored), len(summary), out_path)
    return summary


__all__ = ["COMPOSITES", "CRITERIA", "DEFINITIONS", "ENDPOINTS", "FORMAT_CRITERIA", "OVERALL", "composites",
           "overall", "rates", "score_file", "score_record", "score_response"]
