"""The machinery under :mod:`alignkit.schemas`: strict pydantic records, their defects, JSON Lines files.

Nothing here knows a record kind; :mod:`alignkit.schemas` declares the kinds and is what stages and the CLI
call. Here:

- what a defect is (:class:`Defect`, ``FILE:LINE: field: problem``) and the error listing them;
- :class:`StrictModel` / :class:`Record`, the base of every record model (strict types, ``extra="forbid"``,
  frozen), validators that raise alignkit's own problems (:func:`refuse`, :func:`rule`), and pydantic's
  errors turned into ``(field, problem)`` pairs naming the field and what was expected (:func:`validate_object`);
- parsing one line (UTF-8, JSON without NaN or repeated keys), collecting every defect of a file
  (:func:`check_file`), and what ``alignkit validate`` prints (:func:`validate_command`).
"""

from __future__ import annotations

import difflib
import json
import os
import shlex
import sys
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticCustomError

#: How many defects :class:`InvalidInputError`'s message lists before "... and N more".
MAX_DEFECTS_IN_MESSAGE = 20
#: How many defects ``alignkit validate`` prints before one line counting the rest.
MAX_DEFECTS_PRINTED = MAX_DEFECTS_IN_MESSAGE

#: Longest excerpt of a bad value quoted in a problem message, in characters.
EXCERPT_CHARS = 80
# Field names for problems that are not about one field of a record.
FILE_FIELD = "<file>"
LINE_FIELD = "<line>"

#: One parsed JSON value -> its ``(field, problem)`` pairs (empty: valid).
Check = Callable[[Any], "list[tuple[str, str]]"]
#: One parsed JSON object -> the values that must be unique within the file (None: no usable key).
KeyOf = Callable[[dict], "tuple[str, ...] | None"]


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

    >>> print(InvalidInputError([Defect("f.jsonl", 2, "id", "missing")], "sft"))
    1 defect(s) in sft input:
    f.jsonl:2: id: missing
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


def excerpt(text: str) -> str:
    """``repr`` of ``text``, cut to about :data:`EXCERPT_CHARS` characters.

    >>> excerpt("abc")
    "'abc'"
    >>> len(excerpt("x" * 500)) < 100
    True
    """
    if len(text) <= EXCERPT_CHARS:
        return repr(text)
    return repr(text[:EXCERPT_CHARS]) + f"... ({len(text)} chars)"


def type_name(value: Any) -> str:
    """The JSON name of ``value``'s type as problems print it.

    >>> [type_name(v) for v in ("a", 1, 1.5, True, None, [], {})]
    ['string', 'int', 'float', 'bool', 'null', 'list', 'object']
    """
    if value is None:
        return "null"
    for kind, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "string"), (list, "list"),
                       (dict, "object")):  # bool before int: a bool is an int in Python, never in a schema
        if isinstance(value, kind):
            return name
    return type(value).__name__


# --------------------------------------------------------------------------------------------------
# Strict records and validators with alignkit's own problems
# --------------------------------------------------------------------------------------------------

_RULE = "alignkit_rule"


def refuse(*problems: str, field: str | None = None) -> PydanticCustomError:
    """The error a validator raises: one or more problems of its field, or of ``field``, a sibling field (from a
    model-level validator: a field of that model)."""
    return PydanticCustomError(_RULE, "{summary}", {"summary": "; ".join(problems), "field": field,
                                                    "problems": list(problems)})


def rule(check: Callable[[Any], list[str]]) -> AfterValidator:
    """A validator refusing a value for which ``check(value)`` returns problems (one defect each)."""
    def validate(value: Any) -> Any:
        problems = check(value)
        if problems:
            raise refuse(*problems)
        return value
    return AfterValidator(validate)


def non_empty(problem: str) -> AfterValidator:
    """A string that is not only whitespace; ``problem`` says what was expected."""
    return rule(lambda text: [] if text.strip() else [problem])


def at_least(low: int, why: str = "") -> AfterValidator:
    """A number >= ``low``; ``why`` (e.g. ``" (attempts count from 1)"``) is added to the problem."""
    return rule(lambda n: [] if n >= low else [f"must be >= {low}{why}, got {n}"])


class StrictModel(BaseModel):
    """Strict (no coercion: ``true`` is not an int), closed (``extra="forbid"``), frozen, finite floats."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object this record was read from (fields that were absent stay absent)."""
        return self.model_dump(exclude_unset=True)


class Record(StrictModel):
    """A top-level record of kind ``KIND``."""

    KIND: ClassVar[str]

    @classmethod
    def from_dict(cls, obj: Any, *, file: str = "<record>", line: int = 0) -> Any:
        """Validate ``obj`` and build the record; raises :class:`InvalidInputError` with every problem."""
        record, problems = validate_object(cls, obj)
        if problems:
            raise InvalidInputError([Defect(file, line, name, problem) for name, problem in problems], cls.KIND)
        return record


def _strip_annotated(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _annotation_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> Any:
    """The declared type at pydantic location ``loc`` in ``model`` (None where there is none)."""
    annotation: Any = model
    for part in loc:
        annotation = _strip_annotated(annotation)
        if isinstance(part, int):
            annotation = (get_args(annotation) or (Any,))[0]
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel) and part in annotation.model_fields:
            annotation = annotation.model_fields[part].annotation
        else:
            return None
    return _strip_annotated(annotation)


_TYPE_NAMES = {str: "string", int: "int", float: "number", bool: "bool", dict: "object", list: "list",
               type(None): "null"}


def _expected(annotation: Any) -> str:
    """How a problem names the type ``annotation``: ``Optional[float]`` -> ``number or null``."""
    annotation = _strip_annotated(annotation)
    if get_origin(annotation) in (Union, types.UnionType):
        return " or ".join(_expected(arg) for arg in get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object"
    return _TYPE_NAMES.get(get_origin(annotation) or annotation, str(annotation))


def _field_name(loc: tuple[str | int, ...]) -> str:
    """``("generation", "attempt")`` -> ``generation.attempt``; ``("failed_criteria", 1)`` -> ``failed_criteria[1]``."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".") or LINE_FIELD


def _unknown_field(model: type[BaseModel], loc: tuple[str | int, ...]) -> str:
    owner = _annotation_at(model, loc[:-1])
    fields = list(owner.model_fields) if isinstance(owner, type) and issubclass(owner, BaseModel) else []
    kind = getattr(owner, "KIND", None)
    what = f"{kind} records have" if isinstance(kind, str) else f"{_field_name(loc[:-1])} has"
    close = difflib.get_close_matches(str(loc[-1]), fields, n=1)
    hint = f"did you mean {close[0]!r}? " if close else "remove it or correct its name; "
    return f"unknown field; {hint}{what} only the fields {', '.join(fields)}"


def _problem(model: type[BaseModel], error: Any) -> str:
    kind, value, loc = error["type"], error["input"], tuple(error["loc"])
    annotation = _annotation_at(model, loc)
    if kind == "missing":
        return "missing"
    if kind == "extra_forbidden":
        return _unknown_field(model, loc)
    if kind == "finite_number":
        return f"expected a finite number, got {value}"
    if get_origin(annotation) is Literal:  # an enum of strings
        if not isinstance(value, str):
            return f"expected string, got {type_name(value)}"
        return f"expected one of {', '.join(get_args(annotation))}; got {excerpt(value)}"
    if kind.endswith("_type") and annotation is not None:
        return f"expected {_expected(annotation)}, got {type_name(value)}"
    return f"{error['msg']}; got {type_name(value)}"


def _problems(model: type[BaseModel], error: ValidationError) -> list[tuple[str, str]]:
    """Every ``(field, problem)`` of a pydantic ``error`` raised by ``model``, in pydantic's (field) order."""
    out: list[tuple[str, str]] = []
    for item in error.errors(include_url=False):
        loc = tuple(item["loc"])
        if item["type"] == _RULE:
            ctx = item["ctx"]
            name = _field_name(loc[:-1] + (ctx["field"],) if ctx["field"] else loc)
            out += [(name, problem) for problem in ctx["problems"]]
        else:
            out.append((_field_name(loc), _problem(model, item)))
    return out


def validate_object(model: type[BaseModel], obj: Any) -> tuple[Any, list[tuple[str, str]]]:
    """``(model instance, [])`` for a valid JSON object, else ``(None, every (field, problem))``.

    Nested fields are named with dots (``generation.attempt``), list items with brackets, a value that is not
    an object at all ``<line>``.
    """
    if not isinstance(obj, dict):
        return None, [(LINE_FIELD, f"expected a JSON object, got {type_name(obj)}")]
    try:
        return model.model_validate(obj), []
    except ValidationError as error:
        return None, _problems(model, error)


# --------------------------------------------------------------------------------------------------
# One line
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


def parse_line(raw: bytes) -> tuple[Any, str | None]:
    """Decode and parse one line's bytes; returns ``(value, None)`` or ``(None, problem)``.

    >>> parse_line(b'{"a": 1}')
    ({'a': 1}, None)
    >>> parse_line(b'{"a": 1, "a": 2}')
    (None, "not valid JSON: key 'a' appears twice in one object")
    >>> parse_line(b'{"a": NaN}')[1]
    'not valid JSON: NaN is not valid JSON; write a number or null'
    """
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


# --------------------------------------------------------------------------------------------------
# One file
# --------------------------------------------------------------------------------------------------


def check_file(path: str | os.PathLike, kind: str, check: Check, key_of: KeyOf,
               key_fields: tuple[str, ...]) -> tuple[list[dict], list[Defect]]:
    """Parse every line of the JSON Lines file ``path`` and ``check`` each as a ``kind`` record.

    Returns ``(rows, defects)``: ``rows`` are the objects of the lines without any defect, in file order;
    ``defects`` are all problems, in line order: per-line UTF-8/JSON/schema problems, repeated unique keys
    (``key_of``; reported on every line after the first, under the last of ``key_fields``), and an empty file
    (line 0, field ``<file>``). Blank lines are skipped, ``\\r\\n`` line ends tolerated. Raises
    ``FileNotFoundError`` if ``path`` does not exist.
    """
    name = str(path)
    data = Path(path).read_bytes()
    rows: list[dict] = []
    defects: list[Defect] = []
    first_line_of: dict[tuple[str, ...], int] = {}
    seen_lines = 0
    for line_number, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.removesuffix(b"\r")
        if not raw.strip():
            continue
        seen_lines += 1
        obj, problem = parse_line(raw)
        if problem is not None:
            defects.append(Defect(name, line_number, LINE_FIELD, problem))
            continue
        line_defects = [Defect(name, line_number, f, p) for f, p in check(obj)]
        if isinstance(obj, dict):
            key = key_of(obj)
            if key is not None and key in first_line_of:
                shown = repr(key[0]) if len(key) == 1 else repr(key)
                label = key_fields[0] if len(key_fields) == 1 else "(" + ", ".join(key_fields) + ")"
                line_defects.append(Defect(name, line_number, key_fields[-1],
                                           f"duplicate {label} {shown}; first on line {first_line_of[key]}"))
            elif key is not None:
                first_line_of[key] = line_number
        if line_defects:
            defects.extend(line_defects)
        else:
            rows.append(obj)
    if seen_lines == 0:
        defects.append(Defect(name, 0, FILE_FIELD, f"empty file: no {kind} records"))
    return rows, defects


# --------------------------------------------------------------------------------------------------
# alignkit validate FILE --kind KIND
# --------------------------------------------------------------------------------------------------

#: ``validate(path, kind) -> (rows, defects)``, e.g. :func:`alignkit.schemas.validate_file`.
Validate = Callable[[str | os.PathLike, str], "tuple[list[dict], list[Defect]]"]


def summarise_hidden(defects: list[Defect]) -> str:
    """The line that stands for defects not printed: how many, on how many lines.

    >>> summarise_hidden([Defect("f", 3, "id", "missing"), Defect("f", 3, "x", "bad"), Defect("f", 9, "y", "bad")])
    '... and 3 more defects (2 lines affected)'
    >>> summarise_hidden([Defect("f", 3, "id", "missing")])
    '... and 1 more defect (1 line affected)'
    """
    lines = len({defect.line for defect in defects})
    plural = "s" if len(defects) != 1 else ""
    return f"... and {len(defects)} more defect{plural} ({lines} line{'s' if lines != 1 else ''} affected)"


def kind_hint(path: str | os.PathLike, kind: str, valid: int, lines: int, kinds: Iterable[str],
              validate: Validate) -> str | None:
    """When most of a file's ``lines`` are not valid ``kind`` records (``valid`` are), which ``--kind`` it looks
    like: the other of ``kinds`` under which most lines are valid, or a line saying none is; None when most are
    valid.
    """
    if lines == 0 or valid * 2 >= lines:
        return None
    scores = {other: len(validate(path, other)[0]) for other in kinds if other != kind}
    best = max(scores, key=scores.__getitem__)  # on a tie, the first in ``kinds`` order
    if scores[best] * 2 > lines:
        return (f"this file looks like kind {best!r}: {scores[best]} of {lines} lines are valid {best} records; "
                f"run: alignkit validate {shlex.quote(str(path))} --kind {best}")
    return (f"it does not look like another kind either: at most {scores[best]} of {lines} lines are valid as "
            f"any other kind ({', '.join(scores)}); check how the file was written")


def validate_command(path: str | os.PathLike, kind: str, kinds: Iterable[str], validate: Validate) -> int:
    """``alignkit validate FILE --kind KIND``: print the defects and a summary; return the exit code.

    Defects go to stderr as ``FILE:LINE: field: problem``, the first :data:`MAX_DEFECTS_PRINTED` of them and
    then one line counting the rest, then ``invalid: ...``; when most lines are invalid, a last line says which
    ``--kind`` the file looks like (:func:`kind_hint`). A valid file prints ``ok: N KIND records in FILE`` to
    stdout. Exit code 0 valid, 1 invalid, 2 missing/unreadable file or unknown kind.
    """
    kinds = list(kinds)
    if kind not in kinds:
        print(f"error: unknown kind {kind!r}; expected one of {', '.join(kinds)}", file=sys.stderr)
        return 2
    try:
        rows, defects = validate(path, kind)
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
        print(summarise_hidden(defects[MAX_DEFECTS_PRINTED:]), file=sys.stderr)
    bad_lines = len({defect.line for defect in defects if defect.line > 0})
    print(
        f"invalid: {len(defects)} defect(s) on {bad_lines} line(s) in {path} "
        f"({len(rows)} valid {kind} record(s))",
        file=sys.stderr,
    )
    # Every non-blank line is either a valid row or has a defect (line 0 is the file as a whole).
    hint = kind_hint(path, kind, len(rows), len(rows) + bad_lines, kinds, validate)
    if hint:
        print(hint, file=sys.stderr)
    return 1


__all__ = ["EXCERPT_CHARS", "FILE_FIELD", "LINE_FIELD", "MAX_DEFECTS_IN_MESSAGE", "MAX_DEFECTS_PRINTED", "Defect",
           "InvalidInputError", "Record", "StrictModel", "at_least", "check_file", "excerpt", "kind_hint",
           "non_empty", "parse_line", "refuse", "rule", "summarise_hidden", "type_name", "validate_command",
           "validate_object"]
