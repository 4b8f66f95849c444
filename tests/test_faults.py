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


#: ``alignkit`` with a disk that is full for one file: renaming ``pairs.jsonl`` into place fails with ENOSPC, as
#: it would on a full volume (tests run as root in CI, where a read-only folder does not stop a write).
FULL_DISK_FOR_PAIRS = """
import errno, os, sys
real_replace = os.replace
def replace(src, dst, *args, **kwargs):
    if os.path.basename(str(dst)) == "pairs.jsonl":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
    return real_replace(src, dst, *args, **kwargs)
os.replace = replace
from alignkit.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_full_disk_stops_the_stage_with_one_line_and_the_same_command_completes_later(smoke_run):
    """Stage 04 in a real process whose disk fills when it writes its pairs: it exits 1 with one line naming the
    file, leaves no complete manifest and no pairs file; the same command, with space back, completes."""
    run_dir, _, _ = smoke_run
    run = clone_stages(run_dir, "fault-disk", ["01_sft_data", "02_sft_training", "03_negatives"])
    command = [*stage_command("fault-disk", "04"), "--force"]  # --force: compute, do not take the smoke run's pairs
    full = subprocess.run([sys.executable, "-c", FULL_DISK_FOR_PAIRS, *command[3:]], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    unit = run / "04_preference_pairs" / "seed0"
    assert full.returncode == 1, full.stderr[-2000:]
    lines = [line for line in full.stderr.splitlines() if line.startswith("alignkit: ")]
    assert len(lines) == 1 and lines[0].startswith(f"alignkit: cannot write {unit / 'pairs.jsonl'}: no space left on "
                                                    "device; free space"), full.stderr[-2000:]
    assert "Traceback" not in full.stderr
    assert status(run, "04_preference_pairs/seed0") == "failed"
    assert not (unit / "pairs.jsonl").exists() and not list(unit.glob(".pairs.jsonl*"))

    subprocess.run(command, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    manifest = files.read_json(unit / "manifest.json")
    assert manifest["status"] == "complete" and manifest["outputs"]["pairs"]["rows"] >= 60
    assert len(files.read_jsonl(unit / "pairs.jsonl")) == manifest["outputs"]["pairs"]["rows"]
