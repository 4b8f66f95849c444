"""Every figure of the report and the notebooks, on seaborn, built on :class:`matplotlib.figure.Figure` directly
(no pyplot: building a report needs no display and leaves no figure behind in a notebook).

Rates are shown in percent everywhere (axes and colour bars), with their 95% intervals; arms that cannot pass an
endpoint by design are hatched and marked, never shown as if they had failed.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from alignkit import files
from alignkit.report.text import MODEL_COLORS, endpoint_label

DPI = 110


def _figure(width: float, height: float):
    import seaborn as sns
    from matplotlib.figure import Figure

    sns.set_theme(style="whitegrid", font_scale=0.85)
    fig = Figure(figsize=(width, height), dpi=DPI)
    fig.set_layout_engine("constrained")
    return fig


def png_bytes(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    return buffer.getvalue()


def save(fig, path: Path) -> tuple[Path, str]:
    """Write ``fig`` as a PNG (atomically) and return ``(path, data URI)`` so a page can embed the same bytes."""
    data = png_bytes(fig)
    files.write_bytes(path, data)
    return path, "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _entry(results: Mapping[str, Any], model: str, endpoint: str, family: str | None = None) -> Mapping[str, Any]:
    block = results["models"][model]
    return (block["families"].get(family, {}) if family else block["endpoints"]).get(endpoint) or {}


def endpoints_heatmap(results: Mapping[str, Any]):
    """Arms × endpoints pass rates (%) with a colour bar in %; ``†`` marks rates that are not evidence (by design)."""
    import numpy as np
    import seaborn as sns

    models, endpoints = results["model_order"], results["endpoints"]
    values = np.array([[np.nan if _entry(results, m, e).get("rate") is None else 100 * _entry(results, m, e)["rate"]
                        for e in endpoints] for m in models])
    labels = [[("n/a" if np.isnan(values[i, j]) else f"{values[i, j]:.0f}")
               + ("†" if e in results["models"][m].get("by_design", {}) else "")
               for j, e in enumerate(endpoints)] for i, m in enumerate(models)]
    fig = _figure(max(6.0, 1.8 + 0.72 * len(endpoints)), 1.4 + 0.5 * len(models))
    ax = fig.add_subplot()
    sns.heatmap(values, ax=ax, annot=np.array(labels), fmt="", cmap="YlGnBu", vmin=0, vmax=100, linewidths=0.5,
                cbar_kws={"label": "pass rate (%)", "format": "%.0f%%"}, annot_kws={"fontsize": 8})
    ax.set_xticks(np.arange(len(endpoints)) + 0.5, [endpoint_label(e) for e in endpoints], rotation=35, ha="right")
    ax.set_yticks(np.arange(len(models)) + 0.5, models, rotation=0)
    first_composite = len(results.get("criteria", endpoints))
    if first_composite < len(endpoints):
        ax.axvline(first_composite, color="white", linewidth=3)
    fig.suptitle("Pass rate per arm and endpoint (%; seeds pooled; † = cannot pass by design, not evidence)",
                 fontsize=10, x=0.01, ha="left")
    return fig


def composites_figure(results: Mapping[str, Any], endpoints: Sequence[str] = ("format", "content", "overall")):
    """One panel per composite: each arm's pooled rate with its 95% interval and one dot per training seed."""
    fig = _figure(3.3 * len(endpoints) + 0.6, 3.6)
    axes = fig.subplots(1, len(endpoints), sharey=True, squeeze=False)[0]
    models = results["model_order"]
    for ax, endpoint in zip(axes, endpoints):
        for x, model in enumerate(models):
            entry = _entry(results, model, endpoint)
            rate = entry.get("rate")
            by_design = endpoint in results["models"][model].get("by_design", {})
            if rate is None:
                ax.text(x, 2, "n/a", ha="center", fontsize=8)
                continue
            ax.bar(x, 100 * rate, color=MODEL_COLORS.get(model, "#777"), width=0.65, alpha=0.45 if by_design else 1,
                   hatch="//" if by_design else None, edgecolor="#475569" if by_design else None)
            ax.errorbar(x, 100 * rate, yerr=[[100 * (rate - entry["ci_low"])], [100 * (entry["ci_high"] - rate)]],
                        color="#1f2937", capsize=4, linewidth=1)
            seeds = list((entry.get("per_seed") or {}).values())
            if len(seeds) > 1:
                ax.scatter([x] * len(seeds), [100 * v for v in seeds], color="#111827", s=10, zorder=3)
            ax.text(x, 100 * entry["ci_high"] + 2, f"{100 * rate:.0f}%" + ("†" if by_design else ""), ha="center",
                    fontsize=8)
        ax.set_xticks(range(len(models)), models, rotation=30, ha="right")
        ax.set_ylim(0, 112)
        ax.set_title(endpoint_label(endpoint), fontsize=10)
    axes[0].set_ylabel("pass rate (%)")
    fig.suptitle("Composites: pooled rate, 95% Wilson interval (n = items), one dot per training seed; "
                 "hatched † = by design, not evidence", fontsize=9.5, x=0.01, ha="left")
    return fig


def families_figure(results: Mapping[str, Any], endpoint: str = "content"):
    """One endpoint's rate per task family, grouped by arm, with 95% intervals; empty slots say n/a."""
    import numpy as np

    models, families = results["model_order"], results["families"]
    fig = _figure(max(8.0, 1.45 * len(families) + 2), 3.9)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(models))
    for k, model in enumerate(models):
        for i, family in enumerate(families):
            x = i + (k - (len(models) - 1) / 2) * width
            entry = _entry(results, model, endpoint, family)
            if entry.get("rate") is None:
                ax.text(x, 1, "n/a", ha="center", va="bottom", fontsize=6.5, rotation=90, color="#6b7280")
                continue
            rate = entry["rate"]
            ax.bar(x, 100 * rate, width=width * 0.95, color=MODEL_COLORS.get(model, "#777"),
                   label=model if i == 0 else None)
            ax.errorbar(x, 100 * rate, yerr=[[100 * (rate - entry["ci_low"])], [100 * (entry["ci_high"] - rate)]],
                        color="#374151", capsize=2, linewidth=0.8)
    ax.set_xticks(np.arange(len(families)), [f.replace("_", " ") for f in families])
    ax.set_ylim(0, 105)
    ax.set_ylabel(f"{endpoint_label(endpoint)} pass rate (%)")
    fig.suptitle(f"{endpoint_label(endpoint)} by task family (95% Wilson intervals, n = items of the family)",
                 fontsize=10, x=0.01, ha="left")
    fig.legend(fontsize=8, ncol=min(5, len(models)), frameon=False, loc="outside lower center")
    return fig


def forest_figure(rows: Sequence[Mapping[str, Any]], title: str):
    """Each contrast's difference (points) with its 95% interval, and its ± minimum detectable difference as a
    grey band: an interval inside the band is not distinguishable from no effect at this n."""
    fig = _figure(7.5, 0.55 * len(rows) + 1.4)
    ax = fig.add_subplot()
    for y, row in enumerate(reversed(rows)):
        if row.get("diff") is None:
            continue
        if row.get("mde") is not None:
            ax.fill_betweenx([y - 0.3, y + 0.3], -100 * row["mde"], 100 * row["mde"], color="#e5e7eb")
        # Coloured only when the contrast shows a difference: significant and at least the MDE.
        colour = "#166534" if row.get("distinguishable") and row["diff"] > 0 else \
            "#991b1b" if row.get("distinguishable") else "#334155"
        ax.errorbar(100 * row["diff"], y, xerr=[[100 * (row["diff"] - row["ci_low"])],
                                                [100 * (row["ci_high"] - row["diff"])]],
                    fmt="o", color=colour, capsize=4)
    ax.axvline(0, color="#6b7280", linewidth=1)
    ax.set_yticks(range(len(rows)), [f"{r['b']} vs {r['a']} ({endpoint_label(r['endpoint'])})"
                                     + ("" if r.get("diff") is not None else " n/a") for r in reversed(rows)])
    ax.set_xlabel("difference b − a (percentage points) with its 95% CI\ngrey band: ± minimum detectable difference")
    fig.suptitle(title, fontsize=10, x=0.01, ha="left")
    return fig


def phi_figure(results: Mapping[str, Any]):
    """Phi correlations between the nine criteria over every response: how many independent signals there are."""
    import numpy as np
    import seaborn as sns

    names = results["phi"]["names"]
    matrix = np.array([[np.nan if v is None else v for v in row] for row in results["phi"]["matrix"]])
    fig = _figure(7.2, 6.0)
    ax = fig.add_subplot()
    sns.heatmap(matrix, ax=ax, annot=True, fmt=".2f", cmap="vlag", vmin=-1, vmax=1, square=True,
                cbar_kws={"label": "phi"}, annot_kws={"fontsize": 7},
                xticklabels=[endpoint_label(n) for n in names], yticklabels=[endpoint_label(n) for n in names])
    fig.suptitle("Correlation (phi) between criteria over all responses (blank: a criterion is constant)",
                 fontsize=10, x=0.01, ha="left")
    return fig


def curves_figure(histories: Mapping[str, Sequence[Mapping[str, Any]]], keys: Sequence[str], title: str):
    """Training curves: one panel per metric, one line per run (``name`` or ``name seed N``) over the step;
    evaluation entries (``eval_...``) are drawn as markers on their own panel key."""
    import seaborn as sns

    fig = _figure(3.5 * len(keys) + 0.6, 3.1)
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    palette = sns.color_palette("tab10", n_colors=max(1, len(histories)))
    for ax, key in zip(axes, keys):
        for colour, (name, history) in zip(palette, histories.items()):
            points = [(h["step"], h[key]) for h in history if key in h and "step" in h and h[key] is not None]
            if points:
                xs, ys = zip(*points)
                style = {"marker": "o", "linestyle": "--"} if key.startswith("eval_") else {"marker": ".", "markersize": 3}
                ax.plot(xs, ys, linewidth=1.4, label=name, color=colour, **style)
        ax.set_title(key, fontsize=9.5, loc="left")
        ax.set_xlabel("step")
    if len(histories) > 1 and axes[-1].get_legend_handles_labels()[0]:
        axes[-1].legend(fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10, x=0.01, ha="left")
    return fig


def attempts_figure(histogram: Mapping[str, int]):
    """Stage 01: how many attempts the accepted responses needed (best-of-N)."""
    import seaborn as sns

    fig = _figure(5, 3)
    ax = fig.add_subplot()
    sns.barplot(x=[int(k) for k in histogram], y=list(histogram.values()), ax=ax, color="#4c72b0")
    ax.set_xlabel("attempt that was accepted")
    ax.set_ylabel("examples")
    fig.suptitle("Best-of-N: accepted attempt", fontsize=10, x=0.01, ha="left")
    return fig


def margins_figure(pairs: Sequence[Mapping[str, Any]], title: str = "Reference (SFT) margin per negative type"):
    """Stage 04: distribution of the reference model's log-prob margin per negative type (box + points)."""
    import seaborn as sns

    fig = _figure(7.5, 3.4)
    ax = fig.add_subplot()
    data = {"type": [p["negative_type"] for p in pairs], "margin": [p["margin"] for p in pairs]}
    sns.boxplot(data=data, x="type", y="margin", ax=ax, color="#dbeafe", showfliers=False)
    sns.stripplot(data=data, x="type", y="margin", ax=ax, size=2, color="#1e3a8a", alpha=0.4)
    ax.axhline(0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_ylabel("log p(chosen) − log p(rejected)")
    fig.suptitle(title, fontsize=10, x=0.01, ha="left")
    return fig


def type_margins_figure(by_seed_run: Mapping[str, Mapping[str, Mapping[str, Any]]], key: str = "margin_mean"):
    """Stage 05: implicit reward margin (or accuracy) per negative type, one bar per DPO run and seed."""
    import seaborn as sns

    rows = {"run": [], "type": [], key: []}
    for run_name, by_type in by_seed_run.items():
        for negative_type, stats in by_type.items():
            rows["run"].append(run_name)
            rows["type"].append(negative_type)
            rows[key].append(stats.get(key))
    fig = _figure(8, 3.4)
    ax = fig.add_subplot()
    sns.barplot(data=rows, x="type", y=key, hue="run", ax=ax)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.legend(fontsize=7, frameon=False)
    fig.suptitle(f"DPO {key.replace('_', ' ')} per negative type (training pairs; from the initial and final policy)",
                 fontsize=10, x=0.01, ha="left")
    return fig
