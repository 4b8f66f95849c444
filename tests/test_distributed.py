"""Multi-process training for real: ``torchrun --nproc_per_node 2`` (gloo on the CPU) on the smoke preset (slow)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import yaml

from alignkit import files

pytestmark = pytest.mark.slow


def test_sft_under_torchrun_trains_on_both_ranks_and_saves_rank0s_weights(smoke_run):
    from alignkit.config import ModelSettings
    from alignkit.modeling import load_model
    from alignkit.training import weights_sha256

    run_dir, _, _ = smoke_run
    target = run_dir.parent / "ddp"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(run_dir / "01_sft_data", target / "01_sft_data", ignore=shutil.ignore_patterns("*.ipynb"))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517"]
    done = subprocess.run([*torchrun, "-m", "alignkit", "stage", "--preset", "smoke", "--run-id", "ddp",
                           "--stages", "02", "-p", "seeds=[0]"], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    stage = target / "02_sft_training" / "seed0"
    ranks = [files.read_json(stage / f"sft_rank{r}.json") for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["global_step"] == ranks[1]["global_step"] > 0  # both ranks stepped together
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]  # DDP kept the replicas identical
    manifest = files.read_json(stage / "manifest.json")
    assert manifest["status"] == "complete"
    saved = load_model(stage / "model", ModelSettings(base="saved", device="cpu"))
    assert weights_sha256(saved) == ranks[0]["weights_sha256"]  # the model on disk is what rank 0 trained


def test_non_training_stages_refuse_to_run_distributed(smoke_env, monkeypatch):
    from alignkit import runs
    from alignkit.stages import registry as stages

    monkeypatch.setenv("WORLD_SIZE", "2")
    run = runs.open_run("smoke", run_id="refuse")
    with pytest.raises(RuntimeError, match="runs in one process"):
        stages.run_stage(run, "01")


@pytest.mark.parametrize("name", ["ddp", "deepspeed_zero3", "fsdp"])
def test_accelerate_configs_are_shipped(name):
    from importlib import resources

    config = yaml.safe_load((resources.files("alignkit") / "accelerate" / f"{name}.yaml").read_text())
    assert config["distributed_type"] in {"MULTI_GPU", "DEEPSPEED", "FSDP"}
    assert config["mixed_precision"] == "bf16"
