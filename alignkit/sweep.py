"""``alignkit sweep``: a grid of ``-p`` overrides, or a suite shipped with the package, as one run per point.

    alignkit sweep --preset tiny --grid dpo.learning_rate=1e-4,5e-5 --grid dpo.beta=0.05,0.1,0.3 --select dev:overall
    alignkit sweep --preset smoke --suite mix
    alignkit sweep --preset tiny --suite masking --dry-run

Every point is a run (``<sweep_id>-<k>``) that shares every unchanged upstream stage with the others through the
cache (a stage with the same config, seed, inputs and code is taken from the run that computed it, see
:func:`alignkit.runs.adopt`); each point runs with the preset's training seeds.

- **Selection** (``--select dev:<endpoint>[:<arm>]``): every point is evaluated on the **dev** split, never on
  the test items; the comparison table (``reports/<sweep_id>/sweep.csv`` and ``sweep.html``) ranks the points by
  the arm's pooled dev rate (default arm ``sft_dpo``), and the winner's overrides are written to
  ``reports/<sweep_id>/selected.yaml``, usable with ``--config``. Rule: the highest dev rate; ties go to the
  smaller ``dpo.learning_rate`` (then ``sft.learning_rate``, then the earlier point).
- **Suites** (``--suite NAME``, ``alignkit/suites/NAME.yaml``): an experiment, evaluated on the **test** split once
  per point; ``notebooks/07_compare.ipynb`` renders ``reports/<sweep_id>/compare.html`` at the end.

Before anything runs, the cost is printed: the runs, the stage units the cache already holds or that points will
share, and an estimate of the time from the stage timings recorded on this machine; ``--dry-run`` stops there.
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from alignkit import files
from alignkit.config import (
    PER_SEED_STAGES,
    STAGES,
    ConfigError,
    parse_overrides,
    resolve,
)
from alignkit.runs import (
    MANIFEST,
    Run,
    check_run_id,
    home,
    is_cached,
    reports_root,
    stage_code,
    stage_config,
    world_size,
)

log = logging.getLogger(__name__)

TIE_KEYS = ("dpo.learning_rate", "sft.learning_rate")
SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


@dataclass(frozen=True)
class Point:
    """One run of a sweep: its name, the overrides it adds, and its run id."""

    name: str
    overrides: tuple[str, ...]
    run_id: str


@dataclass(frozen=True)
class Suite:
    """A shipped experiment: its points (name -> overrides), the reference point, and what is compared."""

    name: str
    description: str
    reference: str
    arm: str
    endpoint: str
    points: dict[str, tuple[str, ...]] = field(default_factory=dict)


def parse_grid(items: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``["dpo.beta=0.05,0.1"]`` -> ``[("dpo.beta", ["0.05", "0.1"])]`` (a value list in brackets stays whole).

    >>> parse_grid(["dpo.beta=0.05,0.1", "negatives.types=[format, verbose]"])
    [('dpo.beta', ['0.05', '0.1']), ('negatives.types', ['[format, verbose]'])]
    """
    grid = []
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise ConfigError(f"--grid {item!r}: expected key=value1,value2 (e.g. dpo.beta=0.05,0.1)")
        parts = [values.strip()] if values.strip().startswith("[") else [v.strip() for v in values.split(",")]
        if any(not v for v in parts):
            raise ConfigError(f"--grid {item!r}: an empty value in the list")
        grid.append((key.strip(), parts))
    return grid


def grid_points(grid: Sequence[tuple[str, list[str]]], sweep_id: str) -> list[Point]:
    """The cartesian product of the grid, in order, one point per combination.

    >>> [p.run_id for p in grid_points([("dpo.beta", ["0.1", "0.3"])], "s")]
    ['s-00', 's-01']
    """
    keys = [key for key, _ in grid]
    points = []
    for index, values in enumerate(itertools.product(*(values for _, values in grid))):
        overrides = tuple(f"{k}={v}" for k, v in zip(keys, values))
        points.append(Point(", ".join(overrides) or "default", overrides, check_run_id(f"{sweep_id}-{index:02d}")))
    return points


def available_suites() -> list[str]:
    folder = resources.files("alignkit") / "suites"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_suite(name: str) -> Suite:
    """The suite ``alignkit/suites/<name>.yaml``; unknown names list the shipped ones."""
    path = resources.files("alignkit") / "suites" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"suite {name!r}: not found; shipped suites: {', '.join(available_suites())}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    for key in ("description", "reference", "arm", "endpoint", "points"):
        if key not in data:
            raise ConfigError(f"suite {name!r} ({path}): missing key {key!r}")
    points = {str(k): tuple(f"{key}={_text(value)}" for key, value in (v or {}).items())
              for k, v in data["points"].items()}
    if data["reference"] not in points:
        raise ConfigError(f"suite {name!r}: reference {data['reference']!r} is not one of its points {list(points)}")
    return Suite(name, data["description"], data["reference"], data["arm"], data["endpoint"], points)


def _text(value: Any) -> str:
    """A YAML value back as ``-p`` text (lists and mappings in flow style)."""
    if isinstance(value, (list, dict)):
        return yaml.safe_dump(value, default_flow_style=True).strip()
    return str(value)


def suite_points(suite: Suite, sweep_id: str) -> list[Point]:
    return [Point(name, overrides, check_run_id(f"{sweep_id}-{name}")) for name, overrides in suite.points.items()]


# --------------------------------------------------------------------------------------------------
# Cost up front
# --------------------------------------------------------------------------------------------------


def recorded_seconds(preset: str, root: Path | None = None) -> dict[str, float]:
    """Median seconds per stage unit over the complete manifests of this preset under ``ALIGNKIT_HOME`` (what
    this machine has measured; units taken from another run's cache are not timings and are skipped)."""
    root = root or home()
    seen: dict[str, list[float]] = {}
    for path in (root / "runs").glob("*/*/**/" + MANIFEST) if (root / "runs").is_dir() else []:
        try:
            manifest = files.read_json(path)
        except (OSError, ValueError):
            continue
        if manifest.get("status") == "complete" and manifest.get("preset") == preset \
                and not manifest.get("adopted_from") and manifest.get("seconds") is not None:
            seen.setdefault(manifest["stage"], []).append(float(manifest["seconds"]))
    return {stage: statistics.median(values) for stage, values in seen.items()}


def _unit_key(stage: str, seed: int | None, config_part: dict[str, Any], code: str, processes: int) -> tuple:
    """What makes one stage unit the same as another when its inputs do not exist yet: its stage, training seed,
    config sections, code and number of processes, as in its fingerprint (inputs are the outputs of the upstream
    units, so a chain of keys stands for them)."""
    return stage, seed, files.to_json(config_part), code, processes


def held_chains(runs_root: Path) -> dict[tuple, set[str]]:
    """Chains of unit keys (every stage up to and including one unit) that complete manifests under
    ``runs_root`` hold, mapped to the runs holding them: what a new run with the same chain would take from
    another run's cache instead of computing (see :func:`alignkit.runs.adopt`; evaluation is never shared)."""
    held: dict[tuple, set[str]] = {}
    for run_dir in sorted(p for p in runs_root.iterdir() if p.is_dir()) if runs_root.is_dir() else []:
        seeds = sorted({int(p.name[4:]) for stage in PER_SEED_STAGES for p in (run_dir / stage).glob("seed*")
                        if p.name[4:].isdigit()}) or [None]
        for seed in seeds:
            chain: tuple = ()
            for stage in STAGES[:-1]:
                per_seed = stage in PER_SEED_STAGES
                path = run_dir / stage / (f"seed{seed}" if per_seed else "") / MANIFEST
                try:
                    manifest = files.read_json(path) if path.is_file() else None
                except (OSError, ValueError):
                    manifest = None
                if not manifest or manifest.get("status") != "complete" or (per_seed and seed is None):
                    break  # nothing downstream of a missing unit can be held
                chain = (*chain, _unit_key(stage, seed if per_seed else None, manifest.get("config", {}),
                                           (manifest.get("code") or {}).get("hash", ""),
                                           manifest.get("processes", 1)))
                held.setdefault(chain, set()).add(run_dir.name)
    return held


def plan(points: Sequence[Point], preset: str, config_file: str | None, base_overrides: Sequence[str],
         stages: Sequence[str] = STAGES) -> dict[str, Any]:
    """How many stage units each point needs and where each comes from, with an estimate of the time.

    A unit is *cached* when its own run already holds it, *held* when another run of this ``ALIGNKIT_HOME``
    computed it with the same config, seed and code all the way up its chain (it will be linked from there),
    *shared* when an earlier point of this sweep will compute it (same chain), and otherwise *to run*; only the
    units to run count in the estimate (median recorded seconds of their stage on this machine).
    """

    seconds = recorded_seconds(preset)
    held = held_chains(home() / "runs")
    codes = {stage: stage_code(stage)["hash"] for stage in stages}
    processes = world_size()
    seen_chains: set[tuple] = set()
    units = {"total": 0, "cached": 0, "held": 0, "shared": 0, "to_run": 0}
    estimate, unknown = 0.0, set()
    for point in points:
        cfg = resolve(preset, config_file, [*base_overrides, *point.overrides])
        run = Run(point.run_id, cfg)
        for seed in cfg.training_seeds:
            chain: tuple = ()
            for stage in stages:
                per_seed = stage in PER_SEED_STAGES
                view = run.for_seed(seed) if per_seed else run
                chain = (*chain, _unit_key(stage, seed if per_seed else None, stage_config(view, stage), codes[stage],
                                           processes))
                if not per_seed and seed != cfg.training_seeds[0]:
                    continue  # a stage shared by the seeds counts once per point
                units["total"] += 1
                if view.manifest(stage) is not None and is_cached(view, stage):
                    units["cached"] += 1
                elif stage != "06_evaluation" and held.get(chain, set()) - {point.run_id}:
                    units["held"] += 1
                elif chain in seen_chains and stage != "06_evaluation":
                    units["shared"] += 1
                else:
                    units["to_run"] += 1
                    if stage in seconds:
                        estimate += seconds[stage]
                    else:
                        unknown.add(stage)
                seen_chains.add(chain)
    return {"runs": len(points), "units": units, "estimate_seconds": round(estimate),
            "no_timing_for": sorted(unknown), "timings": seconds}


def describe_plan(summary: dict[str, Any]) -> str:
    """The cost as two lines for the terminal.

    >>> print(describe_plan({"runs": 2, "units": {"total": 20, "cached": 0, "held": 9, "shared": 1, "to_run": 10},
    ...                      "estimate_seconds": 150, "no_timing_for": ["06_evaluation"]}))
    2 runs, 20 stage units: 0 cached in their own run, 9 held by another run, 1 shared between points, 10 to run
    estimated time: about 2.5 min from the stage timings recorded on this machine (none yet for 06_evaluation)
    """
    units = summary["units"]
    missing = summary["no_timing_for"]
    return "\n".join([
        f"{summary['runs']} runs, {units['total']} stage units: {units['cached']} cached in their own run, "
        f"{units['held']} held by another run, {units['shared']} shared between points, {units['to_run']} to run",
        f"estimated time: about {summary['estimate_seconds'] / 60:.1f} min from the stage timings recorded on this "
        "machine" + (f" (none yet for {', '.join(missing)})" if missing else "")])


# --------------------------------------------------------------------------------------------------
# Running, comparing, selecting
# --------------------------------------------------------------------------------------------------


def run_point(point: Point, preset: str, config_file: str | None, overrides: Sequence[str], force: bool) -> Run:
    """All six stages of one point, in this process (each stage under the run's lock, cached or shared)."""
    from alignkit.lock import run_lock
    from alignkit.runs import open_run
    from alignkit.stages import registry as stage_registry

    run = open_run(preset, config_file, [*overrides, *point.overrides], point.run_id)
    with run_lock(run.dir, f"alignkit sweep point {point.name}"):
        for stage in STAGES:
            stage_registry.run_stage(run, stage, force=force)
    return run


def point_row(point: Point, run: Run, endpoint: str) -> dict[str, Any]:
    """One line of the comparison table: the point's overrides and each trained arm's pooled rate (sd over seeds)."""
    results = files.read_json(run.report_dir / "results.json")
    row: dict[str, Any] = {"point": point.name, "run_id": run.run_id, "split": results.get("split")}
    for override in point.overrides:
        key, _, value = override.partition("=")
        if not key.startswith("experiment."):
            row[key] = value
    for arm, block in results["models"].items():
        entry = block["endpoints"][endpoint]
        row[f"{arm} {endpoint}"] = entry["rate"]
        row[f"{arm} sd"] = entry.get("sd")
    return row


def select(rows: Sequence[dict[str, Any]], endpoint: str, arm: str) -> dict[str, Any]:
    """The winning row: highest ``<arm> <endpoint>``; ties to the smaller dpo.learning_rate, then
    sft.learning_rate, then the earlier point.

    >>> rows = [{"point": "a", "sft_dpo overall": 0.5, "dpo.learning_rate": "1e-4"},
    ...         {"point": "b", "sft_dpo overall": 0.5, "dpo.learning_rate": "5e-5"}]
    >>> select(rows, "overall", "sft_dpo")["point"]
    'b'
    """
    column = f"{arm} {endpoint}"
    missing = [r["point"] for r in rows if r.get(column) is None]
    if missing:
        raise ValueError(f"--select: points {missing} have no {column!r} rate")

    def key(indexed):
        index, row = indexed
        ties = tuple(float(row[k]) if k in row else float("inf") for k in TIE_KEYS)
        return (-row[column], *ties, index)

    return min(enumerate(rows), key=key)[1]


def write_table(folder: Path, rows: Sequence[dict[str, Any]], winner: dict[str, Any] | None, title: str) -> Path:
    """``sweep.csv`` and a self-contained ``sweep.html`` (the winner marked) in ``folder``."""
    import jinja2

    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    files.write_text(folder / "sweep.csv", buffer.getvalue())
    templates = resources.files("alignkit") / "report" / "templates"
    page = jinja2.Environment(autoescape=True).from_string(
        (templates / "sweep.html.j2").read_text(encoding="utf-8")).render(
        title=title, columns=columns, rows=rows, winner=winner["point"] if winner else None,
        css=(templates / "report.css").read_text(encoding="utf-8"))
    return files.write_text(folder / "sweep.html", page)


def selected_yaml(point: Point, rule: str) -> str:
    """The winner's overrides as a nested YAML config, with the rule that chose it as a comment.

    >>> print(selected_yaml(Point("x", ("dpo.beta=0.1", "dpo.learning_rate=5e-5"), "s-00"), "highest"), end="")
    # chosen by alignkit sweep (run s-00): highest
    dpo:
      beta: 0.1
      learning_rate: 5.0e-05
    """
    nested = parse_overrides(list(point.overrides))

    def typed(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: typed(v) for k, v in value.items()}
        loaded = yaml.safe_load(value)
        # YAML 1.1 (PyYAML) reads 1e-4 as a string; a learning rate written that way must stay a number.
        return float(loaded) if isinstance(loaded, str) and SCIENTIFIC.fullmatch(loaded) else loaded

    return f"# chosen by alignkit sweep (run {point.run_id}): {rule}\n" + yaml.safe_dump(typed(nested),
                                                                                        sort_keys=False)


def main(args) -> int:
    """``alignkit sweep`` (see the module docstring); ``args`` from :func:`alignkit.cli.build_parser`."""
    if bool(args.grid) == bool(args.suite):
        raise ConfigError("alignkit sweep: give either --grid key=v1,v2 (repeatable) or --suite NAME "
                          f"(shipped: {', '.join(available_suites())})")
    suite = load_suite(args.suite) if args.suite else None
    sweep_id = check_run_id(args.sweep_id or (f"{args.preset}-{suite.name}" if suite else f"{args.preset}-sweep"))
    points = suite_points(suite, sweep_id) if suite else grid_points(parse_grid(args.grid), sweep_id)
    selection = None
    overrides = list(args.overrides)
    if args.select:
        if suite:
            raise ConfigError("--select chooses on the dev split; a suite is an experiment on the test split")
        split, _, rest = args.select.partition(":")
        endpoint, _, arm = rest.partition(":")
        if split != "dev" or not endpoint:
            raise ConfigError(f"--select {args.select!r}: expected dev:<endpoint>[:<arm>], e.g. dev:overall")
        selection = (endpoint, arm or "sft_dpo")
        overrides.append("evaluation.split=dev")  # selection never looks at the test items
    experiment = [f"experiment.sweep_id={sweep_id}", f"experiment.suite={suite.name if suite else ''}"]
    points = [Point(p.name, (*p.overrides, *experiment, f"experiment.point={p.name}"), p.run_id) for p in points]
    print(describe_plan(plan(points, args.preset, args.config_file, overrides)), flush=True)
    if args.dry_run:
        return 0
    folder = reports_root() / sweep_id
    from alignkit import terminal

    terminal.quiet_process(folder / "sweep.log", verbose=args.verbose)
    print(f"sweep {sweep_id}: full log in {folder / 'sweep.log'}", flush=True)
    endpoint = selection[0] if selection else (suite.endpoint if suite else "overall")
    rows = []
    for number, point in enumerate(points, start=1):
        print(f"[{number}/{len(points)}] {point.run_id}: {point.name}", flush=True)
        run = run_point(point, args.preset, args.config_file, overrides, args.force)
        rows.append(point_row(point, run, endpoint))
    winner = select(rows, *selection) if selection else None
    write_table(folder, rows, winner, f"Sweep {sweep_id}" + (f" — chosen on dev {endpoint} of {selection[1]}"
                                                               if selection else ""))
    if winner is not None:
        chosen = next(p for p in points if p.name == winner["point"])
        rule = (f"highest dev {endpoint} of {selection[1]} ({winner[f'{selection[1]} {endpoint}']:.4f}); ties to "
                "the smaller dpo.learning_rate, then sft.learning_rate, then the earlier point")
        clean = Point(chosen.name, tuple(o for o in chosen.overrides if not o.startswith("experiment.")),
                      chosen.run_id)
        files.write_text(folder / "selected.yaml", selected_yaml(clean, rule))
        print(f"selected: {chosen.name} -> {folder / 'selected.yaml'}")
    if suite is not None:
        from alignkit.runner import run_compare

        run_compare(sweep_id, [p.run_id for p in points], suite.name)
        print(f"comparison: {folder / 'compare.html'}")
    print(f"table: {folder / 'sweep.html'}")
    return 0
