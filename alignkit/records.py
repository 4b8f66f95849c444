"""Typed records of every JSON Lines file a stage reads, and the validators each stage calls on its inputs.

Five kinds, by the names ``alignkit validate FILE --kind KIND`` accepts (unique key in brackets):

- ``eval-items``: a held-out instruction with its reference answer [``id``]
- ``sft``: a verified SFT example and the generation that produced it [``id``]
- ``negatives``: a rejected response built from an SFT example [``id``]
- ``pairs``: a DPO preference pair: prompt, chosen, rejected [``id``]
- ``responses``: one model's generation for one evaluation item [``(model, item_id)``]

A stage calls :func:`load_records` at its boundary, before any compute: it reads the whole file, collects
*every* defect (not just the first) and raises :class:`InvalidInputError` naming ``FILE:LINE: field: problem``
for each. Nothing is repaired or replaced: a file with defects is refused as a whole. Fields not in a schema
are allowed (newer writers may add some) and kept in each record's ``extra``.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from alignkit import template
from alignkit.config import FAMILIES, NEGATIVE_TYPES

#: The task families of the embedded world (one definition, in :mod:`alignkit.config`).
KNOWN_FAMILIES: tuple[str, ...] = FAMILIES
#: The one family whose items have no reference answer (no factual-correctness check).
OPEN_ENDED_FAMILY = "open_ended"
#: The five kinds of rejected responses the negatives stage builds.

#: How many defects :class:`InvalidInputError`'s message lists before "... and N more".
MAX_DEFECTS_IN_MESSAGE = 20
#: Longest excerpt of a bad value quoted in a problem message, in characters.
_EXCERPT_CHARS = 80

# Field names for problems that are not about one field of a record.
FILE_FIELD = "<file>"
LINE_FIELD = "<line>"


@dataclass(frozen=True)
class Defect:
    """One problem in an input file, printed as ``FILE:LINE: field: problem``.

    ``line`` is 1-based; 0 means the file as a whole (e.g. an empty file).

    >>> str(Defect("pairs.jsonl", 3, "chosen", "missing"))
    'pairs.jsonl:3: chosen: missing'
    """

    file: str
    line: int
    field: str
    problem: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.problem}"


class InvalidInputError(ValueError):
    """An input file (or record) failed validation; ``.defects`` lists every problem found.

    The message lists the first :data:`MAX_DEFECTS_IN_MESSAGE` defects, one per line, then how many more.
    """

    def __init__(self, defects: list[Defect], kind: str | None = None) -> None:
        self.defects = list(defects)
        self.kind = kind
        what = f"{kind} input" if kind else "input"
        lines = [f"{len(self.defects)} defect(s) in {what}:"]
        lines += [str(defect) for defect in self.defects[:MAX_DEFECTS_IN_MESSAGE]]
        if len(self.defects) > MAX_DEFECTS_IN_MESSAGE:
            lines.append(f"... and {len(self.defects) - MAX_DEFECTS_IN_MESSAGE} more")
        super().__init__("\n".join(lines))


# --------------------------------------------------------------------------------------------------
# Pure text checks
# --------------------------------------------------------------------------------------------------


def has_literal_newline_escape(text: str) -> bool:
    """Whether ``text`` contains a backslash followed by ``n``: an escaped newline never unescaped.

    Such text trains a model to write the two characters ``\\`` ``n`` instead of a line break.

    >>> has_literal_newline_escape("line one\\\\nline two")
    True
    >>> has_literal_newline_escape("line one\\nline two")
    False
    """
    return "\\n" in text


def _excerpt(text: str) -> str:
    """``repr`` of ``text``, cut to about :data:`_EXCERPT_CHARS` characters.

    >>> _excerpt("abc")
    "'abc'"
    >>> len(_excerpt("x" * 500)) < 100
    True
    """
    if len(text) <= _EXCERPT_CHARS:
        return repr(text)
    return repr(text[:_EXCERPT_CHARS]) + f"... ({len(text)} chars)"


_LITERAL_NEWLINE_PROBLEM = (
    "contains a literal backslash-n (the two characters '\\' and 'n'); "
    "unescape it to a real newline or remove it"
)


def _tag_problems(text: str) -> list[str]:
    """One problem per template tag found in ``text``."""
    return [
        f"contains the template tag {tag!r}; the template adds tags, the text must not contain them"
        for tag in template.TEMPLATE_TAGS
        if tag in text
    ]


def _text_basics(text: str) -> list[str]:
    """Problems shared by every free-text field: empty, unstripped, literal backslash-n."""
    if not text.strip():
        return ["empty; expected non-empty text"]
    problems = []
    if text != text.strip():
        problems.append("has leading or trailing whitespace; expected it stripped")
    if has_literal_newline_escape(text):
        problems.append(_LITERAL_NEWLINE_PROBLEM)
    return problems


def instruction_problems(text: str) -> list[str]:
    """What is wrong with ``text`` as an instruction (empty list: nothing).

    An instruction is one stripped line without template tags or literal backslash-n.

    >>> instruction_problems("Add 2 and 3.")
    []
    >>> [problem.split(";")[0] for problem in instruction_problems("Add 2 and 3.\\nResponse: 5")]
    ['contains a newline', "contains the template tag 'Response:'"]
    """
    problems = _text_basics(text)
    if not text.strip():
        return problems
    if "\n" in text.strip() or "\r" in text.strip():
        problems.append("contains a newline; an instruction is a single line")
    return problems + _tag_problems(text)


def response_problems(text: str) -> list[str]:
    """What is wrong with ``text`` as a chosen/SFT response (empty list: nothing).

    A response is stripped, non-empty, free of template tags, the END marker line and literal backslash-n.

    >>> response_problems("5")
    []
    >>> response_problems("5\\nEND")
    ["contains '\\\\nEND'; the template adds the END marker, the response must not contain it"]
    """
    problems = _text_basics(text)
    if not text.strip():
        return problems
    problems += _tag_problems(text)
    if template.STOP_STRING in text:
        problems.append(
            f"contains {template.STOP_STRING!r}; the template adds the END marker, "
            "the response must not contain it"
        )
    return problems


# --------------------------------------------------------------------------------------------------
# Field-level checking machinery
# --------------------------------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    """The JSON-ish name of ``value``'s type as problems print it.

    >>> [_type_name(v) for v in ("a", 1, 1.5, True, None, [], {})]
    ['string', 'int', 'float', 'bool', 'null', 'list', 'object']
    """
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: bool is a subclass of int in Python, never in a schema
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


#: Expected type name -> predicate. ``int`` and ``number`` refuse bools; ``number`` accepts ints.
_TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": _is_number,
    "bool": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "list": lambda v: isinstance(v, list),
    "string or null": lambda v: v is None or isinstance(v, str),
    "number or null": lambda v: v is None or _is_number(v),
}

#: Returned by :meth:`_Checker.get` for a field that is missing or of the wrong type (already reported).
_INVALID: Any = object()


class _Checker:
    """Collects ``(field, problem)`` pairs for one JSON object; ``prefix`` names nested objects."""

    def __init__(self, obj: Mapping[str, Any], problems: list[tuple[str, str]], prefix: str = "") -> None:
        self.obj = obj
        self.problems = problems
        self.prefix = prefix

    def add(self, name: str, problem: str) -> None:
        self.problems.append((self.prefix + name, problem))

    def get(self, name: str, expected: str) -> Any:
        """The field's value if present and of type ``expected``; otherwise report and return ``_INVALID``."""
        if name not in self.obj:
            self.add(name, "missing")
            return _INVALID
        value = self.obj[name]
        if not _TYPE_CHECKS[expected](value):
            self.add(name, f"expected {expected}, got {_type_name(value)}")
            return _INVALID
        if isinstance(value, float) and not math.isfinite(value):
            self.add(name, f"expected a finite number, got {value}")
            return _INVALID
        return value

    def text(self, name: str, rules: Callable[[str], list[str]] = _text_basics) -> Any:
        """A string field checked by ``rules``; returns the value only if it has no problem."""
        value = self.get(name, "string")
        if value is _INVALID:
            return _INVALID
        problems = rules(value)
        for problem in problems:
            self.add(name, problem)
        return _INVALID if problems else value

    def choice(self, name: str, allowed: tuple[str, ...]) -> Any:
        """A string field that must be one of ``allowed``."""
        value = self.get(name, "string")
        if value is _INVALID:
            return _INVALID
        if value not in allowed:
            self.add(name, f"expected one of {', '.join(allowed)}; got {_excerpt(value)}")
            return _INVALID
        return value

    def equals_template(self, name: str, expected: str, how: str) -> None:
        """Report ``name`` unless it is a string equal to ``expected`` (what ``how`` builds)."""
        value = self.get(name, "string")
        if value is not _INVALID and value != expected:
            self.add(name, f"does not match {how}; expected {_excerpt(expected)}, got {_excerpt(value)}")


# --------------------------------------------------------------------------------------------------
# Per-kind schemas
# --------------------------------------------------------------------------------------------------


def _check_instruction_and_prompt(c: _Checker) -> None:
    """``instruction`` (one clean line) and ``prompt`` == ``template.prompt(instruction)``."""
    instruction = c.text("instruction", instruction_problems)
    if instruction is _INVALID:
        c.get("prompt", "string")  # still report a missing/mistyped prompt
        return
    c.equals_template("prompt", template.prompt(instruction), "template.prompt(instruction)")


def _check_eval_item(c: _Checker) -> None:
    c.text("id")
    family = c.choice("family", KNOWN_FAMILIES)
    c.text("instruction", instruction_problems)
    reference = c.get("reference", "string or null")
    if reference is None and family is not _INVALID and family != OPEN_ENDED_FAMILY:
        c.add(
            "reference",
            f"null is only allowed for the {OPEN_ENDED_FAMILY} family; "
            f"family {family!r} needs a reference answer",
        )
    elif isinstance(reference, str) and not reference.strip():
        c.add("reference", "empty; expected the reference answer (or null for open_ended)")
    c.get("params", "object")


def _check_sft(c: _Checker) -> None:
    c.text("id")
    c.choice("family", KNOWN_FAMILIES)
    _check_instruction_and_prompt(c)
    response = c.text("response", response_problems)
    if response is _INVALID:
        c.get("completion", "string")
    else:
        c.equals_template("completion", template.completion(response), "template.completion(response)")
    generation = c.get("generation", "object")
    if generation is _INVALID:
        return
    g = _Checker(generation, c.problems, prefix=c.prefix + "generation.")
    g.text("prompt", lambda text: [] if text.strip() else ["empty; expected the exact prompt sent"])
    raw_output = g.get("raw_output", "string")
    attempt = g.get("attempt", "int")
    if attempt is not _INVALID and attempt < 1:
        g.add("attempt", f"must be >= 1 (attempts count from 1), got {attempt}")
    g.get("sampling", "object")
    # Nothing invented (DESIGN §9): the stored response must be text the model actually generated.
    if response is not _INVALID and raw_output is not _INVALID and response not in raw_output:
        c.add(
            "response",
            "not found in generation.raw_output; every SFT response must be text the model generated",
        )


def _negative_response_problems(text: str) -> list[str]:
    """Negatives may carry template residue on purpose (``format`` negatives), so only the basics apply, and the
    END line: generation stops at the first one, so no model output has text after it."""
    problems = _text_basics(text)
    if template.STOP_STRING in text:
        problems.append(f"contains {template.STOP_STRING!r}; generation stops at END, and the completion adds it "
                        "when the model wrote it (emitted_end)")
    return problems


#: Negative types whose defect may be the missing END: a format or verbose negative is kept exactly as the model
#: produced it, run-on included, cut at the token limit when it never wrote END.
END_LESS_TYPES = ("format", "verbose")


def _check_negative(c: _Checker) -> None:
    c.text("id")
    c.text("sft_id")
    c.choice("family", KNOWN_FAMILIES)
    _check_instruction_and_prompt(c)
    negative_type = c.choice("type", NEGATIVE_TYPES)
    c.text("method")
    emitted_end = c.get("emitted_end", "bool")
    response = c.text("response", _negative_response_problems)
    if emitted_end is False and negative_type is not _INVALID and negative_type not in END_LESS_TYPES:
        c.add("emitted_end", f"false is only allowed for types {', '.join(END_LESS_TYPES)} (a missing END is their "
                             f"defect); a {negative_type} negative must end with END")
    if response is _INVALID or emitted_end is _INVALID:
        c.get("completion", "string")
    elif emitted_end:
        c.equals_template("completion", template.completion(response), "template.completion(response)")
    else:
        c.equals_template("completion", " " + response.strip(), "' ' + response (no END: as generated)")
    criteria = c.get("failed_criteria", "list")
    if criteria is _INVALID:
        return
    if not criteria:
        c.add("failed_criteria", "empty list; expected the names of the criteria this negative fails")
    for index, name in enumerate(criteria):
        if not isinstance(name, str):
            c.add(f"failed_criteria[{index}]", f"expected string, got {_type_name(name)}")
        elif not name.strip():
            c.add(f"failed_criteria[{index}]", "empty; expected a criterion name")


_PROMPT_HEAD = template.INSTRUCTION_TAG + " "
_PROMPT_TAIL = "\n" + template.RESPONSE_TAG


def _pair_prompt_problems(text: str) -> list[str]:
    """A pair's prompt must be one built by ``template.prompt``.

    >>> _pair_prompt_problems("Instruction: Add 2 and 3.\\nResponse:")
    []
    """
    problems = []
    if not text.startswith(_PROMPT_HEAD):
        problems.append(f"must start with {_PROMPT_HEAD!r}; got {_excerpt(text[:40])}")
    if not text.endswith(_PROMPT_TAIL):
        problems.append(f"must end with {_PROMPT_TAIL!r}; got {_excerpt(text[-40:])}")
    if not problems and not text[len(_PROMPT_HEAD) : -len(_PROMPT_TAIL)].strip():
        problems.append("has an empty instruction")
    if has_literal_newline_escape(text):
        problems.append(_LITERAL_NEWLINE_PROBLEM)
    return problems


def _pair_completion_problems(text: str, allow_tags: bool = False, allow_no_end: bool = False) -> list[str]:
    """A pair's chosen/rejected must be one built by ``template.completion``: ``" {response}\\nEND"``.

    ``allow_tags`` is for ``rejected``: a ``format`` negative leaks template text on purpose. ``allow_no_end`` is
    for the rejected side of :data:`END_LESS_TYPES`: ``" {text}"`` as generated, without END anywhere.

    >>> _pair_completion_problems(" 5\\nEND")
    []
    >>> _pair_completion_problems("5")
    ["must start with ' ' (template.completion adds one space)", "must end with '\\\\nEND'"]
    """
    problems = []
    if not text.startswith(" "):
        problems.append("must start with ' ' (template.completion adds one space)")
    if allow_no_end and not text.endswith(template.STOP_STRING):
        if template.STOP_STRING in text:
            problems.append(f"contains {template.STOP_STRING!r} but does not end with it; generation stops there")
        if not text.strip():
            problems.append("empty response after ' '")
        if has_literal_newline_escape(text):
            problems.append(_LITERAL_NEWLINE_PROBLEM)
        return problems
    if not text.endswith(template.STOP_STRING):
        problems.append(f"must end with {template.STOP_STRING!r}")
    if problems:
        return problems + ([_LITERAL_NEWLINE_PROBLEM] if has_literal_newline_escape(text) else [])
    body = text[1 : -len(template.STOP_STRING)]
    if not body.strip():
        problems.append(f"empty response between ' ' and {template.STOP_STRING!r}")
    if template.STOP_STRING in body:
        problems.append(f"contains {template.STOP_STRING!r} before its end; generation stops at the first END")
    if has_literal_newline_escape(text):
        problems.append(_LITERAL_NEWLINE_PROBLEM)
    return problems + ([] if allow_tags else _tag_problems(body))


def _check_pair(c: _Checker) -> None:
    c.text("id")
    c.text("sft_id")
    c.choice("family", KNOWN_FAMILIES)
    negative_type = c.choice("negative_type", NEGATIVE_TYPES)
    c.text("prompt", _pair_prompt_problems)
    chosen = c.text("chosen", _pair_completion_problems)
    no_end = negative_type in END_LESS_TYPES
    rejected = c.text("rejected", lambda text: _pair_completion_problems(text, allow_tags=True, allow_no_end=no_end))
    if chosen is not _INVALID and rejected is not _INVALID and chosen.strip() == rejected.strip():
        c.add("rejected", "identical to chosen; a preference pair needs two different responses")
    c.text("chosen_source")
    c.get("margin", "number or null")


def _check_response(c: _Checker) -> None:
    c.text("model", lambda text: [] if text.strip() else ["empty; expected the model's name"])
    c.text("item_id", lambda text: [] if text.strip() else ["empty; expected the evaluation item's id"])
    c.text("prompt", lambda text: [] if text.strip() else ["empty; expected the exact prompt sent"])
    c.get("raw_output", "string")
    c.get("response", "string")
    c.get("emitted_end", "bool")
    if "seed" in c.obj and c.obj["seed"] is not None and (isinstance(c.obj["seed"], bool)
                                                          or not isinstance(c.obj["seed"], int)):
        c.add("seed", f"expected an integer training seed or null (an untrained arm); got {c.obj['seed']!r}")
    for name in ("prompt_tokens", "output_tokens"):
        count = c.get(name, "int")
        if count is not _INVALID and count < 0:
            c.add(name, f"must be >= 0, got {count}")


def _check_scorable(c: _Checker) -> None:
    """``alignkit score`` input: any system's answers need only ``item_id`` and the text, as ``raw_output`` (END
    found in it) or as ``response`` with ``emitted_end``; ``model`` (default ``responses``) and ``seed`` optional."""
    c.text("item_id", lambda text: [] if text.strip() else ["empty; expected the evaluation item's id"])
    has_raw, has_response = "raw_output" in c.obj, "response" in c.obj
    if has_raw:
        c.get("raw_output", "string")
    if not has_raw and not has_response:
        c.add("raw_output", "missing; give raw_output (the text as generated) or response with emitted_end")
    if not has_raw and has_response:
        c.get("response", "string")
        c.get("emitted_end", "bool")
    if "model" in c.obj:
        c.text("model", lambda text: [] if text.strip() else ["empty; expected a model name"])


_SCHEMAS: dict[str, Callable[[_Checker], None]] = {
    "eval-items": _check_eval_item,
    "sft": _check_sft,
    "negatives": _check_negative,
    "pairs": _check_pair,
    "responses": _check_response,
    "scorable-responses": _check_scorable,
}

#: Fields whose values together must be unique within one file, per kind.
UNIQUE_KEYS: dict[str, tuple[str, ...]] = {
    "eval-items": ("id",),
    "sft": ("id",),
    "negatives": ("id",),
    "pairs": ("id",),
    "responses": ("model", "seed", "item_id"),
    "scorable-responses": ("model", "seed", "item_id"),
}


def _require_kind(kind: str) -> None:
    if kind not in _SCHEMAS:
        raise ValueError(f"unknown record kind {kind!r}; expected one of {', '.join(_SCHEMAS)}")


def check_record(kind: str, obj: Any) -> list[tuple[str, str]]:
    """Every ``(field, problem)`` of one parsed JSON object against ``kind``'s schema; empty if valid.

    Nested fields are named with dots (``generation.attempt``), list items with brackets.

    >>> check_record("responses", {"model": "base", "item_id": "a1", "prompt": "Instruction: x\\nResponse:",
    ...     "raw_output": " 5\\nEND", "response": "5", "emitted_end": True, "prompt_tokens": 7,
    ...     "output_tokens": True})
    [('output_tokens', 'expected int, got bool')]
    """
    _require_kind(kind)
    if not isinstance(obj, dict):
        return [(LINE_FIELD, f"expected a JSON object, got {_type_name(obj)}")]
    problems: list[tuple[str, str]] = []
    _SCHEMAS[kind](_Checker(obj, problems))
    return problems


# --------------------------------------------------------------------------------------------------
# Typed records
# --------------------------------------------------------------------------------------------------


def _split_extra(obj: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {key: value for key, value in obj.items() if key not in names}


class _Fields:
    """Shared building and ``to_dict`` for the dataclasses below (schema fields named in ``FIELDS``)."""

    FIELDS: ClassVar[tuple[str, ...]]

    @classmethod
    def _build(cls, obj: Mapping[str, Any]) -> Any:
        return cls(**{name: obj[name] for name in cls.FIELDS}, extra=_split_extra(obj, cls.FIELDS))

    def to_dict(self) -> dict[str, Any]:
        """The JSON object this record was read from (extra fields included)."""
        out = dict(getattr(self, "extra"))
        out.update({name: getattr(self, name) for name in self.FIELDS})
        return out


class _Record(_Fields):
    """A top-level record of kind ``KIND``, built only from an object that passes :func:`check_record`."""

    KIND: ClassVar[str]

    @classmethod
    def from_dict(cls, obj: Any, *, file: str = "<record>", line: int = 0) -> Any:
        """Validate ``obj`` and build the record; raises :class:`InvalidInputError` with every problem."""
        problems = check_record(cls.KIND, obj)
        if problems:
            defects = [Defect(file, line, name, problem) for name, problem in problems]
            raise InvalidInputError(defects, cls.KIND)
        return cls._build(obj)


@dataclass(frozen=True)
class EvalItem(_Record):
    """A held-out evaluation instruction; ``reference`` is None only for the open_ended family."""

    KIND: ClassVar[str] = "eval-items"
    FIELDS: ClassVar[tuple[str, ...]] = ("id", "family", "instruction", "reference", "params")

    id: str
    family: str
    instruction: str
    reference: str | None
    params: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Generation(_Fields):
    """How an SFT response was produced: the exact (few-shot) prompt sent, the raw output, the attempt."""

    FIELDS: ClassVar[tuple[str, ...]] = ("prompt", "raw_output", "attempt", "sampling")

    prompt: str
    raw_output: str
    attempt: int
    sampling: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SFTExample(_Record):
    """A verified SFT example: ``prompt``/``completion`` are exactly the template applied to the texts."""

    KIND: ClassVar[str] = "sft"
    FIELDS: ClassVar[tuple[str, ...]] = (
        "id", "family", "instruction", "prompt", "response", "completion", "generation",
    )

    id: str
    family: str
    instruction: str
    prompt: str
    response: str
    completion: str
    generation: Generation
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def _build(cls, obj: Mapping[str, Any]) -> SFTExample:
        values = {name: obj[name] for name in cls.FIELDS}
        values["generation"] = Generation._build(obj["generation"])
        return cls(**values, extra=_split_extra(obj, cls.FIELDS))

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["generation"] = self.generation.to_dict()
        return out


@dataclass(frozen=True)
class Negative(_Record):
    """A rejected response for the SFT example ``sft_id``, of one of :data:`NEGATIVE_TYPES`."""

    KIND: ClassVar[str] = "negatives"
    FIELDS: ClassVar[tuple[str, ...]] = (
        "id", "sft_id", "family", "instruction", "prompt", "type", "method", "emitted_end", "response",
        "completion", "failed_criteria",
    )

    id: str
    sft_id: str
    family: str
    instruction: str
    prompt: str
    type: str
    method: str
    emitted_end: bool
    response: str
    completion: str
    failed_criteria: list[str]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PreferencePair(_Record):
    """A DPO pair: ``prompt`` as ``template.prompt`` builds it, ``chosen``/``rejected`` as ``completion``."""

    KIND: ClassVar[str] = "pairs"
    FIELDS: ClassVar[tuple[str, ...]] = (
        "id", "sft_id", "family", "negative_type", "prompt", "chosen", "rejected", "chosen_source", "margin",
    )

    id: str
    sft_id: str
    family: str
    negative_type: str
    prompt: str
    chosen: str
    rejected: str
    chosen_source: str
    margin: float | None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelResponse(_Record):
    """One model's generation for one evaluation item, as generated (``raw_output``) and split."""

    KIND: ClassVar[str] = "responses"
    FIELDS: ClassVar[tuple[str, ...]] = (
        "model", "item_id", "prompt", "raw_output", "response", "emitted_end",
        "prompt_tokens", "output_tokens",
    )

    model: str
    item_id: str
    prompt: str
    raw_output: str
    response: str
    emitted_end: bool
    prompt_tokens: int
    output_tokens: int
    extra: dict[str, Any] = field(default_factory=dict)


#: Kind name (as the CLI spells it) -> record class.
KINDS: dict[str, type] = {
    "eval-items": EvalItem,
    "sft": SFTExample,
    "negatives": Negative,
    "pairs": PreferencePair,
    "responses": ModelResponse,
}


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


class _JSONRuleError(ValueError):
    """A line that Python's ``json`` would accept but JSON (or we) do not: NaN/Infinity, repeated keys."""


def _object_without_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json`` hook: a key given twice in one object would silently keep the last value, so refuse it."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _JSONRuleError(f"key {key!r} appears twice in one object")
        out[key] = value
    return out


def _refuse_constant(name: str) -> Any:
    raise _JSONRuleError(f"{name} is not valid JSON; write a number or null")


def _parse_line(raw: bytes) -> tuple[Any, str | None]:
    """Decode and parse one line's bytes; returns ``(value, None)`` or ``(None, problem)``."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return None, (
            f"not valid UTF-8: byte 0x{raw[error.start]:02x} at column {error.start + 1}; "
            "re-save the file as UTF-8"
        )
    try:
        return json.loads(
            text, object_pairs_hook=_object_without_duplicate_keys, parse_constant=_refuse_constant
        ), None
    except _JSONRuleError as error:
        return None, f"not valid JSON: {error}"
    except json.JSONDecodeError as error:
        return None, f"not valid JSON: {error.msg} at column {error.colno}"
    except RecursionError:
        return None, "not valid JSON for a record: nested too deeply"


def _unique_key(kind: str, obj: dict[str, Any]) -> tuple[str, ...] | None:
    """The values of ``kind``'s unique fields; None if any is not a non-empty string (reported elsewhere)."""
    values = tuple(obj.get(name) for name in UNIQUE_KEYS[kind])
    # ``seed`` (responses) is an integer, or null/absent for an untrained arm; the other fields are strings.
    if all(isinstance(value, str) and value.strip() for name, value in zip(UNIQUE_KEYS[kind], values)
           if name != "seed"):
        return tuple("" if value is None else str(value) for value in values)
    return None


def validate_file(path: str | os.PathLike, kind: str) -> tuple[list[dict], list[Defect]]:
    """Parse and check every line of the JSON Lines file ``path`` as records of ``kind``.

    Returns ``(rows, defects)``: ``rows`` are the objects of the lines without any defect, in file order;
    ``defects`` are all problems, in line order — per-line UTF-8/JSON/schema problems, repeated unique keys
    (reported on every line after the first), and an empty file (line 0, field ``<file>``). Blank lines are
    skipped. Raises ``FileNotFoundError`` if ``path`` does not exist and ``ValueError`` for an unknown kind.
    """
    _require_kind(kind)
    name = str(path)
    data = Path(path).read_bytes()
    rows: list[dict] = []
    defects: list[Defect] = []
    first_line_of: dict[tuple[str, ...], int] = {}
    seen_lines = 0
    for line_number, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.removesuffix(b"\r")  # tolerate Windows line ends
        if not raw.strip():
            continue
        seen_lines += 1
        obj, problem = _parse_line(raw)
        if problem is not None:
            defects.append(Defect(name, line_number, LINE_FIELD, problem))
            continue
        line_defects = [Defect(name, line_number, f, p) for f, p in check_record(kind, obj)]
        if isinstance(obj, dict):
            key = _unique_key(kind, obj)
            if key is not None and key in first_line_of:
                fields = UNIQUE_KEYS[kind]
                shown = repr(key[0]) if len(key) == 1 else repr(key)
                label = fields[0] if len(fields) == 1 else "(" + ", ".join(fields) + ")"
                line_defects.append(
                    Defect(name, line_number, fields[-1],
                           f"duplicate {label} {shown}; first on line {first_line_of[key]}")
                )
            elif key is not None:
                first_line_of[key] = line_number
        if line_defects:
            defects.extend(line_defects)
        else:
            rows.append(obj)
    if seen_lines == 0:
        defects.append(Defect(name, 0, FILE_FIELD, f"empty file: no {kind} records"))
    return rows, defects


def load_records(path: str | os.PathLike, kind: str) -> list[dict]:
    """The rows of ``path`` if every line is a valid ``kind`` record, else raise :class:`InvalidInputError`.

    Stages call this on each input at their boundary, before any compute.
    """
    rows, defects = validate_file(path, kind)
    if defects:
        raise InvalidInputError(defects, kind)
    return rows


#: How many defects ``alignkit validate`` prints before one line counting the rest.
MAX_DEFECTS_PRINTED = MAX_DEFECTS_IN_MESSAGE


def _summarise_hidden(defects: list[Defect]) -> str:
    """The line that stands for defects not printed: how many, on how many lines.

    >>> _summarise_hidden([Defect("f", 3, "id", "missing"), Defect("f", 3, "x", "bad"), Defect("f", 9, "y", "bad")])
    '... and 3 more defects (2 lines affected)'
    >>> _summarise_hidden([Defect("f", 3, "id", "missing")])
    '... and 1 more defect (1 line affected)'
    """
    lines = len({defect.line for defect in defects})
    plural = "s" if len(defects) != 1 else ""
    return f"... and {len(defects)} more defect{plural} ({lines} line{'s' if lines != 1 else ''} affected)"


def kind_hint(path: str | os.PathLike, kind: str, valid: int, lines: int) -> str | None:
    """When most of a file's ``lines`` are not valid ``kind`` records (``valid`` are), which ``--kind`` it looks
    like: the other kind under which most lines are valid, or a line saying none is; None when most are valid.
    """
    if lines == 0 or valid * 2 >= lines:
        return None
    scores = {other: len(validate_file(path, other)[0]) for other in KINDS if other != kind}
    best = max(scores, key=scores.__getitem__)  # on a tie, the first in KINDS order
    if scores[best] * 2 > lines:
        return (f"this file looks like kind {best!r}: {scores[best]} of {lines} lines are valid {best} records; "
                f"run: alignkit validate {shlex.quote(str(path))} --kind {best}")
    return (f"it does not look like another kind either: at most {scores[best]} of {lines} lines are valid as "
            f"any other kind ({', '.join(scores)}); check how the file was written")


def validate_command(path: str | os.PathLike, kind: str) -> int:
    """``alignkit validate FILE --kind KIND``: print the defects and a summary; return the exit code.

    Defects go to stderr as ``FILE:LINE: field: problem``, the first :data:`MAX_DEFECTS_PRINTED` of them and
    then one line counting the rest, then ``invalid: ...``; when most lines are invalid, a last line says which
    ``--kind`` the file looks like (:func:`kind_hint`). A valid file prints ``ok: N KIND records in FILE`` to
    stdout. Exit code 0 valid, 1 invalid, 2 missing/unreadable file or unknown kind.
    """
    if kind not in KINDS:
        print(f"error: unknown kind {kind!r}; expected one of {', '.join(KINDS)}", file=sys.stderr)
        return 2
    try:
        rows, defects = validate_file(path, kind)
    except FileNotFoundError:
        print(f"error: {path}: no such file", file=sys.stderr)
        return 2
    except IsADirectoryError:
        print(f"error: {path}: is a directory, expected a JSON Lines file", file=sys.stderr)
        return 2
    except PermissionError:
        print(f"error: {path}: permission denied", file=sys.stderr)
        return 2
    if not defects:
        print(f"ok: {len(rows)} {kind} records in {path}")
        return 0
    for defect in defects[:MAX_DEFECTS_PRINTED]:
        print(defect, file=sys.stderr)
    if len(defects) > MAX_DEFECTS_PRINTED:
        print(_summarise_hidden(defects[MAX_DEFECTS_PRINTED:]), file=sys.stderr)
    bad_lines = len({defect.line for defect in defects if defect.line > 0})
    print(
        f"invalid: {len(defects)} defect(s) on {bad_lines} line(s) in {path} "
        f"({len(rows)} valid {kind} record(s))",
        file=sys.stderr,
    )
    # Every non-blank line is either a valid row or has a defect (line 0 is the file as a whole).
    hint = kind_hint(path, kind, len(rows), len(rows) + bad_lines)
    if hint:
        print(hint, file=sys.stderr)
    return 1
