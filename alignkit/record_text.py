"""Pure checks of the text fields of records: each function returns the problems of one text (an empty list: none).

The record models of :mod:`alignkit.schemas` attach them to their fields (``rule(...)``), so a problem comes out as
``FILE:LINE: field: problem``.

>>> response_problems("Paris"), response_problems(" Paris")
([], ['has leading or trailing whitespace; expected it stripped'])
"""

from __future__ import annotations

from alignkit import template
from alignkit.jsonl import excerpt


def has_literal_newline_escape(text: str) -> bool:
    """Whether ``text`` contains a backslash followed by ``n``: an escaped newline never unescaped.

    Such text trains a model to write the two characters ``\\`` ``n`` instead of a line break.

    >>> has_literal_newline_escape("line one\\\\nline two")
    True
    >>> has_literal_newline_escape("line one\\nline two")
    False
    """
    return "\\n" in text


_LITERAL_NEWLINE_PROBLEM = (
    "contains a literal backslash-n (the two characters '\\' and 'n'); "
    "unescape it to a real newline or remove it"
)
_END = template.STOP_STRING


def _tag_problems(text: str) -> list[str]:
    return [f"contains the template tag {tag!r}; the template adds tags, the text must not contain them"
            for tag in template.TEMPLATE_TAGS if tag in text]


def text_basics(text: str) -> list[str]:
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
    """What is wrong with ``text`` as an instruction: one stripped line without template tags or literal \\\\n.

    >>> instruction_problems("Add 2 and 3.")
    []
    >>> [problem.split(";")[0] for problem in instruction_problems("Add 2 and 3.\\nResponse: 5")]
    ['contains a newline', "contains the template tag 'Response:'"]
    """
    problems = text_basics(text)
    if not text.strip():
        return problems
    if "\n" in text.strip() or "\r" in text.strip():
        problems.append("contains a newline; an instruction is a single line")
    return problems + _tag_problems(text)


def response_problems(text: str) -> list[str]:
    """What is wrong with ``text`` as a chosen/SFT response: stripped, non-empty, no tags, END or literal \\\\n.

    >>> response_problems("5")
    []
    >>> response_problems("5\\nEND")
    ["contains '\\\\nEND'; the template adds the END marker, the response must not contain it"]
    """
    problems = text_basics(text)
    if not text.strip():
        return problems
    problems += _tag_problems(text)
    if _END in text:
        problems.append(f"contains {_END!r}; the template adds the END marker, the response must not contain it")
    return problems


def negative_response_problems(text: str) -> list[str]:
    """Negatives may carry template residue on purpose (``format`` negatives): only the basics, and no END line
    (generation stops at the first one, so no model output has text after it)."""
    problems = text_basics(text)
    if _END in text:
        problems.append(f"contains {_END!r}; generation stops at END, and the completion adds it "
                        "when the model wrote it (emitted_end)")
    return problems


_PROMPT_HEAD = template.INSTRUCTION_TAG + " "
_PROMPT_TAIL = "\n" + template.RESPONSE_TAG


def pair_prompt_problems(text: str) -> list[str]:
    """A pair's prompt must be one built by ``template.prompt``.

    >>> pair_prompt_problems("Instruction: Add 2 and 3.\\nResponse:")
    []
    """
    problems = []
    if not text.startswith(_PROMPT_HEAD):
        problems.append(f"must start with {_PROMPT_HEAD!r}; got {excerpt(text[:40])}")
    if not text.endswith(_PROMPT_TAIL):
        problems.append(f"must end with {_PROMPT_TAIL!r}; got {excerpt(text[-40:])}")
    if not problems and not text[len(_PROMPT_HEAD) : -len(_PROMPT_TAIL)].strip():
        problems.append("has an empty instruction")
    if has_literal_newline_escape(text):
        problems.append(_LITERAL_NEWLINE_PROBLEM)
    return problems


def pair_completion_problems(text: str, allow_tags: bool = False, allow_no_end: bool = False) -> list[str]:
    """A pair's chosen/rejected must be one built by ``template.completion``: ``" {response}\\nEND"``.

    ``allow_tags`` is for ``rejected``: a ``format`` negative leaks template text on purpose. ``allow_no_end`` is
    for the rejected side of :data:`END_LESS_TYPES`: ``" {text}"`` as generated, without END anywhere.

    >>> pair_completion_problems(" 5\\nEND")
    []
    >>> pair_completion_problems("5")
    ["must start with ' ' (template.completion adds one space)", "must end with '\\\\nEND'"]
    """
    problems = []
    if not text.startswith(" "):
        problems.append("must start with ' ' (template.completion adds one space)")
    if allow_no_end and not text.endswith(_END):
        if _END in text:
            problems.append(f"contains {_END!r} but does not end with it; generation stops there")
        if not text.strip():
            problems.append("empty response after ' '")
        if has_literal_newline_escape(text):
            problems.append(_LITERAL_NEWLINE_PROBLEM)
        return problems
    if not text.endswith(_END):
        problems.append(f"must end with {_END!r}")
    if problems:
        return problems + ([_LITERAL_NEWLINE_PROBLEM] if has_literal_newline_escape(text) else [])
    body = text[1 : -len(_END)]
    if not body.strip():
        problems.append(f"empty response between ' ' and {_END!r}")
    if _END in body:
        problems.append(f"contains {_END!r} before its end; generation stops at the first END")
    if has_literal_newline_escape(text):
        problems.append(_LITERAL_NEWLINE_PROBLEM)
    return problems + ([] if allow_tags else _tag_problems(body))
