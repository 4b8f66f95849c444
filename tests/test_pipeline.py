"""Integration: the whole study on the smoke preset, executed as notebooks with papermill (slow).

One session-scoped run in a temporary ALIGNKIT_HOME; the tests then check what a researcher relies on:
the outputs exist and validate, SFT data is the model's own text, masks are right, the cache works, and
evaluation held one model at a time.
"""

from __future__ import annotations

import json
import os

import subprocess
import sys
from pathlib import Path

import pytest

from alignkit import files, records
from alignkit.config import STAGES

pytestmark = pytest.mark.slow


def manifest(run_dir: Path, stage: str) -> dict:
    return files.read_json(run_dir / stage / "manifest.json")


def test_every_stage_completes_with_a_manifest(smoke_run):
    run_dir, report_dir, results = smoke_run
    assert [r.stage for r in results] == list(STAGES)
    for stage in STAGES:
        m = manifest(run_dir, stage)
        assert m["status"] == "complete", stage
        assert m["versions"]["torch"] and m["config"]["seed"] == {"seed": 0}
        for entry in m["outputs"].values():
            assert (run_dir / entry["path"]).exists()
        assert (run_dir / stage / f"{stage}.ipynb").is_file()
        assert (report_dir / f"{stage}.html").is_file()


@pytest.mark.parametrize("stage, output, kind", [
    ("01_sft_data", "sft", "sft"), ("01_sft_data", "eval_items", "eval-items"),
    ("03_negatives", "negatives", "negatives"), ("04_preference_pairs", "pairs", "pairs"),
    ("06_evaluation", "responses", "responses")])
def test_outputs_validate(smoke_run, stage, output, kind):
    run_dir, _, _ = smoke_run
    path = run_dir / manifest(run_dir, stage)["outputs"][output]["path"]
    rows, defects = records.validate_file(path, kind)
    assert defects == [] and rows
    # The CLI agrees.
    done = subprocess.run([sys.executable, "-m", "alignkit", "validate", str(path), "--kind", kind],
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


def test_eval_items_are_disjoint_from_sft(smoke_run):
    from alignkit import world

    run_dir, _, _ = smoke_run
    sft_rows = files.read_jsonl(run_dir / "01_sft_data" / "sft.jsonl")
    items = files.read_jsonl(run_dir / "01_sft_data" / "eval_items.jsonl")
    assert world.find_overlaps([r["instruction"] for r in sft_rows], [i["instruction"] for i in items]) == []
    assert {r["params"]["key"] for r in sft_rows}.isdisjoint({i["params"]["key"] for i in items})


def test_inspect_masks_passes_on_produced_data(smoke_run):
    run_dir, _, _ = smoke_run
    done = subprocess.run([sys.executable, "-m", "alignkit", "inspect-masks", "--model",
                           str(run_dir / "02_sft_training" / "model"), "--data",
                           str(run_dir / "01_sft_data" / "sft.jsonl"), "-n", "1"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[[" in done.stdout


def test_sft_learned_the_end_marker(smoke_run):
    run_dir, _, _ = smoke_run
    rates = manifest(run_dir, "02_sft_training")["summary"]["samples"]["end_emission_rate"]
    assert rates["sft"] > rates["base"]


def test_negative_mix_is_applied(smoke_run):
    from alignkit.negatives import allocate

    run_dir, _, _ = smoke_run
    summary = manifest(run_dir, "03_negatives")["summary"]
    counts = {t: sum(methods.values()) for t, methods in summary["by_type_method"].items()}
    assert counts == {t: n for t, n in allocate(summary["total"], summary["mix_declared"]).items() if n}


def test_pairs_meet_the_minimum_and_carry_margins(smoke_run):
    run_dir, _, _ = smoke_run
    pairs = files.read_jsonl(run_dir / "04_preference_pairs" / "pairs.jsonl")
    assert len(pairs) >= 60
    assert all(isinstance(p["margin"], float) for p in pairs)


def test_evaluation_held_one_model_at_a_time(smoke_run):
    run_dir, report_dir, _ = smoke_run
    results = json.loads((report_dir / "results.json").read_text())
    assert results["memory"]["max_models_resident"] == 1
    assert set(results["models"]) == {"base", "base_raw", "sft", "sft_dpo", "dpo_only"}
    assert (report_dir / "report.html").is_file()


def test_rerun_is_served_from_the_cache(smoke_run):
    from alignkit.runner import run_notebooks

    run_dir, _, _ = smoke_run
    before = {stage: manifest(run_dir, stage)["finished"] for stage in STAGES}
    run_notebooks("smoke", run_id="smoke", progress=False)
    after = {stage: manifest(run_dir, stage)["finished"] for stage in STAGES}
    assert before == after


def test_same_seed_gives_byte_identical_data(smoke_run):
    """A second fresh run of stages 01-04 (same preset and seed, a new run folder) writes the same bytes."""
    run_dir, _, _ = smoke_run
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # same threads as the notebooks
    subprocess.run([sys.executable, "-m", "alignkit", "stage", "--preset", "smoke", "--run-id", "determinism",
                    "--stages", "01-04"], check=True, capture_output=True, env=env)
    again = run_dir.parent / "determinism"
    for relative in ("01_sft_data/sft.jsonl", "01_sft_data/eval_items.jsonl", "03_negatives/negatives.jsonl",
                     "04_preference_pairs/pairs.jsonl"):
        assert files.sha256_file(again / relative) == files.sha256_file(run_dir / relative), relative
