"""Tests for alignkit.template: the one prompt template, its stop marker and its inverses."""

from __future__ import annotations

import pytest

from alignkit import template
from alignkit.template import (
    END_MARKER,
    STOP_STRING,
    TEMPLATE_TAGS,
    completion,
    full_text,
    prompt,
    response_from_completion,
    split_output,
)


# ---------------------------------------------------------------------------------------------- constants
def test_constants_spell_the_template():
    assert END_MARKER == "END"
    assert STOP_STRING == "\nEND"
    assert TEMPLATE_TAGS == ("Instruction:", "Response:")


# ---------------------------------------------------------------------------------------------- prompt
def test_prompt_exact_string():
    assert prompt("Add 2 and 3.") == "Instruction: Add 2 and 3.\nResponse:"


def test_prompt_strips_surrounding_whitespace_of_the_instruction():
    # The prompt is the exact string sent to the model: no double space after the tag, no trailing newline
    # before "\nResponse:".
    assert prompt("  Add 2 and 3.\n ") == "Instruction: Add 2 and 3.\nResponse:"


def test_prompt_keeps_inner_newlines_and_ends_without_space():
    # The completion supplies the space after "Response:"; a prompt ending in a space would change tokenisation.
    text = prompt("Line one.\nLine two.")
    assert text == "Instruction: Line one.\nLine two.\nResponse:"
    assert not text.endswith(" ")


# ---------------------------------------------------------------------------------------------- completion
def test_completion_exact_string():
    assert completion("5") == " 5\nEND"


def test_completion_strips_response_whitespace():
    assert completion("  Paris \n") == " Paris\nEND"


def test_completion_of_multiline_response():
    assert completion("a\nb") == " a\nb\nEND"


def test_full_text_is_prompt_plus_completion():
    assert full_text("Add 2 and 3.", "5") == "Instruction: Add 2 and 3.\nResponse: 5\nEND"
    assert full_text(" x ", " y ") == prompt("x") + completion("y")
    assert full_text("x", "y") == "Instruction: x\nResponse: y\nEND"


# ---------------------------------------------------------------------------------------------- split_output
def test_split_output_with_end_and_trailing_text():
    assert split_output(" 5\nEND\nInstruction: more") == ("5", True)


def test_split_output_without_end_returns_everything_stripped():
    # Without END the whole continuation is the response (never shortened to help it pass).
    assert split_output(" 5 and then some") == ("5 and then some", False)
    assert split_output("  a\nb\n  ") == ("a\nb", False)


def test_split_output_end_inside_a_word_is_not_a_stop():
    # "END" not preceded by a newline does not stop: "ENDING", "WEEKEND", " END" on the same line.
    assert split_output(" ENDING soon") == ("ENDING soon", False)
    assert split_output(" the WEEKEND") == ("the WEEKEND", False)
    assert split_output(" stop END here") == ("stop END here", False)


def test_split_output_multiple_ends_cut_at_the_first():
    assert split_output(" a\nEND\nb\nEND") == ("a", True)
    assert split_output(" a\nEND\nEND") == ("a", True)


def test_split_output_end_immediately():
    # The model emitted END with an empty answer: marker seen, response empty.
    assert split_output("\nEND") == ("", True)
    assert split_output(" \nEND") == ("", True)


def test_split_output_empty_and_whitespace():
    assert split_output("") == ("", False)
    assert split_output("   \n ") == ("", False)


def test_split_output_strips_whitespace_around_the_response_only():
    assert split_output("   Paris  \nEND  trailing") == ("Paris", True)
    # Inner newlines of a multi-line answer are kept.
    assert split_output(" a\n b\nEND") == ("a\n b", True)


def test_split_output_marker_without_newline_at_start_is_not_a_stop():
    # A continuation that starts with "END" has no newline before it (the prompt ends with "Response:").
    assert split_output("END") == ("END", False)


def test_split_output_agrees_with_the_generation_stop_rule():
    # Generation stops on the decoded text containing STOP_STRING; split_output must cut at the same place,
    # otherwise a stopped generation could be scored as "no END".
    from alignkit import generation

    samples = [" 5\nEND", " 5\nENDING", " ENDING", " a\nEND\nb\nEND", "", " x\nEN", "\nEND"]
    for raw in samples:
        response, stopped, _stop = generation.cut_at_stop(raw, [STOP_STRING])
        assert split_output(raw) == (response, stopped), raw


# ---------------------------------------------------------------------------------------------- inverse
@pytest.mark.parametrize("response", ["5", "Paris", "a\nb", "one two three", "ENDING", "x\nEND y"])
def test_response_from_completion_inverts_completion(response):
    assert response_from_completion(completion(response)) == response


def test_response_from_completion_after_completion_strips():
    assert response_from_completion(completion("  padded  ")) == "padded"


def test_response_from_completion_of_empty_response():
    assert completion("") == " \nEND"
    assert response_from_completion(" \nEND") == ""


@pytest.mark.parametrize("bad, message", [
    ("5\nEND", "start with a single space"),
    ("", "start with a single space"),
    (" 5", "end with a newline and 'END'"),
    (" 5 END", "end with a newline and 'END'"),
    (" 5\nEND\n", "end with a newline and 'END'"),
    (" 5\nEND ", "end with a newline and 'END'"),
    (" 5\\nEND", "end with a newline and 'END'"),  # literal backslash-n is not a newline
])
def test_response_from_completion_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        response_from_completion(bad)


def test_response_from_completion_rejects_double_leading_space():
    with pytest.raises(ValueError, match="single space"):
        response_from_completion("  5\nEND")


def test_module_has_no_other_template_strings():
    # The template is spelled once: prompt() and completion() use the module constants.
    assert template.prompt("q").startswith(template.INSTRUCTION_TAG + " ")
    assert template.prompt("q").endswith("\n" + template.RESPONSE_TAG)
    assert template.completion("r").endswith(template.STOP_STRING)
