"""The study report: ``reports/<run_id>/report.html`` plus PNG figures in ``reports/<run_id>/figures/``.

    alignkit run --preset tiny          (stage 06 calls :func:`build` at its end)

Built from ``06_evaluation/results.json`` (the numbers), ``responses.jsonl``/``scores.jsonl`` (the examples) and
the manifests and logs of stages 01–05, whichever exist: a stage without a complete manifest is shown as
missing, never filled in. The HTML is one file with its CSS inline; figures are PNG files next to it, referenced
by relative paths, so the folder can be zipped and shared. No code is shown.

The table and figure functions here are also what ``notebooks/06_evaluation.ipynb`` displays. Figures are built
on :class:`matplotlib.figure.Figure` directly (no pyplot), so building a report neither needs a display nor
leaves figures behind in a notebook.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from alignkit import files, template
from alignkit.config import FAMILIES, NEGATIVE_TYPES, STAGES
from alignkit.runs import Run, StageInputError

log = logging.getLogger(__name__)

EVAL_STAGE = "06_evaluation"
OVERALL = "overall"
#: Adjusted-p thresholds and their marks, strictest first.
SIGNIFICANCE_MARKS: tuple[tuple[float, str], ...] = ((0.001, "***"), (0.01, "**"), (0.05, "*"))
#: Longest response shown in an example card, in characters (the rest is counted, not hidden silently).
EXAMPLE_CHARS = 360

CRITERION_LABELS = {
    "ends_with_end": "ends with END", "proper_structure": "proper structure", "no_rambling": "no rambling",
    "addresses_instruction": "addresses instruction", "appropriate_length": "appropriate length",
    "no_unwarranted_refusal": "no unwarranted refusal", "factually_correct": "factually correct",
    "coherent": "coherent", "on_topic": "on topic", "overall": "overall",
}
#: Models are called by their study names everywhere (as in the headline and the contrasts); this says what
#: each one is.
MODEL_DESCRIPTIONS = {"base": "base model, study template", "base_raw": "base model, bare instruction",
                      "sft": "supervised fine-tuning", "sft_dpo": "SFT, then DPO",
                      "dpo_only": "DPO from the base model (control)"}
MODEL_COLORS = {"base": "#8d99ae", "base_raw": "#c9ced8", "sft": "#3a7ca5", "sft_dpo": "#2a9d8f",
                "dpo_only": "#e9a03b"}
STAGE_TITLES = {"01_sft_data": "SFT data", "02_sft_training": "SFT training", "03_negatives": "Negatives",
                "04_preference_pairs": "Preference pairs", "05_dpo_training": "DPO training",
                "06_evaluation": "Evaluation"}


# --------------------------------------------------------------------------------------------------
# Small formatting helpers
# --------------------------------------------------------------------------------------------------


def pct(x: float | None, digits: int = 1) -> str:
    """A rate as a percentage.

    >>> pct(0.6234), pct(None), pct(1.0, 0)
    ('62.3%', 'n/a', '100%')
    """
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


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


def _rank(name: str, order: Sequence[str]) -> tuple[int, str]:
    """Sort key: position in ``order`` (JSON files store keys sorted), unknown names last.

    >>> sorted(["verbose", "refusal", "zzz"], key=lambda t: _rank(t, ("refusal", "verbose")))
    ['refusal', 'verbose', 'zzz']
    """
    return (list(order).index(name) if name in order else len(order), name)


def _model_rank(name: str) -> tuple[int, str]:
    return _rank(name, list(MODEL_DESCRIPTIONS))


def criterion_label(name: str) -> str:
    return CRITERION_LABELS.get(name, name.replace("_", " "))


def model_label(name: str) -> str:
    """A model's name as the report shows it (its study name)."""
    return name


def model_description(name: str) -> str:
    return MODEL_DESCRIPTIONS.get(name, "")


def _human_bytes(n: int) -> str:
    """Bytes for people.

    >>> _human_bytes(1536), _human_bytes(3 * 1024 ** 3)
    ('1.5 KB', '3.0 GB')
    """
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


def _cell_tint(rate: float | None) -> str:
    """Inline style tinting a table cell by a rate (teal, stronger for higher rates)."""
    if rate is None:
        return "background:#f3f4f6;color:#9ca3af"
    return f"background:rgba(42,157,143,{0.08 + 0.55 * rate:.3f})"


# --------------------------------------------------------------------------------------------------
# Reading a run
# --------------------------------------------------------------------------------------------------


def load_results(run: Run) -> dict[str, Any]:
    """``results.json`` of stage 06 (through its manifest)."""
    return files.read_json(run.output(EVAL_STAGE, "results"))


def _optional_output(run: Run, stage: str, name: str) -> Path | None:
    try:
        return run.output(stage, name)
    except StageInputError:
        return None


def _read_jsonl(path: Path | None) -> list[dict[str, Any]]:
    return files.read_jsonl(path) if path is not None and path.is_file() else []


def _contrast(results: Mapping[str, Any], a: str, b: str, criterion: str) -> Mapping[str, Any] | None:
    for row in results["contrasts"]:
        if (row["a"], row["b"], row["criterion"]) == (a, b, criterion):
            return row
    return None


def _alpha(results: Mapping[str, Any]) -> float:
    return float(results.get("correction", {}).get("alpha", 0.05))


# --------------------------------------------------------------------------------------------------
# Tables (pandas, for the notebook) — the HTML report renders the same numbers
# --------------------------------------------------------------------------------------------------


def criteria_frame(results: Mapping[str, Any]):
    """Models × criteria: ``rate [ci_low–ci_high]`` as text."""
    import pandas as pd

    data = {model_label(m): {criterion_label(c): _rate_text(results["models"][m]["criteria"][c])
                             for c in results["criteria"]} for m in results["model_order"]}
    return pd.DataFrame.from_dict(data, orient="index")


def _rate_text(entry: Mapping[str, Any]) -> str:
    if entry["rate"] is None:
        return "n/a"
    return f"{pct(entry['rate'])} [{pct(entry['ci_low'], 0)}–{pct(entry['ci_high'], 0)}]"


def contrasts_frame(results: Mapping[str, Any], criterion: str | None = None):
    """The contrasts (all, or one criterion's) with effect sizes, raw and adjusted p and marks."""
    import pandas as pd

    rows = []
    for row in results["contrasts"]:
        if criterion is not None and row["criterion"] != criterion:
            continue
        rows.append({
            "contrast": f"{row['a']} → {row['b']}", "criterion": row["criterion"],
            "diff (pts)": None if row["diff"] is None else round(100 * row["diff"], 1),
            "95% CI": "n/a" if row["ci_low"] is None else f"{100 * row['ci_low']:+.1f} to {100 * row['ci_high']:+.1f}",
            "cohens_h": None if row["cohens_h"] is None else round(row["cohens_h"], 3),
            "n01": row["n01"], "n10": row["n10"], "test": row.get("test"),
            "p": fmt_p(row["p_value"]), "p_adjusted": fmt_p(row["p_adjusted"]),
            "sig": significance_mark(row["p_adjusted"]),
        })
    return pd.DataFrame(rows)


def family_frame(results: Mapping[str, Any], criterion: str = OVERALL):
    """Families × models: one criterion's rate with its interval and n."""
    import pandas as pd

    data = {}
    for family in results["families"]:
        data[family] = {}
        for m in results["model_order"]:
            entry = results["models"][m]["families"].get(family, {}).get(criterion)
            data[family][model_label(m)] = "n/a" if entry is None else f"{_rate_text(entry)} n={entry['n']}"
    return pd.DataFrame.from_dict(data, orient="index")


def memory_frame(results: Mapping[str, Any]):
    """Per-model load/generation time and peak memory."""
    import pandas as pd

    per_model = results.get("memory", {}).get("per_model", {})
    columns = ("load_seconds", "generate_seconds", "rss_baseline_mb", "rss_peak_mb", "rss_peak_over_baseline_mb",
               "rss_after_release_mb", "cuda_max_allocated_mb", "resumed")
    return pd.DataFrame.from_dict({m: {c: per_model[m].get(c) for c in columns}
                                   for m in sorted(per_model, key=_model_rank)}, orient="index")


# --------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    fig.set_layout_engine("constrained")
    return fig


def _style(ax) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=9)
    ax.grid(axis="y", alpha=0.25)
    ax.set_axisbelow(True)


def heatmap_figure(results: Mapping[str, Any]):
    """Models × criteria pass rates as a heatmap with the percentage in each cell."""
    import numpy as np

    models, criteria = results["model_order"], results["criteria"]
    values = np.array([[results["models"][m]["criteria"][c]["rate"] if results["models"][m]["criteria"][c]["rate"]
                        is not None else np.nan for c in criteria] for m in models], dtype=float)
    fig = _figure(max(5.5, 1.6 + 0.78 * len(criteria)), 1.3 + 0.5 * len(models))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(values), cmap="YlGnBu", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(criteria)), [criterion_label(c) for c in criteria], rotation=35, ha="right", fontsize=9)
    ax.set_yticks(range(len(models)), [model_label(m) for m in models], fontsize=9)
    for i in range(len(models)):
        for j in range(len(criteria)):
            value = values[i, j]
            text = "n/a" if np.isnan(value) else f"{100 * value:.0f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8.5,
                    color="white" if not np.isnan(value) and value > 0.6 else "#1f2937")
    if OVERALL in criteria:  # set the primary endpoint apart
        ax.axvline(criteria.index(OVERALL) - 0.5, color="white", linewidth=3)
    fig.suptitle("Pass rate per criterion (%)", fontsize=11, x=0.02, ha="left")
    fig.colorbar(image, ax=ax, fraction=0.025, pad=0.01).ax.tick_params(labelsize=8)
    return fig


def overall_figure(results: Mapping[str, Any]):
    """``overall`` per model with Wilson 95% error bars."""
    models = results["model_order"]
    entries = [results["models"][m]["criteria"][OVERALL] for m in models]
    rates = [e["rate"] or 0.0 for e in entries]
    lower = [(e["rate"] - e["ci_low"]) if e["rate"] is not None else 0.0 for e in entries]
    upper = [(e["ci_high"] - e["rate"]) if e["rate"] is not None else 0.0 for e in entries]
    fig = _figure(max(5.5, 1.6 + 1.15 * len(models)), 3.8)
    ax = fig.add_subplot()
    x = range(len(models))
    ax.bar(x, rates, color=[MODEL_COLORS.get(m, "#777") for m in models], width=0.62, yerr=[lower, upper],
           capsize=5, error_kw={"elinewidth": 1.2, "ecolor": "#374151"})
    for i, e in enumerate(entries):
        label = "n/a" if e["rate"] is None else f"{100 * e['rate']:.1f}%"
        ax.text(i, (e["ci_high"] or 0) + 0.02, label, ha="center", va="bottom", fontsize=9, color="#111827")
    ax.set_xticks(list(x), [model_label(m) for m in models], fontsize=9)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("overall pass rate", fontsize=9)
    fig.suptitle("Primary endpoint: overall (95% Wilson intervals)", fontsize=11, x=0.02, ha="left")
    _style(ax)
    return fig


def family_figure(results: Mapping[str, Any], criterion: str = OVERALL):
    """One criterion's rate per family, grouped by model."""
    import numpy as np

    models, families = results["model_order"], results["families"]
    fig = _figure(max(8.0, 1.35 * len(families) + 2), 3.8)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(models))
    for k, m in enumerate(models):
        rates = [results["models"][m]["families"].get(f, {}).get(criterion, {}).get("rate") for f in families]
        ax.bar(np.arange(len(families)) + (k - (len(models) - 1) / 2) * width,
               [np.nan if r is None else r for r in rates], width=width * 0.95,
               color=MODEL_COLORS.get(m, "#777"), label=model_label(m))
    ax.set_xticks(range(len(families)), [f.replace("_", " ") for f in families], fontsize=9)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"{criterion_label(criterion)} rate", fontsize=9)
    fig.suptitle(f"{criterion_label(criterion).capitalize()} by task family", fontsize=11, x=0.02, ha="left")
    fig.legend(fontsize=8, ncol=min(5, len(models)), frameon=False, loc="outside lower center")
    _style(ax)
    return fig


def curves_figure(histories: Mapping[str, Sequence[Mapping[str, Any]]], keys: Sequence[str], title: str):
    """Training curves: one panel per metric, one line per run, over the global step."""
    fig = _figure(3.6 * len(keys) + 0.6, 3.0)
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    palette = {"sft": MODEL_COLORS["sft"], "sft_dpo": MODEL_COLORS["sft_dpo"], "dpo_only": MODEL_COLORS["dpo_only"]}
    for ax, key in zip(axes, keys):
        for name, history in histories.items():
            points = [(h["step"], h[key]) for h in history if key in h and "step" in h and h[key] is not None]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o", markersize=2.5, linewidth=1.6, label=model_label(name),
                        color=palette.get(name))
        ax.set_title(key, fontsize=10, loc="left")
        ax.set_xlabel("step", fontsize=9)
        _style(ax)
        if len(histories) > 1:
            ax.legend(fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=11, x=0.01, ha="left")
    return fig


def save_figure(fig, path: Path) -> Path:
    """Write ``fig`` as a PNG atomically."""
    with files.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, facecolor="white")
    return path


# --------------------------------------------------------------------------------------------------
# Examples
# --------------------------------------------------------------------------------------------------


def _instruction_from_prompt(prompt: str) -> str:
    """Recover the instruction from a template or raw prompt.

    >>> _instruction_from_prompt(template.prompt("Add 2 and 3.")), _instruction_from_prompt("Add 2 and 3.\\n")
    ('Add 2 and 3.', 'Add 2 and 3.')
    """
    head, tail = template.INSTRUCTION_TAG + " ", "\n" + template.RESPONSE_TAG
    if prompt.startswith(head) and prompt.endswith(tail):
        return prompt[len(head) : -len(tail)]
    return prompt.strip()


def _round_robin(candidates: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """Up to ``n`` candidates, one family at a time, so the examples cover several families.

    >>> [c["id"] for c in _round_robin([{"id": 1, "family": "a"}, {"id": 2, "family": "a"},
    ...                                 {"id": 3, "family": "b"}], 2)]
    [1, 3]
    """
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for candidate in candidates:
        groups[candidate["family"]].append(candidate)
    picked: list[dict[str, Any]] = []
    while len(picked) < n and any(groups.values()):
        for family in list(groups):
            if groups[family] and len(picked) < n:
                picked.append(groups[family].pop(0))
    return picked


def focus_model(results: Mapping[str, Any]) -> str | None:
    """The model examples are chosen for: the best on overall unless that is an untrained base, then the
    first trained model evaluated."""
    models = results["model_order"]
    best = results.get("best_model")
    if best is not None and best not in ("base", "base_raw"):
        return best
    for name in ("sft_dpo", "sft", "dpo_only"):
        if name in models:
            return name
    return best or (models[0] if models else None)


def pick_examples(results: Mapping[str, Any], responses: Sequence[Mapping[str, Any]],
                  scores: Sequence[Mapping[str, Any]], items: Mapping[str, Mapping[str, Any]],
                  n: int) -> list[dict[str, Any]]:
    """``n`` held-out items shown side by side for every model: about half wins (the focus model passes
    overall where base fails), the rest failures of the focus model; chosen in item order, spread over
    families. Each example lists every model's response, whether it emitted END and the criteria it failed."""
    focus = focus_model(results)
    if focus is None or n <= 0:
        return []
    reference = "base" if "base" in results["model_order"] and focus != "base" else None
    score = {(s["model"], s["item_id"]): s for s in scores}
    response = {(r["model"], r["item_id"]): r for r in responses}
    order = list(dict.fromkeys(s["item_id"] for s in scores if s["model"] == focus))
    wins, failures = [], []
    for item_id in order:
        own = score[(focus, item_id)]
        entry = {"item_id": item_id, "family": own["family"]}
        if own[OVERALL] is False:
            failures.append({**entry, "kind": "failure"})
        elif own[OVERALL] is True and (reference is None or score.get((reference, item_id), {}).get(OVERALL) is False):
            wins.append({**entry, "kind": "win"})
    n_wins = min(len(wins), (n + 1) // 2)
    n_failures = min(len(failures), n - n_wins)
    n_wins = min(len(wins), n - n_failures)
    chosen = _round_robin(wins, n_wins) + _round_robin(failures, n_failures)
    examples = []
    criteria = [c for c in results["criteria"] if c != OVERALL]
    for pick in chosen:
        item_id = pick["item_id"]
        item = items.get(item_id, {})
        focus_prompt = response.get((focus, item_id), {}).get("prompt", "")
        cells = []
        for m in results["model_order"]:
            r, s = response.get((m, item_id)), score.get((m, item_id))
            if r is None or s is None:
                continue
            text = r["response"]
            cells.append({"model": m, "label": model_label(m), "response": text[:EXAMPLE_CHARS],
                          "cut": max(0, len(text) - EXAMPLE_CHARS), "emitted_end": r["emitted_end"],
                          "overall": s[OVERALL], "failed": [criterion_label(c) for c in criteria if s.get(c) is False],
                          "focus": m == focus})
        examples.append({**pick, "focus": focus, "reference_model": reference,
                         "instruction": item.get("instruction") or _instruction_from_prompt(focus_prompt),
                         "reference": item.get("reference"), "models": cells})
    return examples


def run_examples(run: Run, results: Mapping[str, Any] | None = None, n: int | None = None) -> list[dict[str, Any]]:
    """:func:`pick_examples` on a run's stage-06 responses and scores (``evaluation.n_examples`` of them)."""
    results = results if results is not None else load_results(run)
    scores = _read_jsonl(_optional_output(run, EVAL_STAGE, "scores"))
    if not scores:
        return []
    responses = _read_jsonl(_optional_output(run, EVAL_STAGE, "responses"))
    items = {r["id"]: r for r in _read_jsonl(_optional_output(run, "01_sft_data", "eval_items"))}
    if n is None:
        n = int(((results.get("config") or {}).get("evaluation") or {}).get("n_examples",
                                                                          run.config.evaluation.n_examples))
    return pick_examples(results, responses, scores, items, n)


def examples_frame(examples: Sequence[Mapping[str, Any]]):
    """Examples as a table: one row per item, one column per model (response, ✓/✗ overall)."""
    import pandas as pd

    rows = []
    for example in examples:
        row = {"kind": example["kind"], "family": example["family"], "instruction": example["instruction"]}
        for cell in example["models"]:
            mark = "✓" if cell["overall"] else "✗"
            row[cell["label"]] = f"{mark} {cell['response']}" + ("" if cell["emitted_end"] else " [no END]")
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------
# Stages 01–05: data QC and training
# --------------------------------------------------------------------------------------------------


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]], caption: str = "") -> dict[str, Any]:
    return {"columns": list(columns), "rows": [list(r) for r in rows], "caption": caption}


def _num(x: Any, digits: int = 3) -> Any:
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:,.0f}"
    return "–" if x is None else x


def _fixed(x: Any, digits: int = 1) -> str:
    """A number with fixed decimals, ``–`` when absent.

    >>> _fixed(826.8), _fixed(827), _fixed(None)
    ('826.8', '827.0', '–')
    """
    return "–" if x is None else f"{x:.{digits}f}"


def _stage_01(summary: Mapping[str, Any]) -> tuple[list[tuple[str, Any]], list[dict[str, Any]]]:
    facts = [("SFT examples kept / wanted", f"{summary.get('kept')} / {summary.get('wanted')}"),
             ("candidates", summary.get("candidates")), ("acceptance rate", pct(summary.get("acceptance_rate"))),
             ("duplicates removed", summary.get("duplicates_removed")),
             ("dropped", ", ".join(f"{k}: {v}" for k, v in (summary.get("dropped") or {}).items()) or "none")]
    per_family = summary.get("per_family") or {}
    rows = [(f, v.get("candidates"), v.get("accepted"), v.get("dropped"), pct(v.get("acceptance_rate")), v.get("kept"))
            for f, v in sorted(per_family.items(), key=lambda kv: _rank(kv[0], FAMILIES))]
    tables = [_table(("family", "candidates", "accepted", "dropped", "acceptance", "kept"), rows,
                     "Best-of-N acceptance per family (verifier-checked)")] if rows else []
    return facts, tables


def _stage_02(summary: Mapping[str, Any]) -> tuple[list[tuple[str, Any]], list[dict[str, Any]]]:
    masks = summary.get("masks") or {}
    samples = summary.get("samples") or {}
    end_rate = samples.get("end_emission_rate") or {}
    facts = [("method", summary.get("method")), ("examples", summary.get("examples")), ("steps", summary.get("steps")),
             ("loss first → last", f"{_num(summary.get('loss_first'))} → {_num(summary.get('loss_last'))}"),
             ("loss masks checked", f"{masks.get('examples_checked')} examples, {masks.get('failures')} failures"),
             ("END emitted on unseen instructions", ", ".join(f"{k}: {pct(v)}" for k, v in end_rate.items()) or "–"),
             ("train time", f"{summary.get('train_seconds')} s")]
    return facts, []


def _stage_03(summary: Mapping[str, Any]) -> tuple[list[tuple[str, Any]], list[dict[str, Any]]]:
    declared, applied = summary.get("mix_declared") or {}, summary.get("mix_applied") or {}
    methods = summary.get("by_type_method") or {}
    rows = [(t, pct(declared.get(t)), pct(applied.get(t)), sum((methods.get(t) or {}).values()),
             ", ".join(f"{m}: {c}" for m, c in (methods.get(t) or {}).items()))
            for t in sorted(dict.fromkeys([*declared, *applied]), key=lambda t: _rank(t, NEGATIVE_TYPES))]
    facts = [("negatives", summary.get("total")), ("dropped", summary.get("dropped_total")),
             ("SFT greedy END rate", pct(summary.get("sft_greedy_end_rate"))),
             ("SFT greedy correct rate", pct(summary.get("sft_greedy_correct_rate")))]
    return facts, [_table(("type", "declared", "applied", "count", "how it was made"), rows,
                          "Negative mix: declared vs applied")] if rows else []


def _stage_04(summary: Mapping[str, Any]) -> tuple[list[tuple[str, Any]], list[dict[str, Any]]]:
    margins = summary.get("margins") or {}
    rows = [(t, (summary.get("types") or {}).get(t, m.get("n")), _num(m.get("mean")), _num(m.get("median")),
             _num(m.get("min")), _num(m.get("max")), pct(m.get("share_positive")))
            for t, m in sorted(margins.items(), key=lambda kv: _rank(kv[0], NEGATIVE_TYPES))]
    overall = summary.get("margin_overall") or {}
    facts = [("pairs", summary.get("pairs")),
             ("mean margin (SFT log-prob chosen − rejected)", _num(overall.get("mean"))),
             ("pairs the SFT model already prefers", pct(overall.get("share_positive"))),
             ("chosen from", ", ".join(f"{k}: {v}" for k, v in (summary.get("chosen_sources") or {}).items()) or "–"),
             ("dropped", ", ".join(f"{k}: {v}" for k, v in (summary.get("dropped") or {}).items()) or "none")]
    return facts, [_table(("negative type", "pairs", "mean", "median", "min", "max", "margin > 0"), rows,
                          "Pair margins per negative type")] if rows else []


def _stage_05(summary: Mapping[str, Any]) -> tuple[list[tuple[str, Any]], list[dict[str, Any]]]:
    runs = summary.get("runs") or {}
    rows = [(model_label(name), "/".join(Path(str(r.get("initial_model"))).parts[-2:]), r.get("saved"),
             pct(r.get("final_reward_accuracy")), _num(r.get("final_reward_margin")), _num(r.get("final_loss")),
             r.get("train_seconds")) for name, r in sorted(runs.items(), key=lambda kv: _model_rank(kv[0]))]
    facts = [("method", summary.get("method")), ("beta", summary.get("beta")), ("loss", summary.get("loss_type")),
             ("pairs", summary.get("pairs"))]
    return facts, [_table(("run", "initial model", "saved", "final reward accuracy", "final reward margin",
                           "final loss", "train s"), rows, "Both runs: same pairs, settings and seed")] if rows else []


_QC = {"01_sft_data": _stage_01, "02_sft_training": _stage_02, "03_negatives": _stage_03,
       "04_preference_pairs": _stage_04, "05_dpo_training": _stage_05}


def qc_sections(run: Run) -> list[dict[str, Any]]:
    """One entry per stage 01–05: its facts and tables, or ``missing`` with where the manifest was expected."""
    sections = []
    for stage in STAGES[:5]:
        manifest = run.manifest(stage)
        entry: dict[str, Any] = {"stage": stage, "title": STAGE_TITLES[stage],
                                 "manifest": str(run.stage_dir(stage) / "manifest.json")}
        if manifest is None:
            sections.append({**entry, "missing": True})
            continue
        try:
            facts, tables = _QC[stage](manifest.get("summary") or {})
        except (TypeError, AttributeError, ValueError) as error:  # an older or newer summary layout
            log.warning("%s: summary not understood (%s); showing it raw", stage, error)
            facts, tables = [("summary", files.to_json(manifest.get("summary")))], []
        entry.update(missing=False, facts=[(k, v) for k, v in facts], tables=tables,
                     seconds=manifest.get("seconds"), finished=manifest.get("finished"),
                     fingerprint=manifest.get("fingerprint"))
        sections.append(entry)
    return sections


def training_histories(run: Run) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """``{"sft": {"sft": history}, "dpo": {"sft_dpo": history, "dpo_only": history}}`` for what exists."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {"sft": {}, "dpo": {}}
    path = _optional_output(run, "02_sft_training", "log_history")
    if path is not None:
        out["sft"]["sft"] = files.read_json(path)
    for name in ("sft_dpo", "dpo_only"):
        path = _optional_output(run, "05_dpo_training", f"{name}_log_history")
        if path is not None:
            out["dpo"][name] = files.read_json(path)
    return out


# --------------------------------------------------------------------------------------------------
# Provenance, reproducibility and disk
# --------------------------------------------------------------------------------------------------


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def disk_usage(run: Run) -> dict[str, Any]:
    """Bytes on disk per stage folder (and how much of it is training checkpoints), plus the report."""
    rows = []
    for stage in STAGES:
        folder = run.stage_dir(stage)
        if not folder.is_dir():
            continue
        checkpoints = sum(_tree_bytes(p) for p in folder.glob("checkpoints*") if p.is_dir())
        rows.append({"stage": stage, "bytes": _tree_bytes(folder), "checkpoint_bytes": checkpoints})
    return {"stages": rows, "total_bytes": sum(r["bytes"] for r in rows), "report_bytes": _tree_bytes(run.report_dir)}


def reproducibility_rows(config: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Which outputs are deterministic, and under which seed."""
    seed = config.get("seed")
    build_seed = (config.get("base_build") or {}).get("seed")
    return [
        ("embedded base model (tokenizer + weights)", "deterministic build for its seed; cached by build config",
         f"base_build.seed={build_seed}"),
        ("01 sft.jsonl, eval_items.jsonl", "byte-identical for the same seed on the CPU (seeded sampling)",
         f"seed={seed}"),
        ("03 negatives.jsonl, 04 pairs.jsonl", "byte-identical for the same seed on the CPU", f"seed={seed}"),
        ("02 SFT and 05 DPO weights", "same seed, device and library versions reproduce them; not bit-identical "
         "across hardware", f"seed={seed}"),
        ("06 responses", "greedy decoding: deterministic for the same weights and device (batching can change "
         "floating-point ties)", "no sampling"),
        ("06 bootstrap intervals", "seeded resampling: identical for the same scores", f"seed={seed}"),
    ]


# --------------------------------------------------------------------------------------------------
# The HTML
# --------------------------------------------------------------------------------------------------


_CSS = """
:root { --ink:#1f2937; --muted:#6b7280; --line:#e5e7eb; --bg:#f8fafc; --accent:#2a9d8f; --up:#dcfce7; --up-ink:#166534;
        --down:#fee2e2; --down-ink:#991b1b; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font:15px/1.55 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "Liberation Sans", "DejaVu Sans",
       sans-serif; }
main { max-width:1180px; margin:0 auto; padding:28px 32px 80px; }
header.top { background:#0f172a; color:#e2e8f0; padding:26px 0 22px; }
header.top .wrap { max-width:1180px; margin:0 auto; padding:0 32px; }
header.top h1 { margin:0 0 4px; font-size:26px; font-weight:650; letter-spacing:-0.01em; color:#fff; }
header.top .meta { color:#94a3b8; font-size:13px; }
header.top .meta b { color:#cbd5e1; font-weight:600; }
nav.toc { margin-top:14px; display:flex; flex-wrap:wrap; gap:6px 16px; font-size:13px; }
nav.toc a { color:#7dd3c7; text-decoration:none; }
h2 { font-size:20px; margin:44px 0 6px; padding-bottom:6px; border-bottom:2px solid var(--line);
     letter-spacing:-0.01em; }
h3 { font-size:16px; margin:26px 0 8px; }
p.lead, p.note { color:var(--muted); margin:4px 0 14px; font-size:14px; }
.headline { background:#fff; border-left:5px solid var(--accent); border-radius:8px; padding:18px 22px;
            margin:22px 0 8px;
            font-size:17px; box-shadow:0 1px 3px rgba(15,23,42,.08); }
.cards { display:grid; grid-template-columns:repeat(auto-fit, minmax(170px, 1fr)); gap:12px; margin:16px 0; }
.card { background:#fff; border:1px solid var(--line); border-radius:8px; padding:12px 14px; }
.card .k { font-size:14px; font-weight:650; font-family:ui-monospace, SFMono-Regular, Menlo, monospace; }
.card .d { color:var(--muted); font-size:12px; }
.card .v { font-size:22px; font-weight:650; }
.card .s { color:var(--muted); font-size:12px; }
table { border-collapse:collapse; width:100%; background:#fff; font-size:13px; margin:8px 0 6px;
        border:1px solid var(--line); border-radius:8px; overflow:hidden; }
th, td { padding:7px 10px; border-bottom:1px solid var(--line); text-align:left; vertical-align:top; }
th { background:#f1f5f9; font-weight:600; color:#334155; font-size:12px; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
th.c { text-align:center; }
table td:first-child { white-space:nowrap; }
td.cell-up .p, td.cell-down .p, td.cell-ns .p { display:block; font-size:10.5px; font-weight:400; color:#64748b; }
tbody tr:last-child td { border-bottom:none; }
span.desc { color:var(--muted); font-size:11.5px; font-weight:400; }
caption { caption-side:top; text-align:left; color:var(--muted); font-size:13px; padding:0 0 4px; }
td.rate { text-align:center; font-variant-numeric:tabular-nums; white-space:nowrap; }
td.rate .r { font-weight:600; display:block; }
td.rate .ci { color:#475569; font-size:11px; }
col.overall, td.overall-col { border-left:2px solid #94a3b8; }
tr.sig-up td { background:var(--up); }
tr.sig-down td { background:var(--down); }
span.mark { font-weight:700; }
.sig-up .mark, .up { color:var(--up-ink); font-weight:600; }
.sig-down .mark, .down { color:var(--down-ink); font-weight:600; }
td.cell-up { background:var(--up); color:var(--up-ink); font-weight:600; text-align:center; }
td.cell-down { background:var(--down); color:var(--down-ink); font-weight:600; text-align:center; }
td.cell-ns { color:#64748b; text-align:center; }
figure { margin:14px 0; background:#fff; border:1px solid var(--line); border-radius:8px; padding:10px; }
figure img { max-width:100%; height:auto; display:block; margin:0 auto; }
figure img.narrow { max-width:760px; }
figcaption { color:var(--muted); font-size:12.5px; margin-top:6px; }
.grid2 { display:grid; grid-template-columns:1fr 1fr; gap:14px; }
.example { background:#fff; border:1px solid var(--line); border-radius:10px; margin:14px 0; overflow:hidden; }
.example .ex-head { padding:10px 14px; border-bottom:1px solid var(--line); background:#f8fafc; }
.example .ex-head .instr { font-weight:600; }
.example .ex-head .ref { color:var(--muted); font-size:13px; }
.badge { display:inline-block; font-size:11px; font-weight:700; padding:1px 8px; border-radius:999px; margin-right:6px;
         text-transform:uppercase; letter-spacing:.04em; vertical-align:1px; }
.badge.win { background:var(--up); color:var(--up-ink); }
.badge.failure { background:var(--down); color:var(--down-ink); }
.badge.fam { background:#e0e7ff; color:#3730a3; }
.badge.missing { background:#fef3c7; color:#92400e; }
.ex-grid { display:grid; grid-template-columns:repeat(auto-fit, minmax(190px, 1fr)); }
.ex-cell { padding:10px 12px; border-right:1px solid var(--line); font-size:13px; }
.ex-cell:last-child { border-right:none; }
.ex-cell.focus { background:#f0fdfa; }
.ex-cell .who { font-size:12px; font-weight:600; color:#334155; margin-bottom:4px; }
.ex-cell pre { white-space:pre-wrap; word-break:break-word; font:12.5px/1.45 ui-monospace, SFMono-Regular, Menlo, monospace;
               margin:0 0 6px; background:none; padding:0; }
.ex-cell .verdict { font-size:12px; }
.ok { color:var(--up-ink); font-weight:600; }
.bad { color:var(--down-ink); font-weight:600; }
.qc { background:#fff; border:1px solid var(--line); border-radius:10px; padding:6px 16px 12px; margin:12px 0; }
.qc h3 { margin-top:12px; }
dl.facts { display:grid; grid-template-columns:max-content 1fr; gap:3px 18px; font-size:13.5px; margin:6px 0 10px; }
dl.facts dt { color:var(--muted); }
dl.facts dd { margin:0; font-variant-numeric:tabular-nums; }
details { margin:10px 0; }
details summary { cursor:pointer; color:#0f766e; font-weight:600; font-size:14px; }
pre.config { background:#0f172a; color:#e2e8f0; padding:14px; border-radius:8px; font-size:12px; overflow:auto; }
code, .mono { font-family:ui-monospace, SFMono-Regular, Menlo, monospace; font-size:12px; }
.hash { font-family:ui-monospace, SFMono-Regular, Menlo, monospace; font-size:11.5px; color:#475569; }
footer { color:var(--muted); font-size:12px; margin-top:50px; border-top:1px solid var(--line); padding-top:12px; }
@media (max-width: 860px) { .grid2 { grid-template-columns:1fr; } main { padding:18px; } }
"""

_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>alignkit report — {{ run_id }}</title><style>{{ css | safe }}</style></head>
<body>
{%- macro table(t) -%}
<table>{% if t.caption %}<caption>{{ t.caption }}</caption>{% endif %}
<thead><tr>{% for c in t.columns %}<th>{{ c }}</th>{% endfor %}</tr></thead>
<tbody>{% for r in t.rows %}<tr>{% for v in r %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}</tbody></table>
{%- endmacro -%}
<header class="top"><div class="wrap">
<h1>Stage 1 alignment study: explicit instruction following</h1>
<div class="meta">run <b>{{ run_id }}</b> · preset <b>{{ preset }}</b> · {{ n_items }} held-out instructions ·
device <b>{{ device }}</b> · generated {{ generated }} · commit <span class="mono">{{ commit }}</span></div>
<nav class="toc"><a href="#results">Results</a><a href="#families">Families</a><a href="#contrasts">Contrasts</a>
<a href="#raw">Base: wrapped vs raw</a><a href="#examples">Examples</a><a href="#qc">Data QC</a>
<a href="#training">Training</a><a href="#memory">Memory</a><a href="#provenance">Provenance</a></nav>
</div></header>
<main>
<div class="headline">{{ headline }}</div>
<p class="note">The primary endpoint, <b>overall</b>, passes only when every applicable criterion passes (pre-registered).
Every model answered the same {{ n_items }} prompts, so all comparisons are paired. Significance uses
{{ correction_name }}-adjusted p-values across all {{ n_tests }} contrast × criterion tests (α = {{ alpha }}).</p>

<div class="cards">
{% for m in overall_cards %}<div class="card"><div class="k">{{ m.label }}</div><div class="d">{{ m.label | mdesc }}</div>
<div class="v">{{ m.rate }}</div><div class="s">overall · 95% CI {{ m.ci }} · n={{ m.n }}</div></div>{% endfor %}
</div>

<h2 id="results">Results by model and criterion</h2>
<p class="lead">Pass rate with its Wilson 95% interval; n counts the items where a criterion applies
(factual correctness does not apply to open-ended instructions).</p>
<table><thead><tr><th>model</th>{% for c in criteria %}<th class="c{% if c == 'overall' %} overall-col{% endif %}">{{ c | label }}</th>{% endfor %}</tr></thead>
<tbody>{% for row in rate_rows %}<tr><td><b>{{ row.label }}</b><br><span class="desc">{{ row.label | mdesc }}</span></td>{% for cell in row.cells %}
<td class="rate{% if cell.overall %} overall-col{% endif %}" style="{{ cell.style }}" title="n={{ cell.n }}"><span class="r">{{ cell.rate }}</span><span class="ci">{{ cell.ci }}</span></td>{% endfor %}</tr>{% endfor %}</tbody></table>
<figure><img src="{{ figs.heatmap }}" alt="Heatmap of pass rates per model and criterion"><figcaption>Pass rate (%) per model and criterion; the white line sets off the primary endpoint.</figcaption></figure>
<figure><img class="narrow" src="{{ figs.overall }}" alt="Overall pass rate per model with error bars"><figcaption>Overall pass rate with Wilson 95% intervals.</figcaption></figure>
{% if cochran %}<p class="note">Cochran's Q across {{ cochran.models | join(", ") }} on overall:
Q = {{ "%.2f" | format(cochran.q) }}, df = {{ cochran.df }}, p = {{ cochran.p }} (n = {{ cochran.n_items }} items).</p>{% endif %}

<h2 id="families">Per-family breakdown</h2>
<p class="lead">Overall pass rate per task family (rate, Wilson 95% interval, n).</p>
<figure><img src="{{ figs.families }}" alt="Overall pass rate per family and model"></figure>
<table><thead><tr><th>family</th>{% for m in model_labels %}<th class="c">{{ m }}</th>{% endfor %}</tr></thead>
<tbody>{% for row in family_rows %}<tr><td><b>{{ row.family }}</b></td>{% for cell in row.cells %}
<td class="rate" style="{{ cell.style }}"><span class="r">{{ cell.rate }}</span><span class="ci">{{ cell.ci }} · n={{ cell.n }}</span></td>{% endfor %}</tr>{% endfor %}</tbody></table>

<h2 id="contrasts">Paired contrasts</h2>
<p class="lead">Difference b − a in percentage points. McNemar test (exact binomial when fewer than 25 discordant pairs,
else continuity-corrected χ²), paired bootstrap 95% CI ({{ n_boot }} resamples), Cohen's h.
Marks on adjusted p: * &lt; 0.05, ** &lt; 0.01, *** &lt; 0.001; green = significant improvement, red = significant regression.</p>
{% if contrast_matrix.columns %}
<table><thead><tr><th>criterion</th>{% for c in contrast_matrix.columns %}<th class="c">{{ c }}</th>{% endfor %}</tr></thead>
<tbody>{% for row in contrast_matrix.rows %}<tr><td>{{ row.criterion | label }}</td>{% for cell in row.cells %}
<td class="{{ cell.cls }}" title="adjusted p = {{ cell.p }}">{{ cell.text }}<span class="p">adj. p {{ cell.p }}</span></td>{% endfor %}</tr>{% endfor %}</tbody></table>
<details><summary>All {{ contrast_rows | length }} tests with raw and adjusted p-values</summary>
<table><thead><tr><th>contrast</th><th>criterion</th><th class="num">rate a</th><th class="num">rate b</th><th class="num">diff (pts)</th><th class="num">95% CI</th>
<th class="num">Cohen's h</th><th class="num">n01 / n10</th><th>test</th><th class="num">p</th><th class="num">p adj.</th><th></th></tr></thead>
<tbody>{% for r in contrast_rows %}<tr class="{{ r.cls }}"><td>{{ r.contrast }}</td><td>{{ r.criterion | label }}</td>
<td class="num">{{ r.rate_a }}</td><td class="num">{{ r.rate_b }}</td><td class="num">{{ r.diff }}</td><td class="num">{{ r.ci }}</td>
<td class="num">{{ r.h }}</td><td class="num">{{ r.n01 }} / {{ r.n10 }}</td><td>{{ r.test }}</td><td class="num">{{ r.p }}</td>
<td class="num">{{ r.p_adj }}</td><td><span class="mark">{{ r.mark }}</span></td></tr>{% endfor %}</tbody></table></details>
{% else %}<p class="note">No contrast applies: fewer than two of the contrasted models were evaluated.</p>{% endif %}

<h2 id="raw">Base model: wrapped in the template vs the raw instruction</h2>
{% if raw_rows %}<p class="lead">The same base weights, prompted with the study template and with the bare instruction
(<code>instruction + "\n"</code>). What changes here is format, not knowledge, which helps read sft's gain over base as
"learned the format" versus "learned the task". Descriptive only (not among the pre-registered contrasts).</p>
<table><thead><tr><th>criterion</th><th class="c">base (template)</th><th class="c">base_raw (bare instruction)</th><th class="num">base − base_raw (pts)</th></tr></thead>
<tbody>{% for r in raw_rows %}<tr><td>{{ r.criterion | label }}</td><td class="rate" style="{{ r.style_a }}">{{ r.a }}</td>
<td class="rate" style="{{ r.style_b }}">{{ r.b }}</td><td class="num">{{ r.diff }}</td></tr>{% endfor %}</tbody></table>
{% else %}<p class="note">Not available: base and base_raw were not both evaluated in this run.</p>{% endif %}

<h2 id="examples">Example responses</h2>
<p class="lead">{{ examples | length }} held-out instructions: wins (<b>{{ focus | mlabel }}</b> passes overall where
the base model fails) and failures of {{ focus | mlabel }}, in item order across families; every model's response as
generated (text before END).</p>
{% for ex in examples %}<div class="example"><div class="ex-head"><span class="badge {{ ex.kind }}">{{ ex.kind }}</span>
<span class="badge fam">{{ ex.family }}</span><span class="instr">{{ ex.instruction }}</span>
{% if ex.reference %}<div class="ref">reference: {{ ex.reference }}</div>{% endif %}</div>
<div class="ex-grid">{% for c in ex.models %}<div class="ex-cell{% if c.focus %} focus{% endif %}"><div class="who">{{ c.label }}</div>
<pre>{{ c.response }}{% if c.cut %} … ({{ c.cut }} more characters){% endif %}</pre>
<div class="verdict">{% if c.overall %}<span class="ok">✓ overall</span>{% else %}<span class="bad">✗ overall</span>{% endif %}
{% if not c.emitted_end %} · no END{% endif %}{% if c.failed %}<br><span class="note">fails: {{ c.failed | join(", ") }}</span>{% endif %}</div>
</div>{% endfor %}</div></div>{% else %}<p class="note">No responses available.</p>{% endfor %}

<h2 id="qc">Data quality: stages 01–05</h2>
<p class="lead">Read from each stage's manifest; a stage without a complete manifest is shown as missing.</p>
{% for s in qc %}<div class="qc"><h3>{{ s.stage[:2] }} · {{ s.title }}
{% if s.missing %}<span class="badge missing">missing</span>{% endif %}</h3>
{% if s.missing %}<p class="note">No complete manifest at <code>{{ s.manifest }}</code>; this stage has not run (or did not finish) for this run.</p>
{% else %}<dl class="facts">{% for k, v in s.facts %}<dt>{{ k }}</dt><dd>{{ v }}</dd>{% endfor %}
<dt>finished</dt><dd>{{ s.finished }} ({{ s.seconds }} s)</dd></dl>
{% for t in s.tables %}{{ table(t) }}{% endfor %}{% endif %}</div>{% endfor %}

<h2 id="training">Training curves</h2>
{% if figs.sft_curves %}<figure><img src="{{ figs.sft_curves }}" alt="SFT training loss"><figcaption>SFT: loss on response tokens per logging step.</figcaption></figure>
{% else %}<p class="note">SFT log history: missing (stage 02 has no complete manifest).</p>{% endif %}
{% if figs.dpo_curves %}<figure><img src="{{ figs.dpo_curves }}" alt="DPO training curves"><figcaption>DPO from the SFT model and from the base model (the control): loss, reward margin and reward accuracy.</figcaption></figure>
{% else %}<p class="note">DPO log histories: missing (stage 05 has no complete manifest).</p>{% endif %}

<h2 id="memory">Evaluation memory</h2>
<p class="lead">Models were evaluated one at a time: load, generate, release, then the next.
<b>max models resident: {{ memory.max_models_resident }}</b>{% if memory.resumed_models %} · resumed from disk: {{ memory.resumed_models | join(", ") }}{% endif %}.
{{ memory.method }}</p>
{{ table(memory_table) }}

<h2 id="provenance">Provenance and reproducibility</h2>
{{ table(provenance_table) }}
{{ table(repro_table) }}
{{ table(disk_table) }}
{{ table(versions_table) }}
{% if notebooks %}<p class="note">Stage notebooks (code hidden): {% for n in notebooks %}<a href="{{ n }}">{{ n }}</a>{% if not loop.last %} · {% endif %}{% endfor %}</p>{% endif %}
<details><summary>Resolved configuration</summary><pre class="config">{{ config_yaml }}</pre></details>
<footer>alignkit · results.json in this folder holds every number shown here.</footer>
</main></body></html>
"""


def _rate_cell(entry: Mapping[str, Any] | None, overall: bool = False) -> dict[str, Any]:
    if entry is None or entry.get("rate") is None:
        return {"rate": "n/a", "ci": "", "n": 0 if entry is None else entry.get("n"), "style": _cell_tint(None),
                "overall": overall}
    return {"rate": pct(entry["rate"]), "ci": f"{pct(entry['ci_low'], 0)}–{pct(entry['ci_high'], 0)}",
            "n": entry["n"], "style": _cell_tint(entry["rate"]), "overall": overall}


def _contrast_cls(row: Mapping[str, Any], alpha: float) -> str:
    if row["p_adjusted"] is None or row["p_adjusted"] >= alpha or not row["diff"]:
        return "ns"
    return "up" if row["diff"] > 0 else "down"


def _contrast_views(results: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    alpha = _alpha(results)
    pairs = list(dict.fromkeys((r["a"], r["b"]) for r in results["contrasts"]))
    rates = {m: results["models"][m]["criteria"] for m in results["model_order"]}
    matrix = {"columns": [f"{a} → {b}" for a, b in pairs], "rows": []}
    for criterion in results["criteria"]:
        cells = []
        for a, b in pairs:
            row = _contrast(results, a, b, criterion)
            if row is None or row["diff"] is None:
                cells.append({"cls": "cell-ns", "text": "n/a", "p": "n/a"})
                continue
            cells.append({"cls": f"cell-{_contrast_cls(row, alpha)}", "p": fmt_p(row["p_adjusted"]),
                          "text": f"{100 * row['diff']:+.1f}{significance_mark(row['p_adjusted'])}"})
        matrix["rows"].append({"criterion": criterion, "cells": cells})
    rows = []
    for r in results["contrasts"]:
        cls = _contrast_cls(r, alpha)
        rows.append({"cls": {"up": "sig-up", "down": "sig-down"}.get(cls, ""), "contrast": f"{r['a']} → {r['b']}",
                     "criterion": r["criterion"], "rate_a": pct(rates[r["a"]][r["criterion"]]["rate"]),
                     "rate_b": pct(rates[r["b"]][r["criterion"]]["rate"]),
                     "diff": "n/a" if r["diff"] is None else f"{100 * r['diff']:+.1f}",
                     "ci": "n/a" if r["ci_low"] is None else f"{100 * r['ci_low']:+.1f} to {100 * r['ci_high']:+.1f}",
                     "h": "n/a" if r["cohens_h"] is None else f"{r['cohens_h']:+.2f}", "n01": r["n01"], "n10": r["n10"],
                     "test": {"mcnemar_exact": "exact", "mcnemar_chi2_cc": "χ² (cc)"}.get(r.get("test"), r.get("test")),
                     "p": fmt_p(r["p_value"]), "p_adj": fmt_p(r["p_adjusted"]), "mark": significance_mark(r["p_adjusted"])})
    return matrix, rows


def _raw_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    if not {"base", "base_raw"} <= set(results["model_order"]):
        return []
    rows = []
    for c in results["criteria"]:
        a, b = results["models"]["base"]["criteria"][c], results["models"]["base_raw"]["criteria"][c]
        diff = None if a["rate"] is None or b["rate"] is None else a["rate"] - b["rate"]
        rows.append({"criterion": c, "a": pct(a["rate"]), "b": pct(b["rate"]), "style_a": _cell_tint(a["rate"]),
                     "style_b": _cell_tint(b["rate"]), "diff": "n/a" if diff is None else f"{100 * diff:+.1f}"})
    return rows


def _provenance_table(results: Mapping[str, Any]) -> dict[str, Any]:
    prov = results.get("provenance") or {}
    rows = []
    if prov.get("eval_items"):
        rows.append(("eval items", prov["eval_items"].get("path"), _short(prov["eval_items"].get("sha256"))))
    models = prov.get("models") or {}
    for name in sorted(models, key=_model_rank):
        m = models[name]
        where = str(m.get("path")) + (f" + adapter {m['adapter']}" if m.get("adapter") else "")
        rows.append((f"model: {name} ({m.get('prompt_style')} prompt)", where, _short(m.get("sha256"))))
    for stage, entry in (prov.get("stages") or {}).items():
        if entry is None:
            rows.append((f"stage {stage}", "missing", "–"))
            continue
        for name, digest in (entry.get("outputs") or {}).items():
            rows.append((f"{stage}: {name}", f"stage fingerprint {entry.get('fingerprint')}", _short(digest)))
    security = prov.get("security") or {}
    rows.append(("trust_remote_code / allow_pickle_weights",
                 f"{security.get('trust_remote_code')} / {security.get('allow_pickle_weights')}", ""))
    rows.append(("git commit", prov.get("git_commit") or "–", ""))
    return _table(("what", "where", "sha256"), rows, "Inputs, models and data (sha256, first 16 hex digits)")


def _short(digest: str | None) -> str:
    return "–" if not digest else digest[:16]


def _memory_table(results: Mapping[str, Any]) -> dict[str, Any]:
    rows = []
    per_model = (results.get("memory") or {}).get("per_model", {})
    for name in sorted(per_model, key=_model_rank):
        m = per_model[name]
        mb = [_fixed(m.get(k)) for k in ("rss_baseline_mb", "rss_peak_mb", "rss_peak_over_baseline_mb",
                                         "rss_after_release_mb", "cuda_max_allocated_mb")]
        rows.append((model_label(name), _fixed(m.get("load_seconds"), 2), _fixed(m.get("generate_seconds"), 2), *mb,
                     "resumed" if m.get("resumed") else "generated"))
    return _table(("model", "load s", "generate s", "RSS before MB", "RSS peak MB", "peak − before MB",
                   "RSS after release MB", "CUDA max alloc MB", ""), rows)


def _relative(path: Path, start: Path) -> str:
    return path.relative_to(start).as_posix()


def build(run: Run, results: Mapping[str, Any] | None = None) -> Path:
    """Write ``reports/<run_id>/report.html`` and its figures; returns the HTML path."""
    import jinja2

    results = dict(results) if results is not None else load_results(run)
    out_dir = run.report_dir
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    figs: dict[str, str | None] = {}
    for key, fig in (("heatmap", heatmap_figure(results)), ("overall", overall_figure(results)),
                     ("families", family_figure(results))):
        figs[key] = _relative(save_figure(fig, fig_dir / f"{key}.png"), out_dir)
    histories = training_histories(run)
    figs["sft_curves"] = figs["dpo_curves"] = None
    if histories["sft"]:
        figs["sft_curves"] = _relative(save_figure(curves_figure(histories["sft"], ("loss",), "SFT"),
                                                   fig_dir / "sft_curves.png"), out_dir)
    if histories["dpo"]:
        keys = ("loss", "rewards/margins", "rewards/accuracies")
        figs["dpo_curves"] = _relative(save_figure(curves_figure(histories["dpo"], keys, "DPO"),
                                                   fig_dir / "dpo_curves.png"), out_dir)

    config = results.get("config") or run.config.to_dict()
    examples = run_examples(run, results)

    criteria = results["criteria"]
    rate_rows = [{"label": model_label(m), "cells": [_rate_cell(results["models"][m]["criteria"][c], c == OVERALL)
                                                     for c in criteria]} for m in results["model_order"]]
    family_rows = [{"family": f.replace("_", " "),
                    "cells": [_rate_cell(results["models"][m]["families"].get(f, {}).get(OVERALL))
                              for m in results["model_order"]]} for f in results["families"]]
    overall_cards = []
    for m in results["model_order"]:
        e = results["models"][m]["criteria"].get(OVERALL)
        if e is not None:
            overall_cards.append({"label": model_label(m), "rate": pct(e["rate"]), "n": e["n"],
                                  "ci": "n/a" if e["rate"] is None else f"{pct(e['ci_low'])}–{pct(e['ci_high'])}"})
    matrix, contrast_rows = _contrast_views(results)
    cochran = results.get("cochran_q")
    memory = results.get("memory") or {"max_models_resident": "n/a", "method": "", "per_model": {}}
    disk = disk_usage(run)
    disk_rows = [(r["stage"], _human_bytes(r["bytes"]), _human_bytes(r["checkpoint_bytes"])) for r in disk["stages"]]
    disk_rows += [("run total", _human_bytes(disk["total_bytes"]), ""),
                  ("this report", _human_bytes(disk["report_bytes"]), "")]
    base_path = Path(str(((results.get("provenance") or {}).get("models") or {}).get("base", {}).get("path", "")))
    if base_path.name and base_path.is_dir():
        disk_rows.append((f"base model folder, shared by runs ({base_path.name})", _human_bytes(_tree_bytes(base_path)),
                          ""))
    disk_table = _table(("stage", "on disk", "of which checkpoints"), disk_rows, f"Run size on disk ({run.dir})")
    versions = (results.get("provenance") or {}).get("versions") or {}
    config_yaml = _yaml(config)
    correction = results.get("correction") or {}
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["label"] = criterion_label
    env.filters["mlabel"] = model_label
    env.filters["mdesc"] = model_description
    page = env.from_string(_TEMPLATE).render(
        css=_CSS, run_id=run.run_id, preset=results.get("preset", run.config.preset), n_items=results["n_items"],
        device=memory.get("device", "n/a"), generated=dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        commit=((results.get("provenance") or {}).get("git_commit") or "–")[:12],
        headline=results.get("headline", ""), correction_name={"holm": "Holm", "bh": "Benjamini–Hochberg"}.get(
            correction.get("method"), correction.get("method", "n/a")),
        n_tests=correction.get("n_tests", len(results["contrasts"])), alpha=_alpha(results),
        n_boot=correction.get("bootstrap_resamples", "n/a"), overall_cards=overall_cards, criteria=criteria,
        rate_rows=rate_rows, figs=figs, model_labels=[model_label(m) for m in results["model_order"]],
        family_rows=family_rows, contrast_matrix=matrix, contrast_rows=contrast_rows,
        cochran=None if cochran is None else {**cochran, "p": fmt_p(cochran["p_value"])},
        raw_rows=_raw_rows(results), examples=examples, focus=focus_model(results) or "",
        qc=qc_sections(run), memory=memory, memory_table=_memory_table(results),
        provenance_table=_provenance_table(results),
        repro_table=_table(("output", "deterministic?", "seed"), reproducibility_rows(config),
                           "What is reproducible, and under which seed"),
        disk_table=disk_table,
        versions_table=_table(("library", "version"), [(k, v or "not installed") for k, v in versions.items()],
                              "Library versions"),
        notebooks=[f"{s}.html" for s in STAGES if (out_dir / f"{s}.html").is_file()],
        config_yaml=config_yaml,
    )
    path = files.write_text(out_dir / "report.html", page)
    log.info("report: %s", path)
    return path


def _yaml(config: Mapping[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=False)


__all__ = ["build", "contrasts_frame", "criteria_frame", "curves_figure", "examples_frame", "family_figure",
           "family_frame", "heatmap_figure", "load_results", "memory_frame", "overall_figure", "pick_examples",
           "run_examples", "significance_mark"]


def build_spread(run_id: str, seed_runs: Mapping[int, str]) -> Path:
    """``seeds: [..]``: each model's overall pass rate per seed, with mean, SD and range, as
    ``reports/<run_id>/spread.json`` and ``spread.html``."""
    from alignkit.runs import reports_root
    from alignkit.stats import seed_spread

    per_seed = {}
    for seed, seed_run in seed_runs.items():
        results = files.read_json(reports_root() / seed_run / "results.json")
        per_seed[seed] = {model: block["criteria"][OVERALL]["rate"] for model, block in results["models"].items()}
    spread = seed_spread(per_seed)
    out_dir = reports_root() / run_id
    files.write_json(out_dir / "spread.json", {"criterion": OVERALL, "runs": dict(seed_runs), "spread": spread})
    rows = "".join(
        f"<tr><td>{html.escape(model)}</td><td>{s['n_seeds']}</td><td>{pct(s['mean'])}</td><td>{pct(s['sd'])}</td>"
        f"<td>{pct(s['min'])} – {pct(s['max'])}</td><td>"
        + ", ".join(f"seed {seed}: {pct(v)}" for seed, v in s["values"].items()) + "</td></tr>"
        for model, s in spread.items())
    links = " · ".join(f'<a href="../{html.escape(r)}/report.html">seed {seed}</a>' for seed, r in seed_runs.items())
    page = (f"<!doctype html><meta charset='utf-8'><title>{html.escape(run_id)}: spread over seeds</title>"
            "<style>body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:60rem;color:#1d2433}"
            "table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #dde;padding:.4rem .6rem;"
            "text-align:left}th{background:#f2f4f8}</style>"
            f"<h1>Spread over training seeds — {html.escape(run_id)}</h1>"
            f"<p>Overall pass rate (every applicable criterion passes) per model, one full study per seed. "
            f"Reports: {links}</p><table><tr><th>model</th><th>seeds</th><th>mean</th><th>SD</th><th>range</th>"
            f"<th>per seed</th></tr>{rows}</table>")
    path = files.write_text(out_dir / "spread.html", page)
    log.info("spread over seeds: %s", path)
    return path
