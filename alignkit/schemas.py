"""The records of every JSON Lines file a stage reads, as pydantic models, and the validators stages call.

Five kinds, by the names ``alignkit validate FILE --kind KIND`` accepts (unique key in brackets), and one more
for ``alignkit score``:

- ``eval-items``: a held-out instruction with its reference answer [``id``] (:class:`EvalItem`)
- ``sft``: a verified SFT example and the generation that produced it [``id``] (:class:`SFTExample`)
- ``negatives``: a rejected response built from an SFT example [``id``] (:class:`Negative`)
- ``pairs``: a DPO preference pair: prompt, chosen, rejected [``id``] (:class:`PreferencePair`)
- ``responses``: one model's generation for one evaluation item [``(model, seed, item_id)``]
  (:class:`ModelResponse`)
- ``scorable-responses``: any system's answer to an item: ``item_id`` and the text (:class:`ScorableResponse`)

Every model is strict (no coercion: ``true`` is not an int, ``"1"`` not a number) and forbids fields it does
not declare, so a misspelt or stray field is a defect naming it. A stage calls :func:`load_records` at its
boundary, before any compute: it reads the whole file, collects *every* defect and raises
:class:`InvalidInputError` naming ``FILE:LINE: field: problem`` for each; nothing is repaired. Reading and
reporting files is :mod:`alignkit.jsonl`; this module re-exports what callers need from it.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, ClassVar, Literal, Optional

from pydantic import (
    BeforeValidator,
    ConfigDict,
    ValidationInfo,
    field_validator,
    model_validator,
)

from alignkit import jsonl, template
from alignkit.config import FAMILIES, NEGATIVE_TYPES
from alignkit.jsonl import (
    FILE_FIELD,
    LINE_FIELD,
    MAX_DEFECTS_IN_MESSAGE,
    MAX_DEFECTS_PRINTED,
    Defect,
    InvalidInputError,
    Record,
    StrictModel,
    at_least,
    excerpt,
    non_empty,
    refuse,
    rule,
    validate_object,
)
from alignkit.record_text import (
    has_literal_newline_escape,
    instruction_problems,
    negative_response_problems,
    pair_completion_problems,
    pair_prompt_problems,
    response_problems,
    text_basics,
)

#: The task families of the embedded world (one definition, in :mod:`alignkit.config`).
KNOWN_FAMILIES: tuple[str, ...] = FAMILIES
#: The one family whose items have no reference answer (no factual-correctness check).
OPEN_ENDED_FAMILY = "open_ended"
#: Negative types whose defect may be the missing END: a format or verbose negative is kept exactly as the model
#: produced it, run-on included, cut at the token limit when it never wrote END.
END_LESS_TYPES = ("format", "verbose")

# ---------- Field types: pydantic types whose validators raise alignkit's own problems -----------

#: Default of a field that may be absent but, when present, must have its type (``null`` included): pydantic
#: does not validate defaults, and ``to_dict`` (``exclude_unset``) leaves the field out again.
_ABSENT: Any = None


def _seed(value: Any) -> Any:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise refuse(f"expected an integer training seed or null (an untrained arm); got {value!r}")
    return value


Text = Annotated[str, rule(text_basics)]
Instruction = Annotated[str, rule(instruction_problems)]
Family = Literal[KNOWN_FAMILIES]  # type: ignore[valid-type]
NegativeType = Literal[NEGATIVE_TYPES]  # type: ignore[valid-type]
Count = Annotated[int, at_least(0)]
Seed = Annotated[Optional[int], BeforeValidator(_seed)]
CriterionName = Annotated[str, non_empty("empty; expected a criterion name")]
ItemId = Annotated[str, non_empty("empty; expected the evaluation item's id")]
SentPrompt = Annotated[str, non_empty("empty; expected the exact prompt sent")]


def _must_equal(value: str, expected: str, how: str) -> str:
    if value != expected:
        raise refuse(f"does not match {how}; expected {excerpt(expected)}, got {excerpt(value)}")
    return value


def _prompt_of_instruction(value: str, info: ValidationInfo) -> str:
    """``prompt`` == ``template.prompt(instruction)`` (checked only when the instruction itself is valid)."""
    instruction = info.data.get("instruction")
    return value if instruction is None else _must_equal(value, template.prompt(instruction),
                                                         "template.prompt(instruction)")


# ---------- The records --------------------------------------------------------------------------


class EvalItem(Record):
    """A held-out evaluation instruction (``world.Item.to_record``); ``reference`` is null only for open_ended."""

    KIND: ClassVar[str] = "eval-items"
    id: Text
    family: Family
    instruction: Instruction
    reference: Optional[str]
    params: dict[str, Any]

    @field_validator("reference")
    @classmethod
    def _reference(cls, value: str | None, info: ValidationInfo) -> str | None:
        family = info.data.get("family")
        if value is None and family is not None and family != OPEN_ENDED_FAMILY:
            raise refuse(f"null is only allowed for the {OPEN_ENDED_FAMILY} family; "
                         f"family {family!r} needs a reference answer")
        if value is not None and not value.strip():
            raise refuse("empty; expected the reference answer (or null for open_ended)")
        return value


class Generation(StrictModel):
    """How an SFT response was produced: the exact (few-shot) prompt sent, the raw output, the attempt."""

    prompt: SentPrompt
    raw_output: str
    attempt: Annotated[int, at_least(1, " (attempts count from 1)")]
    sampling: dict[str, Any]


class SFTExample(Record):
    """A verified SFT example (``sft_data.sft_record``): ``prompt``/``completion`` are exactly the template applied
    to the texts, and ``response`` is text the model generated (found in ``generation.raw_output``)."""

    KIND: ClassVar[str] = "sft"
    id: Text
    family: Family
    instruction: Instruction
    prompt: str
    response: Annotated[str, rule(response_problems)]
    completion: str
    generation: Generation
    params: dict[str, Any] = _ABSENT  # the world item's parameters (the stage writes them)

    _prompt = field_validator("prompt")(_prompt_of_instruction)

    @field_validator("completion")
    @classmethod
    def _completion(cls, value: str, info: ValidationInfo) -> str:
        response = info.data.get("response")
        return value if response is None else _must_equal(value, template.completion(response),
                                                          "template.completion(response)")

    @field_validator("generation")
    @classmethod
    def _response_generated(cls, value: Generation, info: ValidationInfo) -> Generation:
        # Nothing invented: the stored response must be text the model actually generated.
        response = info.data.get("response")
        if response is not None and response not in value.raw_output:
            raise refuse("not found in generation.raw_output; every SFT response must be text the model "
                         "generated", field="response")
        return value


class Negative(Record):
    """A rejected response for the SFT example ``sft_id`` (``negatives.build_pool`` plus its ``id``)."""

    KIND: ClassVar[str] = "negatives"
    id: Text
    sft_id: Text
    family: Family
    instruction: Instruction
    prompt: str
    emitted_end: bool  # before ``type``: the type's END rule reports on it and leaves it to the completion check
    type: NegativeType
    method: Text
    response: Annotated[str, rule(negative_response_problems)]
    completion: str
    failed_criteria: Annotated[list[CriterionName], rule(
        lambda names: [] if names else ["empty list; expected the names of the criteria this negative fails"])]

    _prompt = field_validator("prompt")(_prompt_of_instruction)

    @field_validator("type")
    @classmethod
    def _end_less_type(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("emitted_end") is False and value not in END_LESS_TYPES:
            raise refuse(f"false is only allowed for types {', '.join(END_LESS_TYPES)} (a missing END is their "
                         f"defect); a {value} negative must end with END", field="emitted_end")
        return value

    @field_validator("completion")
    @classmethod
    def _completion(cls, value: str, info: ValidationInfo) -> str:
        response, emitted_end = info.data.get("response"), info.data.get("emitted_end")
        if response is None or emitted_end is None:
            return value
        if emitted_end:
            return _must_equal(value, template.completion(response), "template.completion(response)")
        return _must_equal(value, " " + response.strip(), "' ' + response (no END: as generated)")


class PreferencePair(Record):
    """A DPO pair (``pairs.build_pairs``): ``prompt`` as ``template.prompt`` builds it, ``chosen`` as
    ``template.completion``, ``rejected`` too or, for :data:`END_LESS_TYPES`, the text as generated."""

    KIND: ClassVar[str] = "pairs"
    id: Text
    sft_id: Text
    family: Family
    negative_type: NegativeType
    prompt: Annotated[str, rule(pair_prompt_problems)]
    chosen: Annotated[str, rule(pair_completion_problems)]
    rejected: str
    chosen_source: Text
    margin: Optional[float]
    negative_id: Text = _ABSENT  # the negative this pair was built from
    method: Text = _ABSENT  # how that negative was made (negatives' ``method``)
    rejected_has_end: bool = _ABSENT  # the negative's ``emitted_end``
    divergence_token: Count = _ABSENT  # completion tokens chosen and rejected share before they differ

    @field_validator("rejected")
    @classmethod
    def _rejected(cls, value: str, info: ValidationInfo) -> str:
        no_end = info.data.get("negative_type") in END_LESS_TYPES
        problems = pair_completion_problems(value, allow_tags=True, allow_no_end=no_end)
        chosen = info.data.get("chosen")
        if not problems and chosen is not None and chosen.strip() == value.strip():
            problems = ["identical to chosen; a preference pair needs two different responses"]
        if problems:
            raise refuse(*problems)
        return value


class ModelResponse(Record):
    """One model's generation for one evaluation item (``evaluation.response_record``), as generated
    (``raw_output``) and split; ``seed`` is the training seed, null or absent for an untrained arm."""

    KIND: ClassVar[str] = "responses"
    model: Annotated[str, non_empty("empty; expected the model's name")]
    item_id: ItemId
    prompt: SentPrompt
    raw_output: str
    response: str
    emitted_end: bool
    seed: Seed = None
    prompt_tokens: Count
    output_tokens: Count


class ScorableResponse(Record):
    """``alignkit score`` input: any system's answer needs only ``item_id`` and the text, as ``raw_output`` (END
    found in it) or as ``response`` with ``emitted_end``; the other fields of ``responses`` are optional."""

    KIND: ClassVar[str] = "scorable-responses"
    # The one open kind: answers from another system are scored as they are, whatever else their lines carry
    # (an unknown field is ignored here; every field alignkit itself reads is still typed).
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True, allow_inf_nan=False)
    item_id: ItemId
    raw_output: str = _ABSENT
    response: str = _ABSENT
    emitted_end: bool = _ABSENT
    model: Annotated[str, non_empty("empty; expected a model name")] = _ABSENT
    seed: Seed = None
    prompt: str = _ABSENT
    prompt_tokens: Count = _ABSENT
    output_tokens: Count = _ABSENT

    @model_validator(mode="after")
    def _has_text(self) -> ScorableResponse:
        given = self.model_fields_set
        if "raw_output" not in given and "response" not in given:
            raise refuse("missing; give raw_output (the text as generated) or response with emitted_end",
                         field="raw_output")
        if "raw_output" not in given and "emitted_end" not in given:
            raise refuse("missing", field="emitted_end")
        return self


#: Kind name (as the CLI spells it) -> record model; the kinds ``alignkit validate`` knows.
KINDS: dict[str, type[Record]] = {
    "eval-items": EvalItem,
    "sft": SFTExample,
    "negatives": Negative,
    "pairs": PreferencePair,
    "responses": ModelResponse,
}
_MODELS: dict[str, type[Record]] = {**KINDS, "scorable-responses": ScorableResponse}

#: Fields whose values together must be unique within one file, per kind.
UNIQUE_KEYS: dict[str, tuple[str, ...]] = {
    "eval-items": ("id",),
    "sft": ("id",),
    "negatives": ("id",),
    "pairs": ("id",),
    "responses": ("model", "seed", "item_id"),
    "scorable-responses": ("model", "seed", "item_id"),
}

# ---------- Records and files --------------------------------------------------------------------


def _require_kind(kind: str) -> None:
    if kind not in _MODELS:
        raise ValueError(f"unknown record kind {kind!r}; expected one of {', '.join(_MODELS)}")


def check_record(kind: str, obj: Any) -> list[tuple[str, str]]:
    """Every ``(field, problem)`` of one parsed JSON object against ``kind``'s model; empty if valid.

    Nested fields are named with dots (``generation.attempt``), list items with brackets.

    >>> check_record("responses", {"model": "base", "item_id": "a1", "prompt": "Instruction: x\\nResponse:",
    ...     "raw_output": " 5\\nEND", "response": "5", "emitted_end": True, "prompt_tokens": 7,
    ...     "output_tokens": True})
    [('output_tokens', 'expected int, got bool')]
    >>> check_record("eval-items", {"id": "e1", "family": "capitals", "instruction": "Capital of Peru?",
    ...     "reference": "Lima", "params": {}, "refrence": "Lima"})
    [('refrence', "unknown field; did you mean 'reference'? eval-items records have only the fields id, family, \
instruction, reference, params")]
    """
    _require_kind(kind)
    return validate_object(_MODELS[kind], obj)[1]


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

    Returns ``(rows, defects)``: the objects of the lines without any defect, in file order, and every problem
    (see :func:`alignkit.jsonl.check_file`). Raises ``FileNotFoundError`` if ``path`` does not exist and
    ``ValueError`` for an unknown kind.
    """
    _require_kind(kind)
    return jsonl.check_file(path, kind, lambda obj: check_record(kind, obj), lambda obj: _unique_key(kind, obj),
                            UNIQUE_KEYS[kind])


def load_records(path: str | os.PathLike, kind: str) -> list[dict]:
    """The rows of ``path`` if every line is a valid ``kind`` record, else raise :class:`InvalidInputError`.

    Stages call this on each input at their boundary, before any compute.
    """
    rows, defects = validate_file(path, kind)
    if defects:
        raise InvalidInputError(defects, kind)
    return rows


def kind_hint(path: str | os.PathLike, kind: str, valid: int, lines: int) -> str | None:
    """Which ``--kind`` a file looks like when most of its lines are not valid ``kind`` records."""
    return jsonl.kind_hint(path, kind, valid, lines, KINDS, validate_file)


def validate_command(path: str | os.PathLike, kind: str) -> int:
    """``alignkit validate FILE --kind KIND``: print the defects and a summary; exit code 0 valid, 1 invalid, 2
    missing/unreadable file or unknown kind (see :func:`alignkit.jsonl.validate_command`)."""
    return jsonl.validate_command(path, kind, KINDS, validate_file)


__all__ = [
    "END_LESS_TYPES", "FILE_FIELD", "KINDS", "KNOWN_FAMILIES", "LINE_FIELD", "MAX_DEFECTS_IN_MESSAGE",
    "MAX_DEFECTS_PRINTED", "OPEN_ENDED_FAMILY", "UNIQUE_KEYS", "Defect", "EvalItem", "Generation",
    "InvalidInputError", "ModelResponse", "Negative", "PreferencePair", "SFTExample", "ScorableResponse",
    "check_record", "has_literal_newline_escape", "instruction_problems", "kind_hint", "load_records",
    "response_problems", "validate_command", "validate_file",
]
