"""Tests for alignkit.schemas: a valid record per kind, a corpus of malformed inputs, the CLI entry point.

The cases of the former tests/test_records.py, run against the pydantic models, plus what pydantic's
``extra="forbid"`` adds: an unknown field is a defect naming the field, and every record the stages write (built
with the stages' own helpers) validates, optional fields included.

Also the rules of the design: a negative carries ``emitted_end`` and may lack END only for the types whose
defect that is (``format``, ``verbose``: ``schemas.END_LESS_TYPES``); a pair's ``rejected`` may then lack END too
(one leading space, no ``\\nEND`` anywhere, no literal backslash-n); responses are unique by
``(model, seed, item_id)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from alignkit import artifacts, schemas
from alignkit.config import NEGATIVE_TYPES
from alignkit.schemas import Defect, InvalidInputError

# Valid records, written by hand (not built with alignkit.template): the template is checked independently.
EVAL_ITEM: dict[str, Any] = {
    "id": "eval-arithmetic-0001",
    "family": "arithmetic",
    "instruction": "What is 12 plus 7?",
    "reference": "19",
    "params": {"a": 12, "b": 7, "op": "plus"},
}
SFT: dict[str, Any] = {
    "id": "sft-capitals-0001",
    "family": "capitals",
    "instruction": "What is the capital of France?",
    "prompt": "Instruction: What is the capital of France?\nResponse:",
    "response": "Paris",
    "completion": " Paris\nEND",
    "generation": {
        "prompt": "Q: capital of Spain? A: Madrid\nQ: What is the capital of France? A:",
        "raw_output": " Paris\nQ:",
        "attempt": 1,
        "sampling": {"temperature": 0.7, "top_p": 0.9, "seed": 3},
    },
}
NEGATIVE: dict[str, Any] = {
    "id": "neg-0001",
    "sft_id": "sft-capitals-0001",
    "family": "capitals",
    "instruction": "What is the capital of France?",
    "prompt": "Instruction: What is the capital of France?\nResponse:",
    "type": "incorrect",
    "method": "sft_sample",
    "emitted_end": True,
    "response": "Madrid",
    "completion": " Madrid\nEND",
    "failed_criteria": ["factually_correct"],
}
PAIR: dict[str, Any] = {
    "id": "pair-0001",
    "sft_id": "sft-capitals-0001",
    "family": "capitals",
    "negative_type": "incorrect",
    "prompt": "Instruction: What is the capital of France?\nResponse:",
    "chosen": " Paris\nEND",
    "rejected": " Madrid\nEND",
    "chosen_source": "sft",
    "margin": None,
}
RESPONSE: dict[str, Any] = {
    "model": "sft",
    "seed": 0,
    "item_id": "eval-arithmetic-0001",
    "prompt": "Instruction: What is 12 plus 7?\nResponse:",
    "raw_output": " 19\nEND",
    "response": "19",
    "emitted_end": True,
    "prompt_tokens": 14,
    "output_tokens": 3,
}
VALID = {"eval-items": EVAL_ITEM, "sft": SFT, "negatives": NEGATIVE, "pairs": PAIR, "responses": RESPONSE}


def edit(base: dict[str, Any], drop: tuple[str, ...] = (), **changes: Any) -> dict[str, Any]:
    """A copy of ``base`` with ``changes`` applied and the ``drop`` fields removed."""
    out = {**json.loads(json.dumps(base)), **changes}
    for name in drop:
        del out[name]
    return out


def edit_generation(**changes: Any) -> dict[str, Any]:
    return edit(SFT, generation={**SFT["generation"], **changes})


def jsonl(*rows: Any) -> bytes:
    """File bytes: dicts/lists become JSON lines, ``str`` lines are written verbatim, ``bytes`` as is."""
    parts = []
    for row in rows:
        if isinstance(row, bytes):
            parts.append(row)
        elif isinstance(row, str):
            parts.append(row.encode("utf-8"))
        else:
            parts.append(json.dumps(row, ensure_ascii=False).encode("utf-8"))
    return b"".join(part + b"\n" for part in parts)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / f"{name}.jsonl"
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------------------------------
# Valid records
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(VALID))
def test_valid_record_passes(kind: str, tmp_path: Path) -> None:
    assert schemas.check_record(kind, VALID[kind]) == []
    path = write(tmp_path, kind, jsonl(VALID[kind]))
    rows, defects = schemas.validate_file(path, kind)
    assert defects == []
    assert rows == [VALID[kind]]
    assert schemas.load_records(path, kind) == [VALID[kind]]


@pytest.mark.parametrize("kind", list(VALID))
def test_from_dict_round_trips(kind: str) -> None:
    record = schemas.KINDS[kind].from_dict(VALID[kind])
    assert isinstance(record, schemas.KINDS[kind]) and record.KIND == kind
    assert record.to_dict() == VALID[kind]
    # A response's seed is optional (null or absent for an untrained arm): absent stays absent.
    if kind == "responses":
        assert "seed" not in schemas.ModelResponse.from_dict(edit(RESPONSE, drop=("seed",))).to_dict()


@pytest.mark.parametrize("kind", list(VALID))
def test_unknown_field_is_a_defect_naming_it(kind: str, tmp_path: Path) -> None:
    obj = edit(VALID[kind], written_by="a newer alignkit")
    problems = schemas.check_record(kind, obj)
    assert [name for name, _ in problems] == ["written_by"]
    problem = problems[0][1]
    assert problem.startswith("unknown field; remove it or correct its name; ")
    listed = problem.split(f"{kind} records have only the fields ")[1].split(", ")
    assert set(VALID[kind]) <= set(listed) and "written_by" not in listed
    path = write(tmp_path, kind, jsonl(obj))
    rows, defects = schemas.validate_file(path, kind)
    assert rows == []
    assert [(d.line, d.field) for d in defects] == [(1, "written_by")]
    with pytest.raises(InvalidInputError, match=f"{kind}.jsonl:1: written_by: unknown field"):
        schemas.load_records(path, kind)
    with pytest.raises(InvalidInputError, match="<record>:0: written_by: unknown field"):
        schemas.KINDS[kind].from_dict(obj)


def test_unknown_field_suggests_the_near_miss_and_names_nested_fields() -> None:
    misspelt = edit(PAIR, drop=("chosen_source",), chosen_sorce="sft")
    assert schemas.check_record("pairs", misspelt) == [
        ("chosen_source", "missing"),
        ("chosen_sorce", "unknown field; did you mean 'chosen_source'? pairs records have only the fields id, "
                         "sft_id, family, negative_type, prompt, chosen, rejected, chosen_source, margin, "
                         "negative_id, method, rejected_has_end, divergence_token"),
    ]
    nested = edit_generation(temperature=0.7)
    assert schemas.check_record("sft", nested) == [
        ("generation.temperature", "unknown field; remove it or correct its name; generation has only the fields "
                                   "prompt, raw_output, attempt, sampling")]


def test_extra_fields_of_free_form_objects_are_allowed() -> None:
    # params and sampling are the world's and the generator's own dictionaries: any keys.
    assert schemas.check_record("eval-items", edit(EVAL_ITEM, params={"anything": [1, {"x": None}]})) == []
    assert schemas.check_record("sft", edit_generation(sampling={"new_knob": True})) == []


def test_sft_from_dict_builds_typed_generation() -> None:
    example = schemas.SFTExample.from_dict(SFT)
    assert isinstance(example.generation, schemas.Generation)
    assert example.generation.attempt == 1
    assert example.generation.sampling["seed"] == 3


def test_from_dict_raises_with_every_problem() -> None:
    with pytest.raises(InvalidInputError) as caught:
        schemas.PreferencePair.from_dict(edit(PAIR, drop=("chosen",), margin="big"))
    assert [(d.field, d.problem) for d in caught.value.defects] == [
        ("chosen", "missing"),
        ("margin", "expected number or null, got string"),
    ]
    assert "<record>:0: chosen: missing" in str(caught.value)


def test_open_ended_item_may_have_null_reference() -> None:
    item = edit(EVAL_ITEM, family="open_ended", instruction="Write a sentence about rivers.", reference=None)
    assert schemas.check_record("eval-items", item) == []


def test_same_item_for_two_models_is_not_a_duplicate(tmp_path: Path) -> None:
    path = write(tmp_path, "responses", jsonl(RESPONSE, edit(RESPONSE, model="sft_dpo")))
    assert schemas.validate_file(path, "responses")[1] == []


def test_blank_lines_and_windows_line_ends_are_accepted(tmp_path: Path) -> None:
    second = json.dumps(edit(EVAL_ITEM, id="eval-2")).encode()
    data = json.dumps(EVAL_ITEM).encode() + b"\r\n\r\n" + second + b"\r\n"
    rows, defects = schemas.validate_file(write(tmp_path, "crlf", data), "eval-items")
    assert defects == []
    assert [row["id"] for row in rows] == ["eval-arithmetic-0001", "eval-2"]


def test_literal_newline_escape_helper() -> None:
    assert schemas.has_literal_newline_escape("a\\nb")  # the two characters '\' and 'n'
    assert not schemas.has_literal_newline_escape("a\nb")  # a real newline
    assert not schemas.has_literal_newline_escape("a\\tb")


def test_known_families_match_the_world() -> None:
    world = pytest.importorskip("alignkit.world")
    assert schemas.KNOWN_FAMILIES == tuple(world.FAMILY_NAMES)


def test_unknown_kind_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown record kind 'evals'; expected one of eval-items"):
        schemas.check_record("evals", {})
    with pytest.raises(ValueError, match="unknown record kind"):
        schemas.validate_file(write(tmp_path, "x", jsonl(EVAL_ITEM)), "evals")


# --------------------------------------------------------------------------------------------------
# END-less negatives and pairs (format and verbose only), seeded responses
# --------------------------------------------------------------------------------------------------

END_LESS = {"format", "verbose"}


def _negative_of(negative_type: str, emitted_end: bool) -> dict[str, Any]:
    response = "Madrid, and then Instruction: more"
    completion = f" {response}\nEND" if emitted_end else f" {response}"
    return edit(NEGATIVE, type=negative_type, emitted_end=emitted_end, response=response, completion=completion)


def test_end_less_types_are_format_and_verbose() -> None:
    assert set(schemas.END_LESS_TYPES) == END_LESS


@pytest.mark.parametrize("negative_type", ["refusal", "format", "incorrect", "off_topic", "verbose"])
def test_negative_with_and_without_end_per_type(negative_type: str) -> None:
    assert schemas.check_record("negatives", _negative_of(negative_type, True)) == []
    problems = schemas.check_record("negatives", _negative_of(negative_type, False))
    if negative_type in END_LESS:
        assert problems == []
        assert schemas.Negative.from_dict(_negative_of(negative_type, False)).emitted_end is False
    else:
        assert problems == [("emitted_end", f"false is only allowed for types format, verbose (a missing END is "
                                            f"their defect); a {negative_type} negative must end with END")]


@pytest.mark.parametrize("negative_type", ["refusal", "format", "incorrect", "off_topic", "verbose"])
def test_pair_rejected_with_and_without_end_per_type(negative_type: str) -> None:
    with_end = edit(PAIR, negative_type=negative_type, rejected=" Madrid\nEND")
    assert schemas.check_record("pairs", with_end) == []
    without_end = edit(PAIR, negative_type=negative_type, rejected=" Madrid and more, as generated")
    problems = schemas.check_record("pairs", without_end)
    if negative_type in END_LESS:
        assert problems == []
    else:
        assert problems == [("rejected", "must end with '\\nEND'")]


@pytest.mark.parametrize("negative_type", sorted(END_LESS))
@pytest.mark.parametrize("rejected", [" Madrid\nEND\nInstruction: next", " Madrid\nEND more", " \nEND Madrid"])
def test_end_less_rejected_with_end_in_the_middle_is_refused(negative_type: str, rejected: str) -> None:
    problems = schemas.check_record("pairs", edit(PAIR, negative_type=negative_type, rejected=rejected))
    assert problems == [("rejected", "contains '\\nEND' but does not end with it; generation stops there")]


def test_end_less_negative_completion_is_space_plus_response() -> None:
    negative = _negative_of("format", False)
    assert negative["completion"] == " " + negative["response"]
    for wrong in (negative["response"], " " + negative["response"] + "\nEND", "  " + negative["response"]):
        problems = schemas.check_record("negatives", edit(negative, completion=wrong))
        assert [name for name, _ in problems] == ["completion"], wrong


# Generation stops at the first "\nEND", so no model output has text after one: a completion or negative response
# with "\nEND" before its end is refused (such a chosen would teach the model to go on after END).
@pytest.mark.parametrize(("field", "negative_type", "text"), [
    ("rejected", "incorrect", " Madrid\nEND\nmore\nEND"),
    ("rejected", "format", " Madrid\nEND\nmore\nEND"),
    ("chosen", "incorrect", " Paris\nEND\nmore\nEND"),
])
def test_a_pair_completion_with_end_in_the_middle_is_refused(field: str, negative_type: str, text: str) -> None:
    problems = schemas.check_record("pairs", edit(PAIR, negative_type=negative_type, **{field: text}))
    assert field in [name for name, _ in problems]


@pytest.mark.parametrize(("negative_type", "emitted_end", "completion"), [
    ("incorrect", True, " Madrid\nEND\nmore\nEND"),
    ("format", False, " Madrid\nEND\nmore"),  # refused as a pair's rejected (test above), accepted here
])
def test_a_negative_response_with_end_inside_is_refused(negative_type: str, emitted_end: bool,
                                                        completion: str) -> None:
    negative = edit(NEGATIVE, type=negative_type, emitted_end=emitted_end, response="Madrid\nEND\nmore",
                    completion=completion)
    assert schemas.check_record("negatives", negative) != []


def test_responses_are_unique_by_model_seed_and_item(tmp_path: Path) -> None:
    # The same model and item under two training seeds: two rows, no defect.
    two_seeds = write(tmp_path, "two_seeds", jsonl(RESPONSE, edit(RESPONSE, seed=1)))
    rows, defects = schemas.validate_file(two_seeds, "responses")
    assert defects == [] and [row["seed"] for row in rows] == [0, 1]
    # An untrained arm (seed null) next to seeded rows of another arm: no defect either.
    untrained = write(tmp_path, "untrained", jsonl(edit(RESPONSE, model="base", seed=None), RESPONSE,
                                                   edit(RESPONSE, seed=None)))
    assert schemas.validate_file(untrained, "responses")[1] == []
    # Twice under one seed: the second is a defect naming the first.
    twice = write(tmp_path, "twice", jsonl(RESPONSE, edit(RESPONSE, seed=1), edit(RESPONSE, raw_output=" 20\nEND")))
    rows, defects = schemas.validate_file(twice, "responses")
    assert [row["seed"] for row in rows] == [0, 1]
    assert [str(d) for d in defects] == [
        f"{twice}:3: item_id: duplicate (model, seed, item_id) ('sft', '0', 'eval-arithmetic-0001'); first on line 1"]
    assert schemas.UNIQUE_KEYS["responses"] == ("model", "seed", "item_id")


# --------------------------------------------------------------------------------------------------
# The malformed-input corpus: (case name "<kind>__<what>", kind, file bytes, expected defects)
# Each expected defect is (line, field, phrase that must occur in the problem); the defects found must be
# exactly these, in this order.
# --------------------------------------------------------------------------------------------------

BAD_INPUTS: list[tuple[str, str, bytes, list[tuple[int, str, str]]]] = [
    # File- and line-level problems.
    ("eval-items__not_json", "eval-items", jsonl(EVAL_ITEM, '{"id": "eval-2", "family": '),
     [(2, "<line>", "not valid JSON: Expecting value at column 28")]),
    ("eval-items__invalid_utf8_line3", "eval-items",
     jsonl(EVAL_ITEM, edit(EVAL_ITEM, id="eval-2"), b'{"id": "eval-\xff3"}'),
     [(3, "<line>", "not valid UTF-8: byte 0xff at column 14")]),
    ("eval-items__non_object_line", "eval-items", jsonl(["eval-1", "arithmetic"]),
     [(1, "<line>", "expected a JSON object, got list")]),
    ("eval-items__string_line", "eval-items", jsonl('"just a string"'),
     [(1, "<line>", "expected a JSON object, got string")]),
    ("eval-items__empty_file", "eval-items", b"", [(0, "<file>", "empty file: no eval-items records")]),
    ("eval-items__blank_lines_only", "eval-items", b"\n  \n\n", [(0, "<file>", "empty file")]),
    ("eval-items__repeated_key", "eval-items",
     jsonl('{"id": "a", "id": "b", "family": "arithmetic"}'),
     [(1, "<line>", "key 'id' appears twice in one object")]),
    ("eval-items__nan", "eval-items", jsonl('{"id": "a", "params": {"x": NaN}}'),
     [(1, "<line>", "NaN is not valid JSON")]),
    ("eval-items__duplicate_id", "eval-items", jsonl(EVAL_ITEM, edit(EVAL_ITEM, id="eval-2"), EVAL_ITEM),
     [(3, "id", "duplicate id 'eval-arithmetic-0001'; first on line 1")]),
    # eval-items schema.
    ("eval-items__missing_instruction", "eval-items", jsonl(edit(EVAL_ITEM, drop=("instruction",))),
     [(1, "instruction", "missing")]),
    ("eval-items__id_int", "eval-items", jsonl(edit(EVAL_ITEM, id=7)),
     [(1, "id", "expected string, got int")]),
    ("eval-items__params_list", "eval-items", jsonl(edit(EVAL_ITEM, params=[12, 7])),
     [(1, "params", "expected object, got list")]),
    ("eval-items__empty_instruction", "eval-items", jsonl(edit(EVAL_ITEM, instruction="   ")),
     [(1, "instruction", "empty")]),
    ("eval-items__unstripped_instruction", "eval-items",
     jsonl(edit(EVAL_ITEM, instruction=" What is 12 plus 7?")),
     [(1, "instruction", "leading or trailing whitespace")]),
    ("eval-items__tag_in_instruction", "eval-items",
     jsonl(edit(EVAL_ITEM, instruction="Instruction: What is 12 plus 7?")),
     [(1, "instruction", "template tag 'Instruction:'")]),
    ("eval-items__literal_backslash_n", "eval-items",
     jsonl(edit(EVAL_ITEM, instruction="What is\\n12 plus 7?")),
     [(1, "instruction", "literal backslash-n")]),
    ("eval-items__newline_in_instruction", "eval-items",
     jsonl(edit(EVAL_ITEM, instruction="What is\n12 plus 7?")),
     [(1, "instruction", "contains a newline")]),
    ("eval-items__unknown_family", "eval-items", jsonl(edit(EVAL_ITEM, family="algebra")),
     [(1, "family", "expected one of arithmetic, capitals, word_transform, list_category, comparison, "
                    "constraint, open_ended; got 'algebra'")]),
    ("eval-items__null_reference_arithmetic", "eval-items", jsonl(edit(EVAL_ITEM, reference=None)),
     [(1, "reference", "null is only allowed for the open_ended family; family 'arithmetic'")]),
    ("eval-items__empty_reference", "eval-items", jsonl(edit(EVAL_ITEM, reference="")),
     [(1, "reference", "empty")]),
    ("eval-items__reference_int", "eval-items", jsonl(edit(EVAL_ITEM, reference=19)),
     [(1, "reference", "expected string or null, got int")]),
    ("eval-items__all_defects_of_one_line", "eval-items",
     jsonl({"id": "", "family": "algebra", "instruction": 5, "reference": None}),
     [(1, "id", "empty"), (1, "family", "got 'algebra'"), (1, "instruction", "expected string, got int"),
      (1, "params", "missing")]),
    # sft schema.
    ("sft__prompt_not_template", "sft",
     jsonl(edit(SFT, prompt="Instruction: What is the capital of France?\n")),
     [(1, "prompt", "does not match template.prompt(instruction); expected "
                    "'Instruction: What is the capital of France?\\nResponse:'")]),
    ("sft__completion_not_response", "sft", jsonl(edit(SFT, completion=" Lyon\nEND")),
     [(1, "completion",
       "does not match template.completion(response); expected ' Paris\\nEND', got ' Lyon\\nEND'")]),
    ("sft__response_not_in_raw_output", "sft", jsonl(edit_generation(raw_output=" Lyon\nQ:")),
     [(1, "response", "not found in generation.raw_output")]),
    ("sft__response_contains_end", "sft",
     jsonl(edit(SFT, response="Paris\nEND", completion=" Paris\nEND\nEND")),
     [(1, "response", "contains '\\nEND'")]),
    ("sft__tag_in_response", "sft", jsonl(edit(SFT, response="Paris Response: Paris")),
     [(1, "response", "template tag 'Response:'")]),
    ("sft__literal_backslash_n_in_response", "sft", jsonl(edit(SFT, response="Paris\\nFrance")),
     [(1, "response", "literal backslash-n")]),
    ("sft__attempt_zero", "sft", jsonl(edit_generation(attempt=0)),
     [(1, "generation.attempt", "must be >= 1")]),
    ("sft__attempt_bool", "sft", jsonl(edit_generation(attempt=True)),
     [(1, "generation.attempt", "expected int, got bool")]),
    ("sft__missing_sampling", "sft",
     jsonl(edit(SFT, generation={"prompt": "Q:", "raw_output": " Paris", "attempt": 1})),
     [(1, "generation.sampling", "missing")]),
    ("sft__generation_not_object", "sft", jsonl(edit(SFT, generation=" Paris")),
     [(1, "generation", "expected object, got string")]),
    ("sft__missing_completion", "sft", jsonl(edit(SFT, drop=("completion",))),
     [(1, "completion", "missing")]),
    ("sft__nested_too_deeply", "sft", jsonl("[" * 100_000), [(1, "<line>", "nested too deeply")]),
    ("sft__duplicate_id", "sft", jsonl(SFT, SFT),
     [(2, "id", "duplicate id 'sft-capitals-0001'; first on line 1")]),
    # negatives schema.
    ("negatives__unknown_type", "negatives", jsonl(edit(NEGATIVE, type="refsual")),
     [(1, "type", "expected one of refusal, format, incorrect, off_topic, verbose; got 'refsual'")]),
    ("negatives__empty_failed_criteria", "negatives", jsonl(edit(NEGATIVE, failed_criteria=[])),
     [(1, "failed_criteria", "empty list")]),
    ("negatives__failed_criteria_item_int", "negatives",
     jsonl(edit(NEGATIVE, failed_criteria=["factually_correct", 3])),
     [(1, "failed_criteria[1]", "expected string, got int")]),
    ("negatives__empty_method", "negatives", jsonl(edit(NEGATIVE, method="")), [(1, "method", "empty")]),
    ("negatives__literal_backslash_n", "negatives",
     jsonl(edit(NEGATIVE, response="Madrid\\nSpain", completion=" Madrid\\nSpain\nEND")),
     [(1, "response", "literal backslash-n")]),
    ("negatives__completion_not_response", "negatives", jsonl(edit(NEGATIVE, completion=" Madrid\n")),
     [(1, "completion", "does not match template.completion(response)")]),
    ("negatives__prompt_not_template", "negatives",
     jsonl(edit(NEGATIVE, prompt="What is the capital of France?")),
     [(1, "prompt", "does not match template.prompt(instruction)")]),
    ("negatives__sft_id_null", "negatives", jsonl(edit(NEGATIVE, sft_id=None)),
     [(1, "sft_id", "expected string, got null")]),
    ("negatives__emitted_end_missing", "negatives", jsonl(edit(NEGATIVE, drop=("emitted_end",))),
     [(1, "emitted_end", "missing")]),
    ("negatives__emitted_end_string", "negatives", jsonl(edit(NEGATIVE, emitted_end="false")),
     [(1, "emitted_end", "expected bool, got string")]),
    ("negatives__end_less_incorrect", "negatives", jsonl(edit(NEGATIVE, emitted_end=False, completion=" Madrid")),
     [(1, "emitted_end", "false is only allowed for types format, verbose")]),
    ("negatives__end_less_format_completion_with_end", "negatives",
     jsonl(edit(NEGATIVE, type="format", emitted_end=False)),
     [(1, "completion", "does not match ' ' + response (no END: as generated); expected ' Madrid'")]),
    ("negatives__with_end_completion_without_end", "negatives",
     jsonl(edit(NEGATIVE, type="format", completion=" Madrid")),
     [(1, "completion", "does not match template.completion(response); expected ' Madrid\\nEND'")]),
    # pairs schema.
    ("pairs__chosen_equals_rejected", "pairs", jsonl(edit(PAIR, rejected=" Paris\nEND")),
     [(1, "rejected", "identical to chosen")]),
    ("pairs__chosen_equals_rejected_after_strip", "pairs", jsonl(edit(PAIR, rejected="  Paris\nEND")),
     [(1, "rejected", "identical to chosen")]),
    ("pairs__rejected_without_end", "pairs", jsonl(edit(PAIR, rejected=" Madrid")),
     [(1, "rejected", "must end with '\\nEND'")]),
    ("pairs__end_less_rejected_with_end_inside", "pairs",
     jsonl(edit(PAIR, negative_type="format", rejected=" Madrid\nEND\nInstruction: next")),
     [(1, "rejected", "contains '\\nEND' but does not end with it")]),
    ("pairs__end_less_rejected_without_space", "pairs", jsonl(edit(PAIR, negative_type="verbose", rejected="Madrid")),
     [(1, "rejected", "must start with ' '")]),
    ("pairs__end_less_rejected_literal_backslash_n", "pairs",
     jsonl(edit(PAIR, negative_type="format", rejected=" Madrid\\nSpain")),
     [(1, "rejected", "literal backslash-n")]),
    ("pairs__end_less_rejected_empty", "pairs", jsonl(edit(PAIR, negative_type="format", rejected=" ")),
     [(1, "rejected", "empty response after ' '")]),
    ("pairs__chosen_without_end_for_a_format_pair", "pairs",
     jsonl(edit(PAIR, negative_type="format", chosen=" Paris", rejected=" Madrid")),
     [(1, "chosen", "must end with '\\nEND'")]),
    ("pairs__chosen_without_space", "pairs", jsonl(edit(PAIR, chosen="Paris\nEND")),
     [(1, "chosen", "must start with ' '")]),
    ("pairs__empty_body", "pairs", jsonl(edit(PAIR, chosen=" \nEND")), [(1, "chosen", "empty response")]),
    ("pairs__tag_in_chosen", "pairs", jsonl(edit(PAIR, chosen=" Paris\nInstruction: next\nEND")),
     [(1, "chosen", "template tag 'Instruction:'")]),
    ("pairs__literal_backslash_n_in_chosen", "pairs", jsonl(edit(PAIR, chosen=" Paris\\nFrance\nEND")),
     [(1, "chosen", "literal backslash-n")]),
    ("pairs__prompt_head", "pairs", jsonl(edit(PAIR, prompt="Q: What is the capital of France?\nResponse:")),
     [(1, "prompt", "must start with 'Instruction: '")]),
    ("pairs__prompt_tail", "pairs",
     jsonl(edit(PAIR, prompt="Instruction: What is the capital of France?\nA:")),
     [(1, "prompt", "must end with '\\nResponse:'")]),
    ("pairs__unknown_negative_type", "pairs", jsonl(edit(PAIR, negative_type="wrong")),
     [(1, "negative_type", "expected one of refusal, format")]),
    ("pairs__margin_bool", "pairs", jsonl(edit(PAIR, margin=False)),
     [(1, "margin", "expected number or null, got bool")]),
    # 1e999 is valid JSON syntax, but Python reads it as inf.
    ("pairs__margin_overflow", "pairs",
     jsonl('{"id": "p", "sft_id": "s", "family": "capitals", "negative_type": "incorrect", '
           '"prompt": "Instruction: x\\nResponse:", "chosen": " a\\nEND", "rejected": " b\\nEND", '
           '"chosen_source": "sft", "margin": 1e999}'),
     [(1, "margin", "expected a finite number, got inf")]),
    ("pairs__missing_chosen_source", "pairs", jsonl(edit(PAIR, drop=("chosen_source",))),
     [(1, "chosen_source", "missing")]),
    # responses schema.
    ("responses__tokens_bool", "responses", jsonl(edit(RESPONSE, output_tokens=True)),
     [(1, "output_tokens", "expected int, got bool")]),
    ("responses__tokens_float", "responses", jsonl(edit(RESPONSE, prompt_tokens=14.0)),
     [(1, "prompt_tokens", "expected int, got float")]),
    ("responses__tokens_negative", "responses", jsonl(edit(RESPONSE, output_tokens=-1)),
     [(1, "output_tokens", "must be >= 0, got -1")]),
    ("responses__emitted_end_string", "responses", jsonl(edit(RESPONSE, emitted_end="true")),
     [(1, "emitted_end", "expected bool, got string")]),
    ("responses__empty_model", "responses", jsonl(edit(RESPONSE, model="")), [(1, "model", "empty")]),
    ("responses__missing_raw_output", "responses", jsonl(edit(RESPONSE, drop=("raw_output",))),
     [(1, "raw_output", "missing")]),
    ("responses__duplicate_model_seed_item", "responses",
     jsonl(RESPONSE, edit(RESPONSE, model="sft_dpo"), edit(RESPONSE, seed=1), RESPONSE),
     [(4, "item_id", "duplicate (model, seed, item_id) ('sft', '0', 'eval-arithmetic-0001'); first on line 1")]),
    ("responses__duplicate_untrained_arm", "responses",
     jsonl(edit(RESPONSE, model="base", seed=None), edit(RESPONSE, model="base", drop=("seed",))),
     [(2, "item_id", "duplicate (model, seed, item_id)")]),  # null and absent: the same (no training seed)
    ("responses__seed_string", "responses", jsonl(edit(RESPONSE, seed="0")),
     [(1, "seed", "expected an integer training seed or null")]),
    ("responses__seed_bool", "responses", jsonl(edit(RESPONSE, seed=True)),
     [(1, "seed", "expected an integer training seed or null")]),
    ("responses__seed_float", "responses", jsonl(edit(RESPONSE, seed=1.0)),
     [(1, "seed", "expected an integer training seed or null")]),
]


def test_bad_input_corpus_is_large_and_names_are_unique() -> None:
    names = [case[0] for case in BAD_INPUTS]
    assert len(names) == len(set(names)) >= 30
    assert {name.split("__")[0] for name in names} == set(schemas.KINDS)
    assert all(name.startswith(kind + "__") for name, kind, _, _ in BAD_INPUTS)


@pytest.mark.parametrize(
    ("name", "kind", "data", "expected"), BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS]
)
def test_bad_input_reports_file_line_field_problem(
    name: str, kind: str, data: bytes, expected: list[tuple[int, str, str]], tmp_path: Path
) -> None:
    path = write(tmp_path, name, data)
    _, defects = schemas.validate_file(path, kind)
    assert [(d.line, d.field) for d in defects] == [(line, field) for line, field, _ in expected], defects
    for defect, (_, _, phrase) in zip(defects, expected):
        assert defect.file == str(path)
        assert phrase in defect.problem, defect.problem
    with pytest.raises(InvalidInputError) as caught:
        schemas.load_records(path, kind)
    assert caught.value.defects == defects
    assert str(defects[0]) in str(caught.value)


def test_rows_returned_are_the_lines_without_defects(tmp_path: Path) -> None:
    bad = edit(EVAL_ITEM, id="eval-2", family="algebra")
    good = edit(EVAL_ITEM, id="eval-3")
    path = write(tmp_path, "mixed", jsonl(EVAL_ITEM, bad, "{", good))
    rows, defects = schemas.validate_file(path, "eval-items")
    assert [row["id"] for row in rows] == ["eval-arithmetic-0001", "eval-3"]
    assert [(d.line, d.field) for d in defects] == [(2, "family"), (3, "<line>")]


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        schemas.load_records(tmp_path / "absent.jsonl", "sft")


def test_defect_formats_as_file_line_field_problem() -> None:
    assert str(Defect("data/pairs.jsonl", 12, "chosen", "missing")) == "data/pairs.jsonl:12: chosen: missing"


def test_error_message_lists_twenty_defects_then_a_count() -> None:
    defects = [Defect("f.jsonl", line, "id", "missing") for line in range(1, 26)]
    message = str(InvalidInputError(defects, "sft"))
    lines = message.splitlines()
    assert lines[0] == "25 defect(s) in sft input:"
    assert lines[1:21] == [f"f.jsonl:{line}: id: missing" for line in range(1, 21)]
    assert lines[21:] == ["... and 5 more"]
    assert len(InvalidInputError(defects, "sft").defects) == 25


# --------------------------------------------------------------------------------------------------
# validate_command: what `alignkit validate FILE --kind KIND` prints and returns
# --------------------------------------------------------------------------------------------------


def test_validate_command_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "items", jsonl(EVAL_ITEM, edit(EVAL_ITEM, id="eval-2")))
    assert schemas.validate_command(path, "eval-items") == 0
    out, err = capsys.readouterr()
    assert out == f"ok: 2 eval-items records in {path}\n"
    assert err == ""


def test_validate_command_invalid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = (PAIR, edit(PAIR, id="pair-2", rejected=" Paris\nEND", margin=True), edit(PAIR, id="pair-3"))
    path = write(tmp_path, "pairs", jsonl(*rows))
    assert schemas.validate_command(path, "pairs") == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{path}:2: rejected: identical to chosen; a preference pair needs two different responses",
        f"{path}:2: margin: expected number or null, got bool",
        f"invalid: 2 defect(s) on 1 line(s) in {path} (2 valid pairs record(s))",
    ]


def test_validate_command_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "absent.jsonl"
    assert schemas.validate_command(path, "sft") == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"error: {path}: no such file\n"


def test_validate_command_directory_and_unknown_kind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert schemas.validate_command(tmp_path, "sft") == 2
    assert "is a directory" in capsys.readouterr().err
    assert schemas.validate_command(write(tmp_path, "x", jsonl(SFT)), "evals") == 2
    expected = "unknown kind 'evals'; expected one of eval-items, sft, negatives, pairs, responses"
    assert expected in capsys.readouterr().err


def test_rejected_may_leak_template_text_on_purpose():
    """A 'format' negative is bad *because* it leaks the template; it must still be a valid pair."""
    pair = edit(PAIR, rejected=" Madrid\nInstruction: next\nEND", negative_type="format")
    assert schemas.check_record("pairs", pair) == []


# --------------------------------------------------------------------------------------------------
# validate_command: a capped defect list, and a hint when the file is of another kind
# --------------------------------------------------------------------------------------------------


def _sft_rows(n: int) -> list[dict[str, Any]]:
    return [edit(SFT, id=f"sft-{i:04d}") for i in range(n)]


def test_validate_command_prints_twenty_defects_then_a_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 60 pairs; the first 15 have two defects each (rejected == chosen, margin a bool): 30 defects.
    rows = [edit(PAIR, id=f"pair-{i}", rejected=PAIR["chosen"], margin=True) for i in range(15)]
    rows += [edit(PAIR, id=f"pair-{i}") for i in range(15, 60)]
    path = write(tmp_path, "pairs", jsonl(*rows))
    assert schemas.validate_command(path, "pairs") == 1
    err = capsys.readouterr().err.splitlines()
    # Defects 1-20 cover lines 1-10; the 10 not printed are on lines 11-15.
    assert err[0] == f"{path}:1: rejected: identical to chosen; a preference pair needs two different responses"
    assert err[19] == f"{path}:10: margin: expected number or null, got bool"
    assert err[20:] == [
        "... and 10 more defects (5 lines affected)",
        f"invalid: 30 defect(s) on 15 line(s) in {path} (45 valid pairs record(s))",
    ]  # 15 of 60 lines invalid: no guess at another kind


def test_validate_command_says_which_kind_the_file_looks_like(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "sft", jsonl(*_sft_rows(200)))
    _rows, defects = schemas.validate_file(path, "pairs")
    assert schemas.validate_command(path, "pairs") == 1
    err = capsys.readouterr().err.splitlines()
    # As a pair, each SFT line lacks sft_id, negative_type, chosen, rejected, chosen_source and margin, and has 4
    # fields a pair does not (instruction, response, completion, generation): 10 defects, 2,000 in all. Printed:
    # lines 1-2; the 1,980 others are on lines 3-200.
    assert len(defects) == 2000 and {d.field for d in defects if d.line == 1} == {
        "sft_id", "negative_type", "chosen", "rejected", "chosen_source", "margin",
        "instruction", "response", "completion", "generation"}
    assert len(err) == 20 + 3  # not 2,001 lines
    assert err[20] == "... and 1980 more defects (198 lines affected)"
    assert err[21] == f"invalid: 2000 defect(s) on 200 line(s) in {path} (0 valid pairs record(s))"
    assert err[22] == (f"this file looks like kind 'sft': 200 of 200 lines are valid sft records; "
                       f"run: alignkit validate {path} --kind sft")
    # Following the advice works.
    assert schemas.validate_command(path, "sft") == 0
    assert capsys.readouterr().out == f"ok: 200 sft records in {path}\n"


def test_validate_command_hint_needs_a_majority_of_another_kind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 7 SFT lines and 3 pairs, checked as eval-items: sft fits 7 of 10.
    pairs = [edit(PAIR, id=f"p{i}") for i in range(3)]
    path = write(tmp_path, "mixed", jsonl(*_sft_rows(7), *pairs))
    assert schemas.validate_command(path, "eval-items") == 1
    assert capsys.readouterr().err.splitlines()[-1].startswith(
        "this file looks like kind 'sft': 7 of 10 lines are valid sft records; run: alignkit validate")
    # 5 SFT lines and 5 pairs, checked as negatives: no kind fits more than half.
    path = write(tmp_path, "half", jsonl(*_sft_rows(5), *[edit(PAIR, id=f"p{i}") for i in range(5)]))
    assert schemas.validate_command(path, "negatives") == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        "it does not look like another kind either: at most 5 of 10 lines are valid as any other kind "
        "(eval-items, sft, pairs, responses); check how the file was written")


def test_validate_command_no_hint_when_half_the_lines_are_valid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 2 valid SFT lines, 2 SFT lines without a response: half valid, so it is this kind with defects.
    rows = [*_sft_rows(2), edit(SFT, id="x1", drop=("response",)), edit(SFT, id="x2", drop=("response",))]
    path = write(tmp_path, "sft", jsonl(*rows))
    assert schemas.validate_command(path, "sft") == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == f"invalid: 2 defect(s) on 2 line(s) in {path} (2 valid sft record(s))"
    assert not any("looks like" in line or "another kind" in line for line in err)


def test_validate_command_hint_for_lines_that_are_not_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "junk", jsonl("not json", "{also not", '{"x": 1}'))
    assert schemas.validate_command(path, "sft") == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        "it does not look like another kind either: at most 0 of 3 lines are valid as any other kind "
        "(eval-items, negatives, pairs, responses); check how the file was written")


# --------------------------------------------------------------------------------------------------
# Optional fields: declared, so typed; absent is fine, present must have the type (null included)
# --------------------------------------------------------------------------------------------------

PAIR_AS_WRITTEN = edit(PAIR, negative_id="neg-0001", method="sft_sample", rejected_has_end=True, divergence_token=1,
                       margin=0.25)


def test_optional_fields_the_stages_write_are_accepted() -> None:
    assert schemas.check_record("pairs", PAIR_AS_WRITTEN) == []
    assert schemas.check_record("sft", edit(SFT, params={"key": "capitals:france"})) == []
    assert schemas.check_record("responses", edit(RESPONSE, drop=("seed",))) == []


@pytest.mark.parametrize(("kind", "obj", "expected"), [
    ("pairs", edit(PAIR_AS_WRITTEN, divergence_token=-1), [("divergence_token", "must be >= 0, got -1")]),
    ("pairs", edit(PAIR_AS_WRITTEN, divergence_token=True), [("divergence_token", "expected int, got bool")]),
    ("pairs", edit(PAIR_AS_WRITTEN, rejected_has_end="yes"), [("rejected_has_end", "expected bool, got string")]),
    ("pairs", edit(PAIR_AS_WRITTEN, negative_id=None), [("negative_id", "expected string, got null")]),
    ("pairs", edit(PAIR_AS_WRITTEN, method=""), [("method", "empty; expected non-empty text")]),
    ("sft", edit(SFT, params=[1, 2]), [("params", "expected object, got list")]),
    ("sft", edit(SFT, params=None), [("params", "expected object, got null")]),
])
def test_optional_fields_are_typed(kind: str, obj: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert schemas.check_record(kind, obj) == expected


def test_typed_records_are_frozen() -> None:
    example = schemas.SFTExample.from_dict(SFT)
    with pytest.raises(Exception, match="frozen"):
        example.response = "Lyon"  # type: ignore[misc]


# --------------------------------------------------------------------------------------------------
# scorable-responses: the input of `alignkit score`
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("obj", "expected"), [
    ({"item_id": "i1", "raw_output": " 5\nEND"}, []),
    ({"item_id": "i1", "response": "5", "emitted_end": True, "model": "other"}, []),
    (RESPONSE, []),  # a responses record (stage 06's output) is scorable as it is
    ({"item_id": "i1"}, [("raw_output", "missing; give raw_output (the text as generated) or response with "
                                        "emitted_end")]),
    ({"item_id": "i1", "response": "5"}, [("emitted_end", "missing")]),
    ({"model": "sft"}, [("item_id", "missing")]),
    ({"item_id": " ", "raw_output": " 5"}, [("item_id", "empty; expected the evaluation item's id")]),
    ({"item_id": "i1", "raw_output": None}, [("raw_output", "expected string, got null")]),
    ({"item_id": "i1", "raw_output": " 5", "model": ""}, [("model", "empty; expected a model name")]),
    ({"item_id": "i1", "raw_output": " 5", "seed": "0"},
     [("seed", "expected an integer training seed or null (an untrained arm); got '0'")]),
    # Another system's own fields are ignored: its answers are scored as they are.
    ({"item_id": "i1", "raw_output": " 5", "question": "x"}, []),
])
def test_scorable_responses(obj: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert schemas.check_record("scorable-responses", obj) == expected


def test_scorable_responses_are_unique_by_model_seed_and_item(tmp_path: Path) -> None:
    rows = [{"item_id": "i1", "raw_output": " 5", "model": "m"}, {"item_id": "i1", "raw_output": " 6", "model": "m"},
            {"item_id": "i1", "raw_output": " 6", "model": "other"},
            # Without a model there is no key: answers of one unnamed system are not compared.
            {"item_id": "i1", "raw_output": " 5"}, {"item_id": "i1", "raw_output": " 5"}]
    _, defects = schemas.validate_file(write(tmp_path, "mine", jsonl(*rows)), "scorable-responses")
    assert [(d.line, d.field, d.problem) for d in defects] == [
        (2, "item_id", "duplicate (model, seed, item_id) ('m', '', 'i1'); first on line 1")]
    assert "scorable-responses" not in schemas.KINDS  # not a kind of `alignkit validate`


# --------------------------------------------------------------------------------------------------
# Every record the stages write validates (built with the stages' own helpers)
# --------------------------------------------------------------------------------------------------


class _CharTokenizer:
    """One token per character: enough for ``pairs.build_pairs`` (truncation and the divergence token)."""

    eos_token = "\x00"

    def __call__(self, text: str, **_: Any) -> dict[str, list[int]]:
        return {"input_ids": [ord(char) for char in text]}


@pytest.fixture(scope="module")
def written() -> dict[str, list[dict[str, Any]]]:
    """One list of records per kind, as stages 01, 03, 04 and 06 build them (no model is loaded)."""
    import random

    from alignkit import world
    from alignkit.generation import Generation, GenerationSettings
    from alignkit.stages import evaluation, negatives, pairs, sft_data
    from alignkit.world import fewshot

    families = world.FAMILY_NAMES
    test = world.heldout_items(0, 2 * len(families), families)
    dev = world.dev_items(0, len(families), exclude=test, families=families)
    shots = world.training_items(7919, len(families), exclude=[*test, *dev], families=families)
    train = world.training_items(0, 2 * len(families), exclude=[*test, *dev, *shots], families=families)
    rng = random.Random(0)
    sampling = GenerationSettings(do_sample=True, stop_strings=fewshot.STOP_STRINGS, seed=1).to_dict()
    sft_rows = []
    for index, item in enumerate(train):
        response = item.reference or world.topic_sentence(item.params["topic"], rng)
        prompt = fewshot.prompt([(shot.instruction, shot.reference or "") for shot in shots[:2]], item.instruction)
        sft_rows.append(sft_data.sft_record(item, prompt, f" {response}\n\nQ: next", response, 1 + index % 3,
                                            sampling))
    answers = {row["id"]: {"greedy": row["response"], "greedy_stopped": True,
                           "samples": ["I cannot answer that request.", row["response"] + " " + row["response"] * 8,
                                       "Instruction: something else\nResponse: 7"],
                           "samples_stopped": [True, False, False]} for row in sft_rows}
    base = {row["id"]: {"response": row["response"] + "\nQ: What is 2 plus 2?\nA: 4", "stopped": False}
            for row in sft_rows}
    pool, _dropped = negatives.build_pool(sft_rows, answers, base, random.Random(0), NEGATIVE_TYPES)
    negative_rows = [{**candidate, "id": f"neg-{index:05d}"}
                     for index, candidate in enumerate(c for t in NEGATIVE_TYPES for c in pool.get(t, []))]
    scored: dict[str, list[dict]] = {}
    for answer in negatives.score_answers(sft_rows, answers):
        scored.setdefault(answer["sft_id"], []).append(answer)
    pair_rows, _dropped, _sources = pairs.build_pairs(_CharTokenizer(), negative_rows,
                                                      {row["id"]: row for row in sft_rows}, scored, 512, "pair")
    for index, pair in enumerate(pair_rows):
        pair["margin"] = round(0.5 - index * 0.125, 4)  # as stage 04 sets it from the log-probabilities
    arms = [artifacts.Arm("base", None, artifacts.ModelSpec(Path("."))),
            artifacts.Arm("base_fewshot", None, artifacts.ModelSpec(Path("."), None, "fewshot")),
            artifacts.Arm("sft", 0, artifacts.ModelSpec(Path(".")))]
    gens = [Generation("Instruction: x\nResponse:", " Paris\nEND", "Paris", True, "\nEND", 9, 3),
            Generation("Q: x\nA:", " Paris\n\nQ: next", "Paris", True, "\n\n", 4, 5),
            Generation("Instruction: x\nResponse:", " Paris is nice and", "Paris is nice and", False, None, 9, 6)]
    response_rows = [evaluation.response_record(arm, item.id, gen)
                     for arm in arms for item, gen in zip(test, gens * len(test))]
    return {"eval-items": [item.to_record() for item in [*test, *dev, *shots]], "sft": sft_rows,
            "negatives": negative_rows, "pairs": pair_rows, "responses": response_rows}


@pytest.mark.parametrize("kind", list(VALID))
def test_every_record_the_stages_write_validates(kind: str, written: dict[str, list[dict]], tmp_path: Path) -> None:
    from alignkit import files

    rows = written[kind]
    assert rows, f"no {kind} records were built"
    assert [(row.get("id", row.get("item_id")), schemas.check_record(kind, row)) for row in rows
            if schemas.check_record(kind, row)] == []
    path = tmp_path / f"{kind}.jsonl"
    files.write_jsonl(path, rows)
    assert schemas.load_records(path, kind) == json.loads(json.dumps(rows))
    # Nothing the stage writes is left undeclared: every field is one of the model's.
    declared = set(schemas.KINDS[kind].model_fields)
    assert set().union(*(row.keys() for row in rows)) <= declared


def test_the_stages_write_every_optional_field(written: dict[str, list[dict]]) -> None:
    assert {"negative_id", "method", "rejected_has_end", "divergence_token"} <= set(written["pairs"][0])
    assert {False, True} <= {pair["rejected_has_end"] for pair in written["pairs"]}  # END-less rejected too
    assert "params" in written["sft"][0]
    assert {row["seed"] for row in written["responses"]} == {None, 0}
    assert {negative["type"] for negative in written["negatives"]} == set(NEGATIVE_TYPES)


def test_responses_the_stages_write_are_scorable(written: dict[str, list[dict]]) -> None:
    assert [schemas.check_record("scorable-responses", row) for row in written["responses"]] == [
        [] for _ in written["responses"]]
