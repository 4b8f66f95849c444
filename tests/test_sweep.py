"""``alignkit sweep``: grids, shipped suites, dev selection, the cost printed up front, and (slow) the smoke
``mix`` suite end to end: compare.html with its table and forest plot, suite/point in every manifest, and a
re-run that re-runs nothing."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from alignkit import files, sweep
from alignkit.config import EVAL_MODELS, PER_SEED_STAGES, STAGES, ConfigError, resolve
from alignkit.runs import Run, stage_code, stage_config

# --------------------------------------------------------------------------------------------------
# Grids and suites
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("item, problem", [
    ("dpo.beta", "expected key=value1,value2"),
    ("dpo.beta=", "expected key=value1,value2"),
    ("=0.1", "expected key=value1,value2"),
    ("dpo.beta=0.1,,0.3", "an empty value"),
])
def test_a_malformed_grid_item_names_itself(item, problem):
    with pytest.raises(ConfigError, match=problem) as error:
        sweep.parse_grid([item])
    assert repr(item) in str(error.value)


def test_grid_points_are_the_product_in_order():
    points = sweep.grid_points(sweep.parse_grid(["dpo.learning_rate=1e-4,5e-5", "dpo.beta=0.1,0.3"]), "g")
    assert [p.run_id for p in points] == ["g-00", "g-01", "g-02", "g-03"]
    assert [p.overrides for p in points] == [
        ("dpo.learning_rate=1e-4", "dpo.beta=0.1"), ("dpo.learning_rate=1e-4", "dpo.beta=0.3"),
        ("dpo.learning_rate=5e-5", "dpo.beta=0.1"), ("dpo.learning_rate=5e-5", "dpo.beta=0.3")]
    assert points[1].name == "dpo.learning_rate=1e-4, dpo.beta=0.3"


def test_the_issue_suites_are_shipped():
    assert {"masking", "mix", "sft_size", "dpo_loss", "leave_one_type_out"} <= set(sweep.available_suites())


@pytest.mark.parametrize("name", sweep.available_suites())
def test_every_shipped_suite_resolves_to_distinct_valid_configs(name):
    """Each point's overrides are valid config keys on every preset's schema, no two points resolve to the
    same study, and what the suite compares exists in results.json."""
    suite = sweep.load_suite(name)
    assert suite.reference in suite.points and len(suite.points) >= 2
    assert suite.arm in EVAL_MODELS and suite.endpoint in ("overall", "format", "content")
    resolved = {point: resolve("smoke", None, list(overrides)).to_dict() for point, overrides in suite.points.items()}
    texts = [files.to_json(cfg) for cfg in resolved.values()]
    assert len(set(texts)) == len(texts), f"suite {name}: two points resolve to the same config"


@pytest.mark.parametrize("name", sweep.available_suites())
def test_every_point_of_a_suite_asks_the_default_study_for_no_more_pairs_than_its_sft_examples_give(name):
    """Stage 03 makes ``negatives.per_example`` negatives per SFT example; a point that shrinks the SFT set must
    shrink ``pairs.min_pairs`` with it or stage 03 runs out of negatives (sft_size n50 did, before it scaled)."""
    for point, overrides in sweep.load_suite(name).points.items():
        cfg = resolve("tiny", None, list(overrides))
        assert cfg.pairs.min_pairs <= cfg.sft_data.n_examples * cfg.negatives.per_example, (name, point)


def test_an_unknown_suite_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="shipped suites: .*masking.*mix"):
        sweep.load_suite("nope")


def test_suite_values_come_back_as_override_text():
    assert sweep._text(["format", "verbose"]) == "[format, verbose]"
    assert sweep._text(0.1) == "0.1" and sweep._text("seed") == "seed"
    points = sweep.suite_points(sweep.load_suite("mix"), "s")
    assert [(p.name, p.run_id) for p in points] == [("seed", "s-seed"), ("uniform", "s-uniform"),
                                                    ("observed", "s-observed")]


# --------------------------------------------------------------------------------------------------
# Selection on dev
# --------------------------------------------------------------------------------------------------


def test_selection_takes_the_highest_rate_then_the_smaller_learning_rates_then_the_earlier_point():
    rows = [{"point": "a", "sft_dpo overall": 0.40, "dpo.learning_rate": "5e-5"},
            {"point": "b", "sft_dpo overall": 0.41, "dpo.learning_rate": "1e-4"},
            {"point": "c", "sft_dpo overall": 0.41, "dpo.learning_rate": "5e-5", "sft.learning_rate": "2e-4"},
            {"point": "d", "sft_dpo overall": 0.41, "dpo.learning_rate": "5e-5", "sft.learning_rate": "1e-4"},
            {"point": "e", "sft_dpo overall": 0.41, "dpo.learning_rate": "5e-5", "sft.learning_rate": "1e-4"}]
    assert sweep.select(rows, "overall", "sft_dpo")["point"] == "d"
    assert sweep.select(rows[:2], "overall", "sft_dpo")["point"] == "b"


def test_selection_refuses_a_point_without_the_rate():
    with pytest.raises(ValueError, match=r"points \['b'\] have no 'sft_dpo overall'"):
        sweep.select([{"point": "a", "sft_dpo overall": 0.4}, {"point": "b"}], "overall", "sft_dpo")


def test_selected_yaml_is_a_config_the_loader_accepts(tmp_path):
    point = sweep.Point("x", ("dpo.beta=0.3", "dpo.learning_rate=1e-4", "negatives.types=[format, verbose]"), "s-03")
    text = sweep.selected_yaml(point, "highest dev overall")
    assert text.startswith("# chosen by alignkit sweep (run s-03): highest dev overall\n")
    assert yaml.safe_load(text) == {"dpo": {"beta": 0.3, "learning_rate": 1e-4},
                                    "negatives": {"types": ["format", "verbose"]}}
    (tmp_path / "selected.yaml").write_text(text)
    cfg = resolve("smoke", str(tmp_path / "selected.yaml"), [])
    assert cfg.dpo.beta == 0.3 and cfg.dpo.learning_rate == 1e-4 and list(cfg.negatives.types) == ["format", "verbose"]


def test_the_table_marks_the_winner(tmp_path):
    rows = [{"point": "a", "dpo.beta": "0.1", "sft_dpo overall": 0.25},
            {"point": "b", "dpo.beta": "0.3", "sft_dpo overall": 0.5}]
    page = sweep.write_table(tmp_path, rows, rows[1], "Sweep t").read_text()
    with (tmp_path / "sweep.csv").open() as handle:
        assert list(csv.DictReader(handle)) == [{"point": "a", "dpo.beta": "0.1", "sft_dpo overall": "0.25"},
                                                {"point": "b", "dpo.beta": "0.3", "sft_dpo overall": "0.5"}]
    assert "Sweep t" in page and page.count("<tr") == 3


# --------------------------------------------------------------------------------------------------
# Cost up front
# --------------------------------------------------------------------------------------------------


def _write_run(root: Path, run_id: str, overrides: list[str], *, seconds: float = 10.0,
               incomplete: tuple[str, int] | None = None) -> None:
    """Manifests as a finished run of stages 01-05 on smoke would leave them (config sections, code hash,
    seconds), without the data: what the plan reads. ``incomplete`` marks one (stage, seed) unit as running."""
    run = Run(run_id, resolve("smoke", None, overrides), root)
    for stage in STAGES[:-1]:
        for view in (run.seed_views() if stage in PER_SEED_STAGES else [run]):
            status = "running" if incomplete == (stage, view.training_seed) else "complete"
            files.write_json(view.stage_dir(stage) / "manifest.json", {
                "stage": stage, "preset": "smoke", "status": status, "config": stage_config(view, stage),
                "code": stage_code(stage), "seconds": seconds})


def _plan(names: list[str], suite: str = "mix") -> dict:
    chosen = [p for p in sweep.suite_points(sweep.load_suite(suite), "s") if p.name in names]
    return sweep.plan(chosen, "smoke", None, [])


def test_the_plan_on_an_empty_home_counts_what_the_points_share(tmp_path, monkeypatch):
    """smoke trains seeds 0 and 1: a point is 01 + (02..05) x 2 + 06 = 10 units. The mix changes stage 03 on,
    so the second point shares 01 and both seeds' 02 with the first."""
    monkeypatch.setenv("ALIGNKIT_HOME", str(tmp_path))
    summary = _plan(["seed", "uniform"])
    assert summary["units"] == {"total": 20, "cached": 0, "held": 0, "shared": 3, "to_run": 17}
    assert summary["estimate_seconds"] == 0 and summary["no_timing_for"] == list(STAGES)


def test_the_plan_counts_units_another_run_holds_and_prices_only_the_rest(tmp_path, monkeypatch):
    """A finished default run holds all of the ``seed`` point but its evaluation (9 units) and, for ``uniform``,
    01 and both seeds' 02 (3 units); the 8 units left are priced at the 10 s recorded per stage, 06 has no
    timing yet: 6 x 10 s = 60 s."""
    monkeypatch.setenv("ALIGNKIT_HOME", str(tmp_path))
    _write_run(tmp_path, "earlier", [])
    summary = _plan(["seed", "uniform"])
    assert summary["units"] == {"total": 20, "cached": 0, "held": 12, "shared": 0, "to_run": 8}
    assert summary["estimate_seconds"] == 60 and summary["no_timing_for"] == ["06_evaluation"]
    assert "12 held by another run" in sweep.describe_plan(summary)


def test_a_unit_left_running_holds_nothing_downstream(tmp_path, monkeypatch):
    """Seed 0's stage 03 never completed in the earlier run: 03, 04 and 05 of seed 0 are to run; seed 1 is held."""
    monkeypatch.setenv("ALIGNKIT_HOME", str(tmp_path))
    _write_run(tmp_path, "earlier", [], incomplete=("03_negatives", 0))
    assert _plan(["seed"])["units"] == {"total": 10, "cached": 0, "held": 6, "shared": 0, "to_run": 4}


def test_a_run_with_other_code_holds_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNKIT_HOME", str(tmp_path))
    _write_run(tmp_path, "earlier", [])
    for path in (tmp_path / "runs" / "earlier").glob("**/manifest.json"):
        files.write_json(path, {**files.read_json(path), "code": {"hash": "edited"}})
    assert _plan(["seed"])["units"]["held"] == 0


def test_dry_run_prints_the_cost_and_creates_no_run(tmp_path, monkeypatch, capsys):
    from alignkit import cli

    monkeypatch.setenv("ALIGNKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ALIGNKIT_REPORTS", str(tmp_path / "reports"))
    assert cli.main(["sweep", "--preset", "smoke", "--suite", "sft_size", "--dry-run"]) == 0
    out = capsys.readouterr().out
    # sft_size changes stage 01, so its three points share nothing
    assert "3 runs, 30 stage units: 0 cached in their own run, 0 held by another run, 0 shared between points, " \
           "30 to run" in out
    assert not (tmp_path / "home" / "runs").exists() and not (tmp_path / "reports").exists()


def test_a_suite_cannot_select_on_dev(tmp_path, monkeypatch, capsys):
    from alignkit import cli

    monkeypatch.setenv("ALIGNKIT_HOME", str(tmp_path))
    assert cli.main(["sweep", "--preset", "smoke", "--suite", "mix", "--select", "dev:overall", "--dry-run"]) == 2
    assert "a suite is an experiment on the test split" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# The smoke mix suite, end to end (slow)
# --------------------------------------------------------------------------------------------------


def _units(run_dir: Path) -> dict[str, dict]:
    return {str(path.parent.relative_to(run_dir)): files.read_json(path)
            for stage in STAGES for path in sorted((run_dir / stage).glob("**/manifest.json"))}


@pytest.mark.slow
def test_smoke_mix_suite_compares_its_points_and_reruns_nothing(smoke_run, smoke_env):
    """Beside the session's smoke run (which holds the ``seed`` point's stages 01-05): the suite prints its cost,
    runs three points, renders compare.html with the table and the forest plot, records suite and point in every
    manifest, takes from the cache exactly the units it said it would, and a second call re-runs nothing."""
    env = {**os.environ}
    env.pop("OMP_NUM_THREADS", None)  # alignkit's own thread policy, as a user's shell would have it
    command = [sys.executable, "-m", "alignkit", "sweep", "--preset", "smoke", "--suite", "mix"]
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    assert first.returncode == 0, first.stderr[-3000:]
    plan_line = next(line for line in first.stdout.splitlines() if "stage units" in line)
    # seed: 01-05 held by the smoke run (9 of 10); uniform and observed: 01 and both seeds' 02 (3 each)
    assert plan_line == ("3 runs, 30 stage units: 0 cached in their own run, 15 held by another run, "
                         "0 shared between points, 15 to run"), plan_line

    runs = smoke_env / "data" / "runs"
    points = {"seed": runs / "smoke-mix-seed", "uniform": runs / "smoke-mix-uniform",
              "observed": runs / "smoke-mix-observed"}
    manifests = {name: _units(run_dir) for name, run_dir in points.items()}
    for name, units in manifests.items():
        assert len(units) == 10, name
        for unit, manifest in units.items():
            assert manifest["status"] == "complete", (name, unit)
            assert manifest["experiment"] == {"sweep_id": "smoke-mix", "suite": "mix", "point": name}, (name, unit)
    adopted = sum("adopted_from" in m for units in manifests.values() for m in units.values())
    assert adopted == 15  # what the plan said another run held
    pairs_by_type = {name: {kind: block["n"] for kind, block in files.read_json(
        points[name] / "04_preference_pairs" / "seed0" / "manifest.json")["summary"]["defects"].items()}
        for name in points}
    assert pairs_by_type["uniform"] != pairs_by_type["seed"] and pairs_by_type["observed"] != pairs_by_type["seed"]

    folder = smoke_env / "reports" / "smoke-mix"
    with (folder / "sweep.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["point"] for r in rows] == ["seed", "uniform", "observed"] and {r["split"] for r in rows} == {"test"}
    page = (folder / "compare.html").read_text()
    assert "Every point: composites per trained arm" in page and "Each point against seed" in page
    assert "uniform vs seed" in page and "observed vs seed" in page
    assert page.count('src="data:image/png;base64,') >= 1  # the forest plot, inside the page
    assert "Holm-adjusted" in page and "minimum detectable difference" in page

    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "30 cached in their own run, 0 held by another run, 0 shared between points, 0 to run" in second.stdout
    for name, run_dir in points.items():
        assert {u: m["finished"] for u, m in _units(run_dir).items()} == \
            {u: m["finished"] for u, m in manifests[name].items()}, name


@pytest.mark.slow
def test_smoke_dpo_grid_chooses_on_dev_and_writes_a_loadable_selection(smoke_run, smoke_env):
    """A 2-point DPO grid beside the session's smoke run (dpo.beta 0.1 is smoke's own setting): stages 01-04 come
    from the smoke run, every point is evaluated on the dev items only, and the winner's overrides are written to
    selected.yaml, which loads back as a config with the chosen beta."""
    env = {**os.environ}
    env.pop("OMP_NUM_THREADS", None)
    command = [sys.executable, "-m", "alignkit", "sweep", "--preset", "smoke", "--grid", "dpo.beta=0.1,0.3",
               "--select", "dev:overall", "--sweep-id", "smoke-dpo"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    # beta 0.1: 01-05 held (1 + 4 x 2); beta 0.3: 01-04 held (1 + 3 x 2); to run: 05 x 2 and both evaluations
    assert "2 runs, 20 stage units: 0 cached in their own run, 16 held by another run, 0 shared between points, " \
           "4 to run" in result.stdout, result.stdout

    n_dev = resolve("smoke", None, []).world.n_dev
    folder = smoke_env / "reports" / "smoke-dpo"
    with (folder / "sweep.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["dpo.beta"] for r in rows] == ["0.1", "0.3"] and {r["split"] for r in rows} == {"dev"}
    for run_id in ("smoke-dpo-00", "smoke-dpo-01"):
        results = files.read_json(smoke_env / "reports" / run_id / "results.json")
        assert results["split"] == "dev" and results["n_items"] == n_dev, run_id
        pairs = smoke_env / "data" / "runs" / run_id / "04_preference_pairs" / "seed0" / "manifest.json"
        # taken from another run of the same config (the smoke run, or a fault-test copy of it), not recomputed
        assert files.read_json(pairs)["adopted_from"]["run_id"] not in ("smoke-dpo-00", "smoke-dpo-01")

    rates = [float(r["sft_dpo overall"]) for r in rows]
    winner = rows[0] if rates[0] >= rates[1] else rows[1]  # ties go to the earlier point (same learning rate)
    text = (folder / "selected.yaml").read_text()
    assert text.startswith("# chosen by alignkit sweep (run ") and "highest dev overall of sft_dpo" in text
    assert f"selected: {winner['point']} -> {folder / 'selected.yaml'}" in result.stdout
    assert resolve("smoke", str(folder / "selected.yaml"), []).dpo.beta == float(winner["dpo.beta"])
