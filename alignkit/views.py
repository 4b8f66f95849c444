"""Tables and figures the notebooks display, built from stage manifests and output files.

Notebooks stay thin: they call these and show what comes back (pandas DataFrames, matplotlib figures).
"""

from __future__ import annotations

from typing import Any

from alignkit import files
from alignkit.runs import Run


def frame(rows: list[dict[str, Any]] | dict[str, dict[str, Any]], index: str | None = None):
    """A DataFrame from records, or from a ``{name: {column: value}}`` mapping (names become the index)."""
    import pandas as pd

    if isinstance(rows, dict):
        return pd.DataFrame.from_dict(rows, orient="index")
    table = pd.DataFrame(rows)
    return table.set_index(index) if index and index in table else table


def stage_header(manifest: dict[str, Any]):
    """One-row summary of a stage run: status, cache fingerprint, time, outputs with row counts."""
    outputs = ", ".join(f"{name} ({entry['rows']} rows)" if entry.get("rows") is not None else name
                        for name, entry in manifest.get("outputs", {}).items())
    return frame([{"stage": manifest["stage"], "run": manifest["run_id"], "status": manifest["status"],
                   "seconds": manifest.get("seconds"), "finished": manifest.get("finished"),
                   "fingerprint": manifest.get("fingerprint"), "outputs": outputs}], index="stage")


def sft_data_qc(manifest: dict[str, Any]):
    """Stage 01: per-family acceptance, and the overall numbers."""
    summary = manifest["summary"]
    per_family = frame(summary["per_family"])
    overall = frame([{k: summary[k] for k in ("wanted", "kept", "shortfall", "candidates", "duplicates_removed",
                                               "acceptance_rate")}])
    return overall, per_family


def attempts_figure(manifest: dict[str, Any]):
    """Stage 01: how many attempts the accepted responses needed (best-of-N)."""
    import matplotlib.pyplot as plt

    hist = manifest["summary"]["attempts_histogram"]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar([int(k) for k in hist], list(hist.values()), color="#4c72b0")
    ax.set_xlabel("attempt that was accepted")
    ax.set_ylabel("examples")
    ax.set_title("Best-of-N: accepted attempt")
    fig.tight_layout()
    return fig


def records_frame(path, columns: list[str], n: int = 10):
    """The first ``n`` rows of a JSONL file, selected columns."""
    rows = files.read_jsonl(path)[:n]
    return frame([{c: row.get(c) for c in columns} for row in rows])


def loss_figure(histories: dict[str, list[dict[str, Any]]], keys: tuple[str, ...] = ("loss",)):
    """Training curves: one line per (run, metric) over global steps."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for name, history in histories.items():
            points = [(h["step"], h[key]) for h in history if key in h and "step" in h]
            if points:
                ax.plot(*zip(*points), marker=".", label=name)
        ax.set_xlabel("step")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        if len(histories) > 1:
            ax.legend()
    fig.tight_layout()
    return fig


def load_history(run: Run, stage: str, name: str = "log_history") -> list[dict[str, Any]]:
    """A stage's saved trainer log history."""
    return files.read_json(run.output(stage, name))


def margin_figure(pairs_path):
    """Stage 04: distribution of the reference model's margin per negative type."""
    import matplotlib.pyplot as plt

    rows = files.read_jsonl(pairs_path)
    types = sorted({r["negative_type"] for r in rows})
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.boxplot([[r["margin"] for r in rows if r["negative_type"] == t] for t in types], showfliers=False)
    ax.set_xticks(range(1, len(types) + 1), types)
    ax.axhline(0, color="grey", lw=0.8, ls="--")
    ax.set_ylabel("log p(chosen) - log p(rejected)")
    ax.set_title("Reference (SFT) margin per negative type")
    fig.tight_layout()
    return fig
