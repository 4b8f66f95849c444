"""Integration: the whole study on the smoke preset, executed as notebooks with papermill (slow).

One session-scoped run in a temporary ALIGNKIT_HOME; the tests then check what a researcher relies on:
the outputs exist and validate, SFT data is the model's own text, masks are right, the cache works, and
evaluation held one model at a time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alignkit import files, schemas
from alignkit.config import PER_SEED_STAGES, STAGES

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent


def stage_dirs(run_dir: Path, stage: str) -> list[Path]:
    """The folders of a stage's units: one per training seed for stages 02-05."""
    seeded = sorted((run_dir / stage).glob("seed*"))
    return seeded if stage in PER_SEED_STAGES else [run_dir / stage]


def test_every_stage_completes_with_a_manifest(smoke_run):
    run_dir, report_dir, results = smoke_run
    assert [r.stage for r in results] == list(STAGES)
    for stage in STAGES:
        units = stage_dirs(run_dir, stage)
        assert len(units) == (2 if stage in PER_SEED_STAGES else 1), stage  # smoke trains seeds 0 and 1
        for unit in units:
            m = files.read_json(unit / "manifest.json")
            assert m["status"] == "complete", unit
            assert m["versions"]["torch"] and m["code"]["hash"]
            # The stage's kernel chose its own threading (not the parent's variables taken as the user's): its
            # thread count followed the load.
            assert m["cpu_threads"]["ceiling"] >= 1, (unit, m["cpu_threads"])
            for entry in m["outputs"].values():
                assert (run_dir / entry["path"]).exists()
        assert (run_dir / stage / f"{stage}.ipynb").is_file()
        assert (report_dir / f"{stage}.html").is_file()
    assert (run_dir / "run.log").is_file()


def test_executed_notebooks_show_no_stderr_box_and_no_trainer_bars(smoke_run):
    """A headless run's notebooks show log lines and tables, never a red stderr box (library warnings) or the
    trainer's own progress bar and metrics table (the progress lines say the same once)."""
    run_dir, _, _ = smoke_run
    for stage in STAGES:
        notebook = json.loads((run_dir / stage / f"{stage}.ipynb").read_text())
        for index, cell in enumerate(notebook["cells"]):
            for output in cell.get("outputs", []):
                where = f"{stage} cell {index}"
                assert not (output["output_type"] == "stream" and output["name"] == "stderr"), \
                    f"{where}: stderr: {''.join(output['text'])[:300]}"
                html = "".join(output.get("data", {}).get("text/html", []))
                assert "<progress" not in html, f"{where}: a trainer progress bar"


@pytest.mark.parametrize("path, kind", [
    ("01_sft_data/sft.jsonl", "sft"), ("01_sft_data/dev_sft.jsonl", "sft"),
    ("01_sft_data/eval_items.jsonl", "eval-items"), ("01_sft_data/dev_items.jsonl", "eval-items"),
    ("03_negatives/seed0/negatives.jsonl", "negatives"), ("04_preference_pairs/seed1/pairs.jsonl", "pairs"),
    ("04_preference_pairs/seed0/dev_pairs.jsonl", "pairs"), ("06_evaluation/responses.jsonl", "responses")])
def test_outputs_validate(smoke_run, path, kind):
    run_dir, _, _ = smoke_run
    rows, defects = schemas.validate_file(run_dir / path, kind)
    assert defects == [] and rows
    done = subprocess.run([sys.executable, "-m", "alignkit", "validate", str(run_dir / path), "--kind", kind],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_sft_responses_are_the_models_own_text(smoke_run):
    """No placeholders: every kept response occurs in the raw output the base model generated for it."""
    run_dir, _, _ = smoke_run
    rows = files.read_jsonl(run_dir / "01_sft_data" / "sft.jsonl")
    assert len(rows) >= 30
    for row in rows:
        assert row["response"] in row["generation"]["raw_output"]
        assert row["generation"]["prompt"].endswith(f"Q: {row['instruction']}\nA:")
        assert "Instruction:" not in row["generation"]["prompt"]  # few-shot format, not the study template


def test_splits_are_disjoint(smoke_run):
    from alignkit import world

    run_dir, _, _ = smoke_run
    read = lambda name: files.read_jsonl(run_dir / "01_sft_data" / name)  # noqa: E731
    train, test, dev = read("sft.jsonl") + read("fewshot_shots.jsonl"), read("eval_items.jsonl"), read("dev_items.jsonl")
    for first, second in ((train, test), (train, dev), (dev, test)):
        assert world.find_overlaps([r["instruction"] for r in first], [i["instruction"] for i in second]) == []
        assert {r["params"]["key"] for r in first}.isdisjoint({i["params"]["key"] for i in second})


def test_inspect_masks_passes_on_produced_data(smoke_run):
    run_dir, _, _ = smoke_run
    done = subprocess.run([sys.executable, "-m", "alignkit", "inspect-masks", "--model",
                           str(run_dir / "02_sft_training" / "seed0" / "model"), "--data",
                           str(run_dir / "01_sft_data" / "sft.jsonl"), "-n", "1"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[[" in done.stdout


def test_sft_learned_the_end_marker(smoke_run):
    run_dir, _, _ = smoke_run
    for unit in stage_dirs(run_dir, "02_sft_training"):
        rates = files.read_json(unit / "manifest.json")["summary"]["samples"]["end_emission_rate"]
        assert rates["sft"] > rates["base"]


def test_negative_mix_is_applied_and_format_negatives_keep_their_missing_end(smoke_run):
    from alignkit.stages.negatives import allocate

    run_dir, _, _ = smoke_run
    for unit in stage_dirs(run_dir, "03_negatives"):
        summary = files.read_json(unit / "manifest.json")["summary"]
        counts = {t: sum(methods.values()) for t, methods in summary["by_type_method"].items()}
        assert counts == {t: n for t, n in allocate(summary["total"], summary["mix_used"]).items() if n}
    pairs = files.read_jsonl(run_dir / "04_preference_pairs" / "seed0" / "pairs.jsonl")
    end_less = [p for p in pairs if not p["rejected_has_end"]]
    assert end_less and all(p["negative_type"] in ("format", "verbose") for p in end_less)
    assert all("\nEND" not in p["rejected"] and p["chosen"].endswith("\nEND") for p in end_less)
    summary = files.read_json(run_dir / "04_preference_pairs" / "seed0" / "manifest.json")["summary"]
    assert summary["defects"]["format"]["rejected_without_end"] > 0


def test_pairs_meet_the_minimum_and_carry_margins(smoke_run):
    run_dir, _, _ = smoke_run
    pairs = files.read_jsonl(run_dir / "04_preference_pairs" / "seed0" / "pairs.jsonl")
    assert len(pairs) >= 60
    assert all(isinstance(p["margin"], float) and isinstance(p["divergence_token"], int) for p in pairs)


def test_dpo_reference_check_and_diagnostics(smoke_run):
    run_dir, _, _ = smoke_run
    for unit in stage_dirs(run_dir, "05_dpo_training"):
        for name, summary in files.read_json(unit / "manifest.json")["summary"]["runs"].items():
            assert summary["reference_check"]["ok"], (unit, name)
            assert summary["train_by_type"] and summary["dev_eval"], (unit, name)


def test_evaluation_held_one_model_at_a_time_and_pooled_the_seeds(smoke_run):
    run_dir, report_dir, _ = smoke_run
    results = json.loads((report_dir / "results.json").read_text())
    info = files.read_json(run_dir / "06_evaluation" / "run_info.json")
    assert info["memory"]["max_models_resident"] == 1
    assert set(results["models"]) == {"base_fewshot", "base", "sft", "sft_dpo", "dpo_only"}
    assert results["seeds"] == [0, 1]
    for arm in ("sft", "sft_dpo", "dpo_only"):
        for endpoint in ("format", "content", "overall"):
            assert set(results["models"][arm]["endpoints"][endpoint]["per_seed"]) == {"0", "1"}
    primaries = [r for r in results["contrasts"] if r["role"] == "primary"]
    assert len(primaries) == 4 and all(r["p_adjusted"] is not None and "mde" in r for r in primaries)
    html = (report_dir / "report.html").read_text()
    assert 'src="data:image/png;base64,' in html and "Pre-registered design" in html


def test_rerun_is_served_from_the_cache(smoke_run):
    from alignkit.runner import run_notebooks

    run_dir, _, _ = smoke_run
    before = {str(unit): files.read_json(unit / "manifest.json")["finished"]
              for stage in STAGES for unit in stage_dirs(run_dir, stage)}
    run_notebooks("smoke", run_id="smoke", progress=False)
    after = {str(unit): files.read_json(unit / "manifest.json")["finished"]
             for stage in STAGES for unit in stage_dirs(run_dir, stage)}
    assert before == after


def _fresh_home_with_models(smoke_env: Path, name: str) -> Path:
    """A new ALIGNKIT_HOME that reuses the session's built base models (hard links: the build is cached)."""
    home = smoke_env / name
    shutil.copytree(smoke_env / "data" / "models", home / "models", copy_function=os.link)
    return home


def test_two_fresh_runs_write_byte_identical_results_and_data(smoke_run, smoke_env):
    """The same study again in a fresh home (same run id, in-process stages instead of notebooks): results.json
    and every data file of stages 01, 03 and 04 are the same bytes."""
    from repro_digest import (
        digest,  # tests/ is on sys.path (rootdir-relative test modules)
    )

    run_dir, _, _ = smoke_run
    home = _fresh_home_with_models(smoke_env, "again")
    env = {**os.environ, "ALIGNKIT_HOME": str(home), "ALIGNKIT_REPORTS": str(home / "reports")}
    env.pop("OMP_NUM_THREADS", None)  # the same threading policy as the notebooks (alignkit's own choice)
    subprocess.run([sys.executable, "-m", "alignkit", "stage", "--preset", "smoke", "--run-id", "smoke"],
                   check=True, capture_output=True, env=env)
    first, second = digest(run_dir), digest(home / "runs" / "smoke")
    assert len(first) >= 12 and "06_evaluation/results.json" in first
    if first != second:
        # Bit-identity is promised where the thread count stayed put: a count that followed another job's load
        # (a shared CI runner) changes training's last bits, and the stage says so in its manifest.
        changed = [str(path.parent.relative_to(root)) for root in (run_dir, home / "runs" / "smoke")
                   for path in sorted(root.glob("**/manifest.json"))
                   if (files.read_json(path).get("cpu_threads") or {}).get("changes")]
        if changed:
            pytest.skip(f"other processes took the CPUs: the thread count changed in {changed}")
    assert first == second


def test_a_second_writer_is_refused_at_once_and_the_first_completes(smoke_run, smoke_env):
    run_dir, report_dir, _ = smoke_run
    env = {**os.environ}
    first = subprocess.Popen([sys.executable, "-m", "alignkit", "run", "--preset", "smoke", "--run-id", "smoke",
                              "--stages", "06", "--force", "-q"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        holder = run_dir / ".lock.json"
        deadline = time.monotonic() + 120
        while not holder.is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert holder.is_file(), "the first run never took the lock"
        started = time.monotonic()
        second = subprocess.run([sys.executable, "-m", "alignkit", "run", "--preset", "smoke", "--run-id", "smoke"],
                                env=env, capture_output=True, text=True, timeout=60)
        assert time.monotonic() - started < 5 + 10  # refused at once (the rest is interpreter start-up)
        assert second.returncode != 0
        assert str(first.pid) in second.stderr and "Traceback" not in second.stderr
    finally:
        out, err = first.communicate(timeout=900)
    assert first.returncode == 0, err
    assert (report_dir / "report.html").is_file() and json.loads((report_dir / "results.json").read_text())


def test_edited_scorer_reruns_the_stages_that_use_it_and_not_training(smoke_run, smoke_env, tmp_path):
    """A comment added to the scorer in a copy of the code: stages 01, 03 and 06 (which score) run again and write
    the same data, so 02, 04 and 05 stay cached; the same code again re-runs nothing."""
    run_dir, _, _ = smoke_run
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO / "alignkit", checkout / "alignkit", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml",):
        shutil.copy(REPO / name, checkout / name)
    with (checkout / "alignkit" / "eval" / "scoring.py").open("a") as handle:
        handle.write("\n# an edit that changes no behaviour\n")
    home = smoke_env / "edited"
    shutil.copytree(smoke_env / "data", home, copy_function=os.link)
    env = {**os.environ, "ALIGNKIT_HOME": str(home), "ALIGNKIT_REPORTS": str(home / "reports"),
           "PYTHONPATH": str(checkout)}
    env.pop("OMP_NUM_THREADS", None)
    copied = home / "runs" / "smoke"

    def finished() -> dict[str, str]:
        return {str(unit.relative_to(copied)): files.read_json(unit / "manifest.json")["finished"]
                for stage in STAGES for unit in stage_dirs(copied, stage)}

    before = finished()
    for _ in range(2):
        subprocess.run([sys.executable, "-m", "alignkit", "stage", "--preset", "smoke", "--run-id", "smoke"],
                       check=True, capture_output=True, env=env, cwd=checkout)
        if _ == 0:
            after = finished()
    rerun = {unit for unit in before if before[unit] != after[unit]}
    assert rerun == {"01_sft_data", "03_negatives/seed0", "03_negatives/seed1", "06_evaluation"}
    assert finished() == after  # unchanged code: nothing re-runs
