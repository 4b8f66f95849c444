"""Comparing the points of a sweep or suite: ``reports/<sweep_id>/compare.html`` (what notebook 07 renders).

Every point is a complete run evaluated on the same items with the same training seeds, so a point is compared
with the suite's reference point paired over items, seeds pooled (the test and interval of
:mod:`alignkit.eval.contrast_stats`), on the suite's arm and endpoint; the tests are Holm-adjusted within the suite.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from alignkit import files
from alignkit.eval import contrast_stats, stats
from alignkit.eval.results import distinguishable, outcome_table, verdict
from alignkit.runs import MANIFEST, home, reports_root

log = logging.getLogger(__name__)

COMPOSITES = ("format", "content", "overall")


def load_point(run_id: str) -> dict[str, Any]:
    """A finished run's results.json and score rows (through its stage-06 manifest)."""
    stage = home() / "runs" / run_id / "06_evaluation"
    manifest = files.read_json(stage / MANIFEST) if (stage / MANIFEST).is_file() else None
    if manifest is None or manifest.get("status") != "complete":
        raise FileNotFoundError(f"{stage / MANIFEST}: run {run_id!r} has no complete evaluation; run it first")
    results = files.read_json(stage / "results.json")
    return {"run_id": run_id, "results": results, "scores": files.read_jsonl(stage / "scores.jsonl"),
            "point": (results.get("config") or {}).get("experiment", {}).get("point") or run_id}


def points_table(points: Sequence[Mapping[str, Any]], arms: Sequence[str], endpoints: Sequence[str] = COMPOSITES):
    """Points × (arm, endpoint): pooled rate and per-seed sd, as a DataFrame (rates in %)."""
    import pandas as pd

    rows = []
    for point in points:
        row: dict[str, Any] = {"point": point["point"]}
        for arm in arms:
            for endpoint in endpoints:
                entry = point["results"]["models"].get(arm, {}).get("endpoints", {}).get(endpoint) or {}
                rate = entry.get("rate")
                row[f"{arm} {endpoint}"] = "n/a" if rate is None else (
                    f"{100 * rate:.1f}% ± {100 * (entry.get('sd') or 0):.1f}")
        rows.append(row)
    return pd.DataFrame(rows).set_index("point")


def against_reference(points: Sequence[Mapping[str, Any]], reference: str, arm: str, endpoint: str, *,
                      alpha: float = 0.05, power: float = 0.8, n_bootstrap: int = 2000, n_permutations: int = 20000,
                      seed: int = 0) -> list[dict[str, Any]]:
    """Each point's difference from the reference point on ``arm``/``endpoint``: paired over items, seeds pooled,
    with its interval, minimum detectable difference and Holm-adjusted p over the suite's points."""
    by_name = {p["point"]: p for p in points}
    if reference not in by_name:
        raise ValueError(f"reference point {reference!r} is not among the points {list(by_name)}")
    ref = by_name[reference]
    seeds = ref["results"]["seeds"]
    _ids, _fam, ref_table = outcome_table(ref["scores"], [arm], seeds)
    rows = []
    others = [p for p in points if p["point"] != reference]
    for point in others:
        if point["results"]["seeds"] != seeds:
            raise ValueError(f"point {point['point']!r} has seeds {point['results']['seeds']}, the reference "
                             f"{seeds}: points are compared seed by seed")
        _ids2, _fam2, table = outcome_table(point["scores"], [arm], seeds)
        d = contrast_stats.item_differences({s: [r[endpoint] for r in ref_table[arm][s]] for s in seeds},
                                            {s: [r[endpoint] for r in table[arm][s]] for s in seeds})
        low, high = contrast_stats.bootstrap_mean_ci(d, n_bootstrap, seed)
        second = float((d * d).mean())
        rows.append({"a": reference, "b": point["point"], "endpoint": endpoint, "arm": arm, "n_items": int(d.size),
                     "diff": float(d.mean()), "ci_low": low, "ci_high": high,
                     "p_value": contrast_stats.sign_flip_p(d, n_permutations, seed),
                     "mde": contrast_stats.minimum_detectable_difference(int(d.size), second,
                                                                         alpha / max(1, len(others)), power)})
    for row, adjusted in zip(rows, stats.adjust([r["p_value"] for r in rows], "holm")):
        row["p_adjusted"] = adjusted
        row["significant"] = adjusted < alpha
        row["distinguishable"] = distinguishable(row, alpha)
        row["verdict"] = verdict(row, alpha)
    return rows


def build(sweep_id: str, run_ids: Sequence[str], suite: str = "") -> Path:
    """Write ``reports/<sweep_id>/compare.html`` (self-contained) and its PNG figures; returns the HTML path."""
    import jinja2

    from alignkit.report import figures
    from alignkit.report.tables import contrast_view
    from alignkit.sweep import load_suite

    points = [load_point(run_id) for run_id in run_ids]
    if suite:
        spec = load_suite(suite)
        reference, arm, endpoint, description = spec.reference, spec.arm, spec.endpoint, spec.description
    else:
        reference, arm, endpoint, description = points[0]["point"], "sft_dpo", "overall", "a sweep of settings"
    arms = [a for a in ("sft", "sft_dpo", "dpo_only") if a in points[0]["results"]["model_order"]]
    table = points_table(points, arms, (*COMPOSITES, *([endpoint] if endpoint not in COMPOSITES else [])))
    rows = against_reference(points, reference, arm, endpoint)
    out_dir = reports_root() / sweep_id
    fig = figures.forest_figure(rows, f"{arm} {endpoint}: each point minus {reference}")
    _path, forest = figures.save(fig, out_dir / "figures" / "compare_forest.png")
    templates = resources.files("alignkit") / "report" / "templates"
    page = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string(
        (templates / "compare.html.j2").read_text(encoding="utf-8")).render(
        css=(templates / "report.css").read_text(encoding="utf-8"), sweep_id=sweep_id, suite=suite,
        description=description, reference=reference, arm=arm, endpoint=endpoint,
        split=points[0]["results"].get("split", "test"), seeds=points[0]["results"]["seeds"],
        n_items=points[0]["results"]["n_items"], generated=dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        table_columns=["point", *table.columns], table_rows=[[index, *row] for index, row in table.iterrows()],
        contrast_rows=[contrast_view({**r, "role": "suite", "rate_a": None, "rate_b": None}) for r in rows],
        forest=forest, runs=[{"point": p["point"], "run_id": p["run_id"]} for p in points])
    path = files.write_text(out_dir / "compare.html", page)
    log.info("comparison: %s", path)
    return path
