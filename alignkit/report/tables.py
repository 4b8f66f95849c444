"""The report's tables: pandas frames for the notebooks, and the rows the HTML template renders (same numbers)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from alignkit.report.text import (
    endpoint_label,
    fixed,
    fmt_p,
    model_description,
    model_rank,
    pct,
    pts,
    rate_text,
    significance_mark,
    tint,
)

CONTRAST_COLUMNS = ("contrast", "endpoint", "role", "rate a", "rate b", "diff (pts)", "95% CI (pts)",
                    "MDE (pts)", "p", "p adjusted", "verdict")


def _entry(results: Mapping[str, Any], model: str, endpoint: str, family: str | None = None) -> Mapping[str, Any]:
    block = results["models"][model]
    return (block["families"].get(family, {}) if family else block["endpoints"]).get(endpoint) or {}


def rates_frame(results: Mapping[str, Any], endpoints: Sequence[str] | None = None):
    """Arms × endpoints: ``rate [CI] sd (min–max over seeds)``; ``†`` marks a rate that is not evidence."""
    import pandas as pd

    endpoints = endpoints or results["endpoints"]
    data = {m: {endpoint_label(e): rate_text(_entry(results, m, e))
                + (" †" if e in results["models"][m].get("by_design", {}) else "") for e in endpoints}
            for m in results["model_order"]}
    return pd.DataFrame.from_dict(data, orient="index")


def contrast_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """One contrast as table cells (and the CSS class of its row)."""
    tested = row.get("p_adjusted") is not None
    cls = "" if not tested or not row.get("distinguishable") else ("sig-up" if row["diff"] > 0 else "sig-down")
    return {"cls": cls, "contrast": f"{row['b']} vs {row['a']}", "endpoint": endpoint_label(row["endpoint"]),
            "role": row["role"], "rate_a": pct(row.get("rate_a")), "rate_b": pct(row.get("rate_b")),
            "diff": pts(row.get("diff")),
            "ci": "n/a" if row.get("ci_low") is None else f"{pts(row['ci_low'])} to {pts(row['ci_high'])}",
            "mde": "n/a" if row.get("mde") is None else f"{100 * row['mde']:.1f}",
            "p": fmt_p(row.get("p_value")), "p_adj": fmt_p(row.get("p_adjusted")) + significance_mark(
                row.get("p_adjusted")), "verdict": row.get("verdict", ""), "family": row.get("family") or "—"}


def contrasts_frame(results: Mapping[str, Any], role: str | None = None):
    """The contrasts (all, or one role: ``primary``, ``secondary``, ``descriptive``) as a DataFrame."""
    import pandas as pd

    rows = []
    for row in results["contrasts"]:
        if role is not None and row["role"] != role:
            continue
        view = contrast_view(row)
        rows.append(dict(zip(CONTRAST_COLUMNS, (view["contrast"], view["endpoint"], view["role"], view["rate_a"],
                                                view["rate_b"], view["diff"], view["ci"], view["mde"], view["p"],
                                                view["p_adj"], view["verdict"]))))
    return pd.DataFrame(rows)


def family_frame(results: Mapping[str, Any], endpoint: str = "content"):
    """Families × arms: one endpoint's rate with its interval and n."""
    import pandas as pd

    data = {family: {m: f"{rate_text(_entry(results, m, endpoint, family), False)} n="
                        f"{_entry(results, m, endpoint, family).get('n', 0)}" for m in results["model_order"]}
            for family in results["families"]}
    return pd.DataFrame.from_dict(data, orient="index")


def memory_rows(memory: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """One row per evaluated model of run_info.json's ``memory`` block."""
    per_model = memory.get("per_model", {})
    rows = []
    for key in sorted(per_model, key=lambda k: model_rank(k.split("_seed")[0])):
        m = per_model[key]
        rows.append((key, fixed(m.get("load_seconds"), 2), fixed(m.get("generate_seconds"), 2),
                     *(fixed(m.get(k)) for k in ("rss_baseline_mb", "rss_peak_mb", "rss_peak_over_baseline_mb",
                                                   "rss_after_release_mb", "cuda_max_allocated_mb")),
                     "resumed from disk" if m.get("resumed") else "generated"))
    return rows


MEMORY_COLUMNS = ("model", "load s", "generate s", "RSS before MB", "RSS peak MB", "peak − before MB",
                  "RSS after release MB", "CUDA max alloc MB", "responses")


def memory_frame(memory: Mapping[str, Any]):
    """Per evaluated model: load/generation time and memory (run_info.json's ``memory`` block)."""
    import pandas as pd

    return pd.DataFrame(memory_rows(memory), columns=list(MEMORY_COLUMNS))


def examples_frame(examples: Sequence[Mapping[str, Any]]):
    """Examples as a table: one row per item, one column per arm (✓/✗ overall, the response)."""
    import pandas as pd

    rows = []
    for example in examples:
        row = {"kind": example["kind"], "family": example["family"], "instruction": example["instruction"]}
        for cell in example["models"]:
            row[cell["label"]] = ("✓ " if cell["overall"] else "✗ ") + cell["response"] + (
                "" if cell["emitted_end"] else " [no END]")
        rows.append(row)
    return pd.DataFrame(rows)


def rate_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The arms × endpoints table of the HTML report."""
    rows = []
    for model in results["model_order"]:
        block = results["models"][model]
        cells = []
        for endpoint in results["endpoints"]:
            entry = _entry(results, model, endpoint)
            spread = entry.get("per_seed") or {}
            cells.append({
                "rate": pct(entry.get("rate")), "style": tint(entry.get("rate")),
                "ci": "" if entry.get("rate") is None else f"{100 * entry['ci_low']:.0f}–{100 * entry['ci_high']:.0f}",
                "spread": "untrained: one run serves every seed" if not block["trained"] else (
                    f"sd {100 * entry['sd']:.1f} · {100 * entry['min']:.0f}–{100 * entry['max']:.0f}"
                    if len(spread) > 1 else ""),
                "by_design": block.get("by_design", {}).get(endpoint), "n": entry.get("n", 0),
                "composite": endpoint in results.get("composites", {}) or endpoint == "overall"})
        rows.append({"model": model, "description": model_description(model), "cells": cells})
    return rows


def design_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The pre-registered contrasts with their primary endpoints, and whether each is tested or descriptive."""
    from alignkit.eval.results import CONTRAST_WORDS

    rows = []
    for row in results["contrasts"]:
        if not row.get("named_primary"):
            continue
        rows.append({"contrast": f"{row['b']} vs {row['a']}",
                     "words": CONTRAST_WORDS.get((row["a"], row["b"]), f"{row['b']} vs {row['a']}"),
                     "endpoint": endpoint_label(row["endpoint"]),
                     "status": "primary, tested (Holm over the primaries)" if row["role"] == "primary"
                     else f"descriptive, not tested: {row['by_design']}"})
    return rows
