"""The one prompt template of the study; every other module calls this one.

``Instruction: {instruction}\\nResponse: {response}\\nEND``

Training stores ``prompt = "Instruction: {instruction}\\nResponse:"`` and
``completion = " {response}\\nEND"`` (the tokenizer's EOS is appended after ``END`` by the trainer).
Generation sends :func:`prompt` and stops at :data:`END_MARKER`.
"""

from __future__ import annotations

INSTRUCTION_TAG = "Instruction:"
RESPONSE_TAG = "Response:"
END_MARKER = "END"
#: What generation stops on: END on its own line. A bare "END" inside a word (e.g. "ENDING") is not a stop.
STOP_STRING = "\n" + END_MARKER
#: Tags that must never appear inside a response.
TEMPLATE_TAGS = (INSTRUCTION_TAG, RESPONSE_TAG)


def prompt(instruction: str) -> str:
    """The exact string sent to a model for ``instruction``.

    >>> prompt("Add 2 and 3.")
    'Instruction: Add 2 and 3.\\nResponse:'
    """
    return f"{INSTRUCTION_TAG} {instruction.strip()}\nResponse:"


def completion(response: str) -> str:
    """The training target after :func:`prompt`: a leading space, the response, a newline and END.

    >>> completion("5")
    ' 5\\nEND'
    """
    return f" {response.strip()}{STOP_STRING}"


def full_text(instruction: str, response: str) -> str:
    """Prompt and completion joined, as one training document (without EOS).

    >>> full_text("Add 2 and 3.", "5")
    'Instruction: Add 2 and 3.\\nResponse: 5\\nEND'
    """
    return prompt(instruction) + completion(response)


def split_output(raw_output: str) -> tuple[str, bool]:
    """Split a raw generated continuation of :func:`prompt` into ``(response, emitted_end)``.

    The response is the text before the first ``\\nEND`` (stripped); ``emitted_end`` says whether the
    marker occurred at all. Without END the whole continuation is the response, as generated: scoring
    never shortens a run-on answer to make it pass.

    >>> split_output(" 5\\nEND\\nInstruction: more")
    ('5', True)
    >>> split_output(" 5 and then some")
    ('5 and then some', False)
    """
    index = raw_output.find(STOP_STRING)
    if index < 0:
        return raw_output.strip(), False
    return raw_output[:index].strip(), True


def response_from_completion(completion_text: str) -> str:
    """Invert :func:`completion`; raises ``ValueError`` naming what is wrong if it is not one.

    >>> response_from_completion(" 5\\nEND")
    '5'
    """
    if not completion_text.startswith(" ") or completion_text.startswith("  "):
        raise ValueError("completion must start with a single space after 'Response:'")
    if not completion_text.endswith(STOP_STRING):
        raise ValueError(f"completion must end with a newline and {END_MARKER!r}")
    return completion_text[1 : -len(STOP_STRING)]
