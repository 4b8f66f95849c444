"""Words and numbers as the report and the notebooks show them: labels, descriptions, colours, formats."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from alignkit.config import EVAL_MODELS

#: What each arm is, in a few words.
MODEL_DESCRIPTIONS = {
    "base_fewshot": "base model, its own few-shot Q:/A: format (content baseline)",
    "base": "base model, study template (format baseline)",
    "sft": "supervised fine-tuning",
    "sft_dpo": "SFT, then DPO",
    "dpo_only": "DPO from the base model (control)",
}
MODEL_COLORS = {"base_fewshot": "#b8bfcc", "base": "#8d99ae", "sft": "#3a7ca5", "sft_dpo": "#2a9d8f",
                "dpo_only": "#e9a03b"}
ENDPOINT_LABELS = {
    "ends_with_end": "ends with END", "proper_structure": "proper structure", "no_rambling": "no rambling",
    "addresses_instruction": "addresses instruction", "appropriate_length": "appropriate length",
    "no_unwarranted_refusal": "no unwarranted refusal", "factually_correct": "factually correct",
    "coherent": "coherent", "on_topic": "on topic", "format": "FORMAT", "content": "CONTENT", "overall": "OVERALL",
}
STAGE_TITLES = {"01_sft_data": "SFT data", "02_sft_training": "SFT training", "03_negatives": "Negatives",
                "04_preference_pairs": "Preference pairs", "05_dpo_training": "DPO training",
                "06_evaluation": "Evaluation"}
#: Adjusted-p thresholds and their marks, strictest first.
SIGNIFICANCE_MARKS: tuple[tuple[float, str], ...] = ((0.001, "***"), (0.01, "**"), (0.05, "*"))


def pct(x: float | None, digits: int = 1) -> str:
    """A rate as a percentage.

    >>> pct(0.6234), pct(None), pct(1.0, 0)
    ('62.3%', 'n/a', '100%')
    """
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def pts(x: float | None, digits: int = 1) -> str:
    """A difference of rates in signed percentage points.

    >>> pts(0.123), pts(-0.05), pts(None)
    ('+12.3', '-5.0', 'n/a')
    """
    return "n/a" if x is None else f"{100 * x:+.{digits}f}"


def fmt_p(p: float | None) -> str:
    """A p-value for tables.

    >>> fmt_p(0.5), fmt_p(0.0004321), fmt_p(2e-9), fmt_p(None)
    ('0.5', '0.000432', '2.0e-09', 'n/a')
    """
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    return f"{p:.1e}" if p < 1e-4 else f"{p:.3g}"


def significance_mark(p_adjusted: float | None) -> str:
    """``***``/``**``/``*`` for adjusted p below 0.001/0.01/0.05, else ``""`` (not significant).

    >>> [significance_mark(p) for p in (0.0002, 0.004, 0.03, 0.2, None)]
    ['***', '**', '*', '', '']
    """
    if p_adjusted is None:
        return ""
    for threshold, mark in SIGNIFICANCE_MARKS:
        if p_adjusted < threshold:
            return mark
    return ""


def rank(name: str, order: Sequence[str]) -> tuple[int, str]:
    """Sort key: position in ``order`` (JSON files store keys sorted), unknown names last.

    >>> sorted(["verbose", "refusal", "zzz"], key=lambda t: rank(t, ("refusal", "verbose")))
    ['refusal', 'verbose', 'zzz']
    """
    return (list(order).index(name) if name in order else len(order), name)


def model_rank(name: str) -> tuple[int, str]:
    return rank(name, EVAL_MODELS)


def endpoint_label(name: str) -> str:
    return ENDPOINT_LABELS.get(name, name.replace("_", " "))


def model_description(name: str) -> str:
    return MODEL_DESCRIPTIONS.get(name, "")


def fixed(x: Any, digits: int = 1) -> str:
    """A number with fixed decimals, ``–`` when absent.

    >>> fixed(826.8), fixed(827), fixed(None)
    ('826.8', '827.0', '–')
    """
    return "–" if x is None else f"{x:.{digits}f}"


def num(x: Any, digits: int = 3) -> Any:
    """A number with ``digits`` significant digits (thousands separated), ``–`` when absent.

    >>> num(0.123456), num(12345.6), num(None), num(7)
    ('0.123', '12,346', '–', 7)
    """
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:,.0f}"
    return "–" if x is None else x


def rate_text(entry: Mapping[str, Any] | None, with_spread: bool = True) -> str:
    """``62.3% [54–70]`` plus `` ±2.1 over seeds`` when per-seed rates differ.

    >>> rate_text({"rate": 0.5, "ci_low": 0.4, "ci_high": 0.6, "per_seed": {0: 0.45, 1: 0.55}, "sd": 0.0707,
    ...            "min": 0.45, "max": 0.55})
    '50.0% [40–60] sd 7.1 pts (45.0–55.0)'
    """
    if not entry or entry.get("rate") is None:
        return "n/a"
    text = f"{pct(entry['rate'])} [{100 * entry['ci_low']:.0f}–{100 * entry['ci_high']:.0f}]"
    per_seed = entry.get("per_seed") or {}
    if with_spread and len(per_seed) > 1:
        text += f" sd {100 * entry['sd']:.1f} pts ({100 * entry['min']:.1f}–{100 * entry['max']:.1f})"
    return text


def tint(rate: float | None) -> str:
    """Inline style tinting a table cell by a rate (teal, stronger for higher rates)."""
    if rate is None:
        return "background:#f3f4f6;color:#9ca3af"
    return f"background:rgba(42,157,143,{0.08 + 0.55 * rate:.3f})"
