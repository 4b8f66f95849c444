"""The study report: ``reports/<run_id>/report.html``, one self-contained file (CSS inline, figures embedded),
with the same figures as PNG files in ``reports/<run_id>/figures/`` for papers.

    alignkit run --preset tiny          (stage 06 calls :func:`build` at its end)

Built from ``06_evaluation/results.json`` (the numbers), ``responses.jsonl``/``scores.jsonl`` (the examples) and
the manifests and logs of stages 01-05, whichever exist. The page says the pre-registered design before any
number, then the headline, what the numbers can and cannot say, the primary contrasts, every arm's rates with
their per-seed spread, the secondary tests, the criteria with examples from this run, and the data, training,
memory and provenance behind them. Layout lives in ``templates/report.html.j2`` and ``templates/report.css``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from alignkit import files
from alignkit.config import STAGES
from alignkit.eval import scoring
from alignkit.report import examples as examples_module
from alignkit.report import figures, qc, tables
from alignkit.report.tables import (
    contrasts_frame,
    examples_frame,
    family_frame,
    memory_frame,
    rates_frame,
)
from alignkit.report.text import endpoint_label, model_description
from alignkit.runs import Run, StageInputError

log = logging.getLogger(__name__)

EVAL_STAGE = "06_evaluation"
HELDOUT_NOTES = {
    True: "the embedded base model's pretraining corpus asks about every key of the world, held-out keys included "
          "(like a real base model, which has seen such facts on the web).",
    False: "a real base model has likely seen facts like these (capitals, arithmetic, common words) in pretraining.",
}

__all__ = ["build", "contrasts_frame", "examples_frame", "family_frame", "load_results", "load_run_info", "memory_frame",
           "rates_frame", "run_examples"]


def load_results(run: Run) -> dict[str, Any]:
    """``results.json`` of stage 06 (through its manifest)."""
    return files.read_json(run.output(EVAL_STAGE, "results"))


def load_run_info(run: Run) -> dict[str, Any]:
    """``run_info.json`` of stage 06 (paths, memory, versions), or an empty dict for an older run."""
    try:
        return files.read_json(run.output(EVAL_STAGE, "run_info"))
    except StageInputError:
        return {}


def _rows(run: Run, name: str) -> list[dict[str, Any]]:
    try:
        return files.read_jsonl(run.output(EVAL_STAGE, name))
    except StageInputError:
        return []


def _items(run: Run, results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    output = "dev_items" if results.get("split") == "dev" else "eval_items"
    try:
        return {r["id"]: r for r in files.read_jsonl(run.output("01_sft_data", output))}
    except StageInputError:
        return {}


def run_examples(run: Run, results: Mapping[str, Any] | None = None, n: int | None = None) -> list[dict[str, Any]]:
    """Side-by-side examples of a run (``evaluation.n_examples`` of them)."""
    results = results if results is not None else load_results(run)
    n = run.config.evaluation.n_examples if n is None else n
    return examples_module.pick_examples(results, _rows(run, "responses"), _rows(run, "scores"), _items(run, results), n)


def _figures(run: Run, results: Mapping[str, Any], out_dir: Path) -> dict[str, str | None]:
    """Every figure: saved as PNG under ``figures/`` and returned as data URIs for embedding."""
    fig_dir = out_dir / "figures"
    primary = [r for r in results["contrasts"] if r.get("named_primary") and r["role"] == "primary"]
    secondary = [r for r in results["contrasts"] if r["role"] == "secondary"]
    histories = qc.histories(run)
    built = {
        "forest": figures.forest_figure(primary, "Primary contrasts"),
        "forest_secondary": figures.forest_figure(secondary, "Secondary contrasts") if secondary else None,
        "composites": figures.composites_figure(results),
        "heatmap": figures.endpoints_heatmap(results),
        "families_content": figures.families_figure(results, "content"),
        "families_overall": figures.families_figure(results, "overall"),
        "phi": figures.phi_figure(results),
        "sft_curves": figures.curves_figure(histories["sft"], ("loss", "eval_loss"), "SFT")
        if histories["sft"] else None,
        "dpo_curves": figures.curves_figure(histories["dpo"], ("loss", "rewards/accuracies", "rewards/margins",
                                                                "logps/chosen", "logps/rejected"), "DPO")
        if histories["dpo"] else None,
    }
    margins = qc.dpo_type_margins(run)
    built["dpo_types"] = figures.type_margins_figure(margins) if any(margins.values()) else None
    uris: dict[str, str | None] = {}
    for key, fig in built.items():
        uris[key] = None if fig is None else figures.save(fig, fig_dir / f"{key}.png")[1]
    return uris


def _provenance_table(results: Mapping[str, Any], info: Mapping[str, Any]) -> dict[str, Any]:
    prov = results.get("provenance") or {}
    models, shared, codes = info.get("models") or {}, info.get("shared_stages") or {}, info.get("stages") or {}
    rows = [(f"{prov.get('split', 'test')} items", info.get("items_path", "–"), (prov.get("items_sha256") or "–")[:16])]
    for key, m in (prov.get("models") or {}).items():
        where = models.get(key) or {}
        text = str(where.get("path", "–")) + (f" + adapter {where['adapter']}" if where.get("adapter") else "")
        rows.append((f"model {key} ({m.get('prompt_style')} prompt)", text, (where.get("sha256") or "–")[:16]))
    for stage, entry in (prov.get("stages") or {}).items():
        if entry is None:
            rows.append((f"stage {stage}", "missing", "–"))
            continue
        note = f"; shared from run {shared[stage]}" if stage in shared else ""
        unit = codes.get(stage) or {}
        code = unit.get("code") or {}
        rows.append((f"stage {stage}: code", f"fingerprint {unit.get('fingerprint')}{note}; uncommitted changes: "
                     f"{code.get('dirty')}", (code.get("hash") or "–")[:16]))
        for name, digest in (entry.get("outputs") or {}).items():
            rows.append((f"stage {stage}: {name}", "output", digest[:16]))
    code = info.get("code") or {}
    if code:
        rows.append(("alignkit code of stage 06", f"checkout with uncommitted changes: {code.get('dirty')}",
                     (code.get("hash") or "–")[:16]))
    security = prov.get("security") or {}
    rows.append(("trust_remote_code / allow_pickle_weights",
                 f"{security.get('trust_remote_code')} / {security.get('allow_pickle_weights')}", ""))
    rows.append(("git commit", info.get("git_commit") or "–", ""))
    return qc.table(("what", "where", "sha256 (first 16 hex digits)"), rows, "Inputs, models, data and code")


def _disk_table(run: Run) -> dict[str, Any]:
    disk = qc.disk_usage(run)
    rows = [(r["stage"], files.human_bytes(r["bytes"]), files.human_bytes(r["checkpoint_bytes"]))
            for r in disk["stages"]]
    rows += [("run total", files.human_bytes(disk["total_bytes"]), ""),
             ("this report", files.human_bytes(disk["report_bytes"]), "")]
    return qc.table(("stage", "on disk", "of which checkpoints"), rows, f"Run size on disk ({run.dir})")


def _yaml(config: Mapping[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=False)


def build(run: Run, results: Mapping[str, Any] | None = None) -> Path:
    """Write ``reports/<run_id>/report.html`` (self-contained) and its PNG figures; returns the HTML path."""
    import jinja2

    results = dict(results) if results is not None else load_results(run)
    out_dir = run.report_dir
    files.write_json(out_dir / "results.json", results)
    figs = _figures(run, results, out_dir)
    config = results.get("config") or run.config.to_dict()
    responses, scores = _rows(run, "responses"), _rows(run, "scores")
    items = _items(run, results)
    examples = examples_module.pick_examples(results, responses, scores, items, run.config.evaluation.n_examples)
    by_example = examples_module.criterion_examples(responses, scores, items)
    correction = results.get("correction") or {}
    info = load_run_info(run)
    memory = info.get("memory") or {"max_models_resident": "n/a", "method": "", "per_model": {}}
    versions = info.get("versions") or {}
    contrast_views = [tables.contrast_view(r) for r in results["contrasts"]]
    templates = resources.files("alignkit") / "report" / "templates"
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["label"] = endpoint_label
    page = env.from_string((templates / "report.html.j2").read_text(encoding="utf-8")).render(
        css=(templates / "report.css").read_text(encoding="utf-8"), run_id=run.run_id,
        preset=results.get("preset", run.config.preset), n_items=results["n_items"],
        split_words="held-out test items" if results.get("split", "test") == "test" else "dev items (selection run)",
        seeds=results.get("seeds", []), device=memory.get("device", "n/a"),
        generated=dt.datetime.now().strftime("%Y-%m-%d %H:%M"), commit=(info.get("git_commit") or "–")[:18],
        models=[{"name": m, "description": model_description(m)} for m in results["model_order"]],
        design=tables.design_rows(results), secondary_correction=correction.get("secondary", "holm"),
        test_name=correction.get("test", ""), interval_name=correction.get("interval", ""),
        power_pct=f"{100 * correction.get('power', 0.8):.0f}%", alpha=correction.get("alpha", 0.05),
        headline=results.get("headline", ""), heldout_note=HELDOUT_NOTES[run.config.embedded_base],
        by_design={m: sorted({reason for reason in block.get("by_design", {}).values()})
                   for m, block in results["models"].items() if block.get("by_design")},
        primary_rows=[v for v, r in zip(contrast_views, results["contrasts"]) if r.get("named_primary")],
        secondary_rows=[v for v, r in zip(contrast_views, results["contrasts"]) if not r.get("named_primary")],
        endpoints=results["endpoints"], rate_rows=tables.rate_rows(results), figs=figs,
        family_n=round(results["n_items"] / max(1, len(results["families"]))),
        criteria_cards=[{"name": e, "definition": scoring.DEFINITIONS.get(e, ""), "examples": by_example.get(e, {})}
                        for e in results["endpoints"]],
        examples=examples, focus=examples[0]["focus"] if examples else "", qc=qc.sections(run), memory=memory,
        memory_table=qc.table(tables.MEMORY_COLUMNS, tables.memory_rows(memory)),
        provenance_table=_provenance_table(results, info),
        repro_table=qc.table(("output", "deterministic?", "seed"), qc.reproducibility_rows(config),
                             "What is reproducible, and under which seed"),
        disk_table=_disk_table(run),
        versions_table=qc.table(("library", "version"), [(k, v or "not installed") for k, v in versions.items()],
                                "Library versions"),
        notebooks=[f"{s}.html" for s in STAGES if (out_dir / f"{s}.html").is_file()], config_yaml=_yaml(config),
    )
    path = files.write_text(out_dir / "report.html", page)
    log.info("report: %s", path)
    return path
