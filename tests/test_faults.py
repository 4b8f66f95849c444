"""Faults: ``kill -9`` during SFT, DPO and evaluation generation, then the same command again (slow).

Each test copies the finished earlier stages of the session's smoke run into a fresh run folder, starts the
stage under test as a subprocess, kills it with SIGKILL (no chance to clean up) once it has written something
worth resuming from, checks that nothing looks complete, and runs it again to completion.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alignkit import files

pytestmark = pytest.mark.slow

#: Seconds to wait for a resumable artefact before giving up.
DEADLINE_S = 600


def clone_stages(run_dir: Path, new_id: str, stages: list[str]) -> Path:
    target = run_dir.parent / new_id
    if target.exists():
        shutil.rmtree(target)
    for stage in stages:
        shutil.copytree(run_dir / stage, target / stage, ignore=shutil.ignore_patterns("checkpoints*", "*.ipynb"))
    return target


def stage_command(run_id: str, stage: str, *overrides: str) -> list[str]:
    """``alignkit stage`` on one training seed (seed 0), so a fault test trains one model per run."""
    command = [sys.executable, "-m", "alignkit", "stage", "--preset", "smoke", "--run-id", run_id, "--stages", stage,
               "-p", "seeds=[0]"]
    for override in overrides:
        command += ["-p", override]
    return command


def kill_when(command: list[str], ready, what: str) -> None:
    """Start ``command``; SIGKILL it as soon as ``ready()`` is true. Fails if it ends or times out first."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    started = time.monotonic()
    try:
        while not ready():
            if process.poll() is not None:
                pytest.fail(f"the stage finished (rc {process.returncode}) before {what} appeared")
            if time.monotonic() - started > DEADLINE_S:
                pytest.fail(f"{what} did not appear within {DEADLINE_S} s")
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()


def status(run: Path, stage: str) -> str:
    return files.read_json(run / stage / "manifest.json")["status"]


def test_sft_killed_mid_training_resumes_from_its_checkpoint(smoke_run):
    run_dir, _, _ = smoke_run
    run = clone_stages(run_dir, "fault-sft", ["01_sft_data"])
    overrides = ("sft.save_steps=2", "sft.epochs=12")
    checkpoints = run / "02_sft_training" / "seed0" / "checkpoints"
    kill_when(stage_command("fault-sft", "02", *overrides),
              lambda: any(checkpoints.glob("checkpoint-*/trainer_state.json")), "an SFT checkpoint")
    assert status(run, "02_sft_training/seed0") == "running"  # never complete-looking after a kill
    assert not (run / "02_sft_training" / "seed0" / "model").exists()
    subprocess.run(stage_command("fault-sft", "02", *overrides), check=True, capture_output=True)
    summary = files.read_json(run / "02_sft_training" / "seed0" / "manifest.json")["summary"]
    assert summary["resumed_from"].startswith("checkpoint-")
    assert status(run, "02_sft_training/seed0") == "complete"
    # Retention: at most save_total_limit checkpoints are kept on disk.
    assert len(list(checkpoints.glob("checkpoint-*"))) <= 2


def test_dpo_killed_mid_training_resumes_from_its_checkpoint(smoke_run):
    run_dir, _, _ = smoke_run
    run = clone_stages(run_dir, "fault-dpo", ["01_sft_data", "02_sft_training", "03_negatives",
                                              "04_preference_pairs"])
    overrides = ("dpo.save_steps=1", "dpo.epochs=3")
    checkpoints = run / "05_dpo_training" / "seed0" / "checkpoints_sft_dpo"
    kill_when(stage_command("fault-dpo", "05", *overrides),
              lambda: any(checkpoints.glob("checkpoint-*/trainer_state.json")), "a DPO checkpoint")
    assert status(run, "05_dpo_training/seed0") == "running"
    subprocess.run(stage_command("fault-dpo", "05", *overrides), check=True, capture_output=True)
    summary = files.read_json(run / "05_dpo_training" / "seed0" / "manifest.json")["summary"]
    assert summary["runs"]["sft_dpo"]["resumed_from"].startswith("checkpoint-")
    assert summary["runs"]["dpo_only"]["train_reward_accuracy"] is not None
    assert summary["runs"]["sft_dpo"]["reference_check"]["ok"]


def test_evaluation_killed_mid_generation_keeps_finished_models(smoke_run):
    from alignkit.stages import evaluation

    run_dir, _, _ = smoke_run
    run = clone_stages(run_dir, "fault-eval", ["01_sft_data", "02_sft_training", "03_negatives",
                                               "04_preference_pairs", "05_dpo_training"])
    out = run / "06_evaluation"
    first = evaluation.responses_path(out, "base_fewshot")  # the first arm evaluated
    kill_when(stage_command("fault-eval", "06"), first.exists, "the first model's responses")
    assert status(run, "06_evaluation") == "running"
    written = first.stat().st_mtime_ns
    subprocess.run(stage_command("fault-eval", "06"), check=True, capture_output=True)
    assert status(run, "06_evaluation") == "complete"
    assert first.stat().st_mtime_ns == written  # the finished model was not generated again
