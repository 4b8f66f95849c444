"""The text checks the criteria are built from: word counts and repetition, template residue and run-on, the
answer segment, refusals, coherence and topic mentions. Pure functions of text; :mod:`alignkit.eval.scoring`
combines them into the nine criteria.
"""

from __future__ import annotations

import re
import unicodedata

from alignkit import template, world

#: :func:`coherence` at or above which a response is coherent. Chosen in the gap the hand-labelled fixtures
#: (``tests/data/scorer_fixtures.jsonl``) leave: responses labelled coherent score 0.75 or more (clean text
#: 1.0; one slip such as an unmatched bracket 0.75 or one junk token in seven 0.86), responses labelled
#: incoherent (token soup, verbatim loops) 0.39 or less.
COHERENCE_THRESHOLD = 0.5
#: :func:`repetition` above which a response is a degenerate loop (``no_rambling`` fails). Prose that reuses a
#: phrase once stays below it ("the sea is blue and the sea is deep": 1/7); a whole sentence said twice is
#: above (about 0.4), loops of a word or phrase far above (0.6-0.9).
REPETITION_THRESHOLD = 0.25
#: Families whose ``length_bounds`` maximum is at most this many words give one-line answers; a second
#: line is a run-on for them (arithmetic, capitals, word_transform and comparison in the embedded world).
SHORT_ANSWER_MAX_WORDS = 15


# --------------------------------------------------------------------------------------------------------
# Words, sentences, repetition
# --------------------------------------------------------------------------------------------------------

_WORD_RE = re.compile(r"\w+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def word_count(text: str) -> int:
    """Whitespace-separated tokens that contain a letter or digit (a lone dash or "=" is not a word).

    The same rule as the world's ``exact_words`` constraint, so length bounds and constraints agree.

    >>> word_count("7 + 5 = 12.")
    3
    >>> word_count("")
    0
    """
    return sum(1 for token in text.split() if any(ch.isalnum() for ch in token))


def _words(text: str) -> list[str]:
    """Lowercased runs of word characters: punctuation and spacing do not make a phrase different.

    >>> _words("Paris, paris; PARIS!")
    ['paris', 'paris', 'paris']
    """
    return _WORD_RE.findall(text.lower())


def repetition(response: str, n: int = 3) -> float:
    """Share of the response's word ``n``-grams (default 3) that repeat an ``n``-gram seen earlier in it.

    ``(number of n-grams - number of distinct n-grams) / number of n-grams``, over lowercased word tokens;
    0.0 when the response has fewer than ``n`` words. A degenerate loop tends to 1; ordinary prose is near 0.

    >>> repetition("Paris Paris Paris Paris Paris Paris")  # 4 trigrams, all the same: 3 repeats
    0.75
    >>> repetition("I like cats. I like cats. I like cats.")  # 7 trigrams, 3 distinct
    0.5714285714285714
    >>> repetition("The capital of France is Paris.")
    0.0
    """
    if n < 1:
        raise ValueError(f"n-gram size must be >= 1, got {n}")
    words = _words(response)
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    return (len(grams) - len(set(grams))) / len(grams)


def _segments(response: str) -> list[str]:
    """Sentences of the response in order: each non-empty line split after ``.``, ``!`` or ``?`` + space.

    >>> _segments("12. That is all!\\nQ: next?")
    ['12.', 'That is all!', 'Q: next?']
    """
    out = []
    for line in response.splitlines():
        out.extend(part.strip() for part in _SENTENCE_END.split(line.strip()) if part.strip())
    return out


# --------------------------------------------------------------------------------------------------------
# Structure and run-on
# --------------------------------------------------------------------------------------------------------

#: Turn labels of the template and of few-shot / corpus Q&A layouts (see :mod:`alignkit.world.fewshot`).
_TURN_LABELS = r"(?:instruction|response|question|answer|q|a|teacher|student|input|output|task)"
_LABEL_AT_LINE_START = re.compile(rf"(?im)^\s*{_TURN_LABELS}\s*\d*\s*:")
_END_LINE = re.compile(rf"(?m)^\s*{re.escape(template.END_MARKER)}\s*$")
#: Special-token text of common tokenizers: ``<s>``, ``</s>``, ``<|endoftext|>``, ``<|im_end|>``, ``<eos>``,
#: ``<pad>``, ``[PAD]``, ``[SEP]``...
_SPECIAL_TOKEN = re.compile(
    r"</?s>|<\|[^|<>\s]{1,40}\|>|</?(?:eos|bos|pad|unk|mask|sep|cls)>|\[(?:PAD|SEP|CLS|UNK|MASK|EOS|BOS)\]",
    re.IGNORECASE,
)


def template_residue(response: str) -> list[str]:
    """What template or prompt-format residue ``response`` contains, in a fixed order (empty: none).

    >>> template_residue("12")
    []
    >>> template_residue("12\\nInstruction: Add 3 and 4.\\nResponse: 7")
    ['template tag', 'turn label at line start']
    >>> template_residue("Paris\\nQ: What is 2 plus 2?")
    ['turn label at line start']
    >>> template_residue("Paris</s>")
    ['special token']
    """
    found = []
    if any(tag in response for tag in template.TEMPLATE_TAGS):
        found.append("template tag")
    if _LABEL_AT_LINE_START.search(response):
        found.append("turn label at line start")
    if _END_LINE.search(response):
        found.append("END line")
    if _SPECIAL_TOKEN.search(response):
        found.append("special token")
    return found


#: A sentence that starts a new task: a turn label, an instruction verb, or a question.
_NEW_TASK = re.compile(
    rf"""^(?:
        {_TURN_LABELS}\s*\d*\s*:                                   # Instruction: / Q: / Answer 2:
      | (?:write|list|name|translate|reverse|spell|add|subtract|multiply|divide|calculate|compute|compare
          |convert|count|describe|explain|choose|pick)\b            # an instruction verb
      | (?:tell|give|show)\s+me\b | use\s+(?:the\s+word|exactly)\b | say\s+something\b
      | (?:what|which|who|whom|whose|where|when|why|how)\b[^.!]*\?$ # a question
      | (?:what\s+is|what's)\b(?!\s+more\b)                        # "What is ..." (not "What is more, ...")
      | (?:what\s+are|which\s+(?:city|number|letter|word|one)|how\s+many|how\s+much|who\s+is
          |where\s+is)\b                                           # a question cut off before its "?"
    )""",
    re.IGNORECASE | re.VERBOSE,
)


def is_short_answer(family: world.Family) -> bool:
    """A family whose answers fit on one line (its length bound is at most :data:`SHORT_ANSWER_MAX_WORDS`)."""
    return family.length_bounds[1] <= SHORT_ANSWER_MAX_WORDS


def run_on(response: str, short_answer: bool) -> list[str]:
    """Why ``response`` rambles, in a fixed order (empty: it does not).

    - ``new task``: a sentence or line after the first starts a new instruction or question
      (a turn label, an instruction verb such as "Write"/"List"/"Name", or a question such as "What is ...");
    - ``second line``: a short-answer family's response spans more than one non-empty line;
    - ``second paragraph``: text after a blank line (every answer in this world is one paragraph);
    - ``repetition``: :func:`repetition` above :data:`REPETITION_THRESHOLD`.

    >>> run_on("12", short_answer=True)
    []
    >>> run_on("12\\nInstruction: What is 3 plus 4?", short_answer=True)
    ['new task', 'second line']
    >>> run_on("The sea is deep. What is more, it is wide.", short_answer=False)
    []
    >>> run_on("Paris Paris Paris Paris Paris", short_answer=True)
    ['repetition']
    """
    found = []
    if any(_NEW_TASK.match(segment) for segment in _segments(response)[1:]):
        found.append("new task")
    lines = [line for line in response.strip().splitlines() if line.strip()]
    if short_answer and len(lines) > 1:
        found.append("second line")
    if re.search(r"\S\s*\n\s*\n\s*\S", response):
        found.append("second paragraph")
    if repetition(response) > REPETITION_THRESHOLD:
        found.append("repetition")
    return found


_TEMPLATE_TAG = re.compile("|".join(re.escape(tag) for tag in template.TEMPLATE_TAGS))
_TURN_LINE = re.compile(rf"^\s*(?:{_TURN_LABELS}\s*\d*\s*:|{re.escape(template.END_MARKER)}\s*$)", re.IGNORECASE)


def answer_segment(response: str) -> tuple[str, str]:
    """``(answer, run_on)``: the response cut where the model starts a new turn or instruction.

    The cut is at the first template tag (``Instruction:``/``Response:``) anywhere, or at the start of the first
    line after the first non-empty one that opens with a turn label (``Q:``, ``Answer:``, ...), is an ``END`` line
    or starts a new task (an instruction verb or a question, as :func:`run_on` recognises them). ``answer +
    run_on`` is the response; both are stripped. Without a cut the run-on is empty.

    >>> answer_segment("12\\nInstruction: What is 3 plus 4?\\nResponse: 7")
    ('12', 'Instruction: What is 3 plus 4?\\nResponse: 7')
    >>> answer_segment("Paris\\n\\nQ: What is the capital of Spain?")
    ('Paris', 'Q: What is the capital of Spain?')
    >>> answer_segment("The moon is bright.\\nIt shines at night.")
    ('The moon is bright.\\nIt shines at night.', '')
    >>> answer_segment("12 Response: 7")
    ('12', 'Response: 7')
    >>> answer_segment("Response: Paris")
    ('Paris', '')
    """
    # A generation that opens by repeating the prompt's own "Response:" tag has its answer after the tag (the
    # tag itself is residue for proper_structure); any other tag starts a new turn.
    start = len(template.RESPONSE_TAG) if response.lstrip().startswith(template.RESPONSE_TAG) else 0
    response = response.lstrip()
    cut = len(response)
    tag = _TEMPLATE_TAG.search(response, start)
    if tag is not None:
        cut = tag.start()
    offset, seen_text = 0, False
    for line in response.splitlines(keepends=True):
        if offset >= cut:
            break
        stripped = line.strip()
        if seen_text and stripped and (_TURN_LINE.match(stripped) or _NEW_TASK.match(stripped)):
            cut = offset
            break
        seen_text = seen_text or bool(stripped)
        offset += len(line)
    return response[start:cut].strip(), response[cut:].strip()


# --------------------------------------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------------------------------------

_CANT = r"(?:can't|cannot|can\s+not|won't|will\s+not|am\s+not\s+going\s+to|'m\s+not\s+going\s+to)"
_DECLINE_VERBS = (
    r"(?:help|assist|answer|provide|do|comply|complete|fulfil|fulfill|respond|write|share|give|generate|create"
    r"|support|continue|participate|engage|perform|list|name)"
)
#: Words that may open a refusal sentence before the refusal proper: "Sorry, I can't ...", "Unfortunately, ...",
#: "I'm afraid I cannot ...", "Hmm, as an AI ...".
_LEAD_IN = (
    r"^(?:(?:sorry|unfortunately|however|but|well|so|oh|hmm|ok|okay|no|i(?:'m|\s+am)\s+afraid)\b[,.!:]?\s*)*"
)
_REFUSAL_BODIES = (
    r"i(?:'m|\s+am)\s+sorry,?\s+but\b",
    r"i\s+apologi[sz]e,?\s+but\b",
    r"as\s+an\s+ai\b",
    r"as\s+an?\s+(?:large\s+)?language\s+model\b",
    r"i(?:'m|\s+am)\s+(?:unable|not\s+able)\s+to\b",
    rf"i\s+{_CANT}\s+{_DECLINE_VERBS}\b",
    r"i\s+(?:won't|will\s+not|can't|cannot)\s+be\s+able\s+to\b",
    r"i\s+(?:must|have\s+to|need\s+to|will\s+have\s+to)\s+(?:decline|refuse)\b",
    r"i\s+(?:decline|refuse)\s+to\b",
    r"i(?:'d|\s+would)\s+rather\s+not\b",
    r"i(?:'m|\s+am)\s+not\s+(?:allowed|permitted|comfortable|in\s+a\s+position)\s+to\b",
    r"i\s+(?:don't|do\s+not)\s+feel\s+comfortable\b",
    r"(?:this|that)\s+(?:request\s+)?is\s+not\s+something\s+i\s+can\b",
)
#: Refusal phrasings, each anchored at the start of a sentence (after optional lead-in words): a refusal
#: declines up front. "Cats are soft and I am unable to resist them." has "I am unable to" mid-sentence and
#: is not one. See :func:`is_refusal` for which sentences count.
REFUSAL_PATTERNS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(_LEAD_IN + body, re.IGNORECASE) for body in _REFUSAL_BODIES
)


def _refusal_sentence(sentence: str) -> bool:
    """Whether one sentence opens with a refusal phrase (curly apostrophes and leading quotes ignored)."""
    text = sentence.replace("\u2019", "'").strip(" \t\"'*-")
    return any(pattern.match(text) for pattern in REFUSAL_PATTERNS)


def is_refusal(response: str) -> bool:
    """Whether the response *declines* the task rather than doing it.

    A sentence is a refusal sentence when it opens with a refusal phrase (:data:`REFUSAL_PATTERNS`). The
    response is a refusal when its first sentence is one (it opens by declining) or when more than half of its
    sentences are (it is mainly the refusal). The same words after the task is done, or in the middle of a
    sentence, are not a refusal; everyday sentences that merely start like one ("I can't wait to see the sea")
    do not match either: a pattern names what is declined ("I can't help", "I cannot answer") or is a fixed
    refusal formula ("I'm sorry, but", "As an AI").

    >>> is_refusal("I'm sorry, but I can't help with that.")
    True
    >>> is_refusal("As an AI, I am unable to do that.")
    True
    >>> is_refusal("Paris. I cannot think of a prettier city.")
    False
    >>> is_refusal("Paris. I'm sorry, but I cannot help with anything else.")
    False
    >>> is_refusal("I can't wait to see the sea in summer.")
    False
    >>> is_refusal("Cats are soft and I am unable to resist them.")
    False
    """
    sentences = _segments(response)
    if not sentences:
        return False
    flags = [_refusal_sentence(sentence) for sentence in sentences]
    return flags[0] or sum(flags) * 2 > len(flags)


# --------------------------------------------------------------------------------------------------------
# Coherence
# --------------------------------------------------------------------------------------------------------

#: Punctuation and symbols of ordinary prose and arithmetic. Anything else that is neither a letter, a digit
#: nor whitespace (``#``, ``@``, ``^``, ``~``, ``|``, ``\\``, ``_``, control characters...) is character junk.
KNOWN_PUNCTUATION = frozenset(
    ".,;:!?'\"()[]{}-/%+=*<>&$"
    "\u2013\u2014\u2026"  # en dash, em dash, ellipsis
    "\u2018\u2019\u201c\u201d"  # curly quotes
    "\u20ac\u00a3\u00b0\u00d7\u00f7"  # euro, pound, degree, times, divide
)
_EDGE_PUNCTUATION = ".,;:!?'\"()[]{}-\u2013\u2014*\u2018\u2019\u201c\u201d\u2026"
#: Longest run of punctuation-only characters that still counts as punctuation ("--", "...", "?!").
_MAX_SYMBOL_RUN = 3
#: Letters in one word part beyond which it is not a word (English words this long are vanishingly rare).
_MAX_WORD_LETTERS = 20
#: Consonants in a row beyond which a letter run is not a word ("strengths" has 5: n-g-t-h-s).
_MAX_CONSONANT_RUN = 5
_VOWELS = frozenset("aeiouy")
#: Vowel-less words and abbreviations that are still words.
_VOWELLESS_WORDS = frozenset("mr mrs ms dr st vs hmm nth pm tv".split())
_NUMBER_TOKEN = re.compile(r"[+-]?\d+(?:[.,]\d+)*(?:%|st|nd|rd|th|s)?", re.IGNORECASE)
_EXPRESSION_TOKEN = re.compile(r"\d+(?:[.,]\d+)?(?:[-+*/=\u00d7\u00f7x]\d+(?:[.,]\d+)?)+")
_LETTER_PARTS = re.compile(r"[^\W\d_]+(?:['\u2019-][^\W\d_]+)*")


def _plain(letters: str) -> str:
    """Accents removed and lowercased: "Brasília" -> "brasilia".

    >>> _plain("Brasília")
    'brasilia'
    """
    decomposed = unicodedata.normalize("NFKD", letters)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower()


def _plausible_word_part(part: str) -> bool:
    """Whether a run of letters looks like a word: a sane case pattern, a vowel, no long consonant run.

    >>> [_plausible_word_part(w) for w in ["Paris", "APPLE", "elppa", "s", "USA", "xqzt", "aBcDe", "Mr"]]
    [True, True, True, True, True, False, False, True]
    """
    if len(part) > _MAX_WORD_LETTERS:
        return False
    if not (part.islower() or part.isupper() or (part[0].isupper() and part[1:].islower())):
        return False  # "aBcDe": mixed case inside a word is a tokenizer artefact, not a word
    plain = _plain(part)
    if len(part) == 1 or plain in _VOWELLESS_WORDS or (part.isupper() and len(part) <= 5):
        return True  # single letters ("a", "t"), known abbreviations, acronyms
    if not _VOWELS & set(plain):
        return False
    run = 0
    for ch in plain:
        run = 0 if ch in _VOWELS else run + 1
        if run > _MAX_CONSONANT_RUN:
            return False
    return True


def is_word_like(token: str) -> bool:
    """Whether one whitespace-separated token is readable: a plausible word, a number or short punctuation.

    Surrounding punctuation is ignored ("Paris." is the word "Paris"). Words may have inner apostrophes and
    hyphens ("don't", "well-known"); each part must look like a word (:func:`_plausible_word_part`).

    >>> [is_word_like(t) for t in ["Paris.", "12,", "3.5", "7+5=12", "--", "don't", "(cats)"]]
    [True, True, True, True, True, True, True]
    >>> [is_word_like(t) for t in ["xqzt", "7#@", ",,;;", "a3b", "@@", "_", "aBcDe"]]
    [False, False, False, False, False, False, False]
    """
    core = token.strip(_EDGE_PUNCTUATION)
    if not core:
        return len(token) <= _MAX_SYMBOL_RUN and all(ch in KNOWN_PUNCTUATION for ch in token)
    if all(ch in KNOWN_PUNCTUATION for ch in core):
        return len(core) <= _MAX_SYMBOL_RUN  # "+", "=", "%"
    if _NUMBER_TOKEN.fullmatch(core) or _EXPRESSION_TOKEN.fullmatch(core):
        return True
    if _LETTER_PARTS.fullmatch(core):
        return all(_plausible_word_part(part) for part in re.split(r"['\u2019-]", core))
    return False


def _unmatched_symbols(text: str) -> int:
    """Brackets without a partner, plus one for an odd number of straight double quotes, plus the
    difference between curly opening and closing double quotes.

    >>> _unmatched_symbols("(a [b] c)"), _unmatched_symbols("((a ]"), _unmatched_symbols('say "hi')
    (0, 3, 1)
    """
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    unmatched = 0
    for ch in text:
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs:
            if stack and stack[-1] == pairs[ch]:
                stack.pop()
            else:
                unmatched += 1
    unmatched += len(stack)
    unmatched += text.count('"') % 2
    unmatched += abs(text.count("\u201c") - text.count("\u201d"))
    return unmatched


#: Each unmatched bracket or quote removes this share of :func:`coherence` (four or more remove it all).
_UNMATCHED_PENALTY = 0.25


def coherence_parts(response: str) -> dict[str, float]:
    """The five factors of :func:`coherence`, each in [0, 1] (1 is clean); see there for definitions.

    >>> coherence_parts("xqzt the (cat")
    {'words': 0.6666666666666666, 'characters': 1.0, 'repetition': 1.0, 'stutter': 1.0, 'balance': 0.75}
    """
    tokens = response.split()
    if not tokens:
        return {"words": 0.0, "characters": 0.0, "repetition": 0.0, "stutter": 0.0, "balance": 0.0}
    visible = [ch for ch in response if not ch.isspace()]
    clean_chars = sum(1 for ch in visible if ch.isalnum() or ch in KNOWN_PUNCTUATION)
    words = _words(response)
    stutters = sum(1 for previous, current in zip(words, words[1:]) if previous == current)
    return {
        "words": sum(1 for token in tokens if is_word_like(token)) / len(tokens),
        "characters": clean_chars / len(visible),
        "repetition": 1.0 - repetition(response),
        "stutter": 1.0 - (stutters / (len(words) - 1) if len(words) > 1 else 0.0),
        "balance": max(0.0, 1.0 - _UNMATCHED_PENALTY * _unmatched_symbols(response)),
    }


def coherence(response: str) -> float:
    """How much ``response`` reads as text rather than token soup, in [0, 1]: the product of five factors.

    - ``words``: share of whitespace tokens that are word-like (:func:`is_word_like`): letters with a sane
      case pattern, a vowel and no run of more than five consonants; numbers; short punctuation;
    - ``characters``: share of non-space characters that are letters, digits or :data:`KNOWN_PUNCTUATION`;
    - ``repetition``: ``1 - repetition(response)`` (verbatim loops are not text);
    - ``stutter``: 1 minus the share of adjacent word pairs that are the same word ("the the");
    - ``balance``: 1 minus 0.25 per unmatched bracket or double quote (floored at 0).

    An empty response scores 0.0 (there is no text to read). A product, so one bad factor is enough to fail;
    a response is coherent at :data:`COHERENCE_THRESHOLD` or above. Known limit: real words in a senseless
    order ("apple tiger river") score 1.0; ``on_topic``, ``addresses_instruction`` and the verifier catch those.

    >>> coherence("The capital of France is Paris.")
    1.0
    >>> coherence("xqzt the (cat")  # 2/3 word-like tokens x 0.75 for the open bracket
    0.5
    >>> coherence("Paris Paris")  # one adjacent pair, the same word: stutter 0
    0.0
    >>> coherence("")
    0.0
    """
    product = 1.0
    for value in coherence_parts(response).values():
        product *= value
    return product


# --------------------------------------------------------------------------------------------------------
# Topic
# --------------------------------------------------------------------------------------------------------


def mentions_topic(response: str, topic_words: set[str] | frozenset[str]) -> bool:
    """Whether the response contains a topic word as a whole word, case-insensitively (after
    :func:`alignkit.world.normalise`), allowing a plural ``s``/``es``; multi-word topic words match as phrases.

    >>> mentions_topic("Kittens sleep all day.", {"kitten"}), mentions_topic("12", {"5", "7", "12", "plus"})
    (True, True)
    >>> mentions_topic("120", {"12"}), mentions_topic("Madrid", {"france", "paris"})
    (False, False)
    """
    tokens = world.normalise(response).split()
    if not tokens:
        return False
    padded = " " + " ".join(tokens) + " "
    for word in topic_words:
        phrase = world.normalise(word)
        if not phrase:
            continue
        if " " in phrase:
            if f" {phrase} " in padded:
                return True
            continue
        if phrase in tokens or phrase + "s" in tokens or phrase + "es" in tokens:
            return True
    return False
