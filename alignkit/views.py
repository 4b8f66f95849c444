"""What the notebooks call to set themselves up and to show a stage: the run, its manifests as tables, records.

Notebooks stay thin: they call these (and :mod:`alignkit.report`'s tables and figures) and display what comes back.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

from alignkit import files
from alignkit.runs import Run, open_run


def notebook_run(preset: str, config_file: str, overrides: str, run_id: str) -> Run:
    """Set a notebook up (log records go to the cell's normal output, not the red stderr box) and open its run."""
    root = logging.getLogger()
    if not any(getattr(h, "_alignkit_notebook", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        handler._alignkit_notebook = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        # bitsandbytes warns on every CPU import that an optional kernel package is absent; it falls back to its
        # own CPU code, so the line says nothing about the study.
        logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    run = open_run(preset, config_file or None, overrides, run_id or None)
    print(f"run {run.run_id!r} (preset {run.config.preset}, training seeds {list(run.config.training_seeds)}) "
          f"in {run.dir}")
    return run


def frame(rows: list[dict[str, Any]] | dict[Any, dict[str, Any]], index: str | None = None):
    """A DataFrame from records, or from a ``{name: {column: value}}`` mapping (names become the index)."""
    import pandas as pd

    if isinstance(rows, dict):
        return pd.DataFrame.from_dict(rows, orient="index")
    table = pd.DataFrame(rows)
    return table.set_index(index) if index and index in table else table


def stage_header(manifests: Mapping[str, Any]):
    """One row per stage unit (a manifest, or ``{seed: manifest}`` of a per-seed stage): status, where it came
    from (run or cache), time, outputs with row counts."""
    units = {None: manifests} if "status" in manifests else dict(manifests)
    rows = []
    for seed, manifest in units.items():
        outputs = ", ".join(f"{name} ({entry['rows']} rows)" if entry.get("rows") is not None else name
                            for name, entry in manifest.get("outputs", {}).items())
        rows.append({"stage": manifest["stage"], "seed": seed, "status": manifest["status"],
                     "seconds": manifest.get("seconds"), "finished": manifest.get("finished"),
                     "shared from run": (manifest.get("adopted_from") or {}).get("run_id"),
                     "fingerprint": manifest.get("fingerprint"), "outputs": outputs})
    return frame(rows)


def per_seed(manifests: Mapping[Any, Mapping[str, Any]], keys: tuple[str, ...]):
    """Selected summary fields of a per-seed stage, one row per seed."""
    return frame({f"seed {seed}": {k: m["summary"].get(k) for k in keys} for seed, m in manifests.items()})


def sft_data_qc(manifest: dict[str, Any]):
    """Stage 01: the overall numbers and the per-family acceptance."""
    summary = manifest["summary"]
    overall = frame([{k: summary.get(k) for k in ("wanted", "kept", "shortfall", "candidates", "duplicates_removed",
                                                   "acceptance_rate")} | {"dev kept": summary["dev"]["kept"]}])
    return overall, frame(summary["per_family"])


def records_frame(path, columns: list[str], n: int = 10):
    """The first ``n`` rows of a JSONL file, selected columns."""
    rows = files.read_jsonl(path)[:n]
    return frame([{c: row.get(c) for c in columns} for row in rows])


def histories(run: Run, stage: str, names: tuple[str, ...]) -> dict[str, list[dict[str, Any]]]:
    """``{"<name> seed <N>": trainer log history}`` of a training stage, for every seed."""
    return {f"{'sft' if name == 'log_history' else name.removesuffix('_log_history')} seed {view.training_seed}":
            files.read_json(view.output(stage, name)) for view in run.seed_views() for name in names}


def sweep_run_ids(sweep_id: str, run_ids: str) -> list[str]:
    """The run ids of a comparison: the given comma-separated ones, or every run whose id starts with
    ``<sweep_id>-`` (in name order)."""
    from alignkit.runs import home

    given = [r.strip() for r in run_ids.split(",") if r.strip()]
    if given:
        return given
    found = sorted(p.name for p in (home() / "runs").glob(f"{sweep_id}-*") if p.is_dir())
    if not found:
        raise FileNotFoundError(f"no runs named {sweep_id}-* under {home() / 'runs'}; pass run_ids")
    return found


def comparison_spec(suite: str, points: list[dict[str, Any]]) -> dict[str, str]:
    """The reference point, arm and endpoint of a comparison: the suite's, or the first point on sft_dpo overall."""
    if suite:
        from alignkit.sweep import load_suite

        spec = load_suite(suite)
        return {"reference": spec.reference, "arm": spec.arm, "endpoint": spec.endpoint}
    return {"reference": points[0]["point"], "arm": "sft_dpo", "endpoint": "overall"}
