"""The GPU check (``alignkit selftest --gpu``) as far as a CPU can test it: arguments, the shrunk config, the
plan it measures against, how a stage is judged, and a clear refusal without CUDA."""

from __future__ import annotations

import math

import pytest

from alignkit import cli, plan, selftest
from alignkit.config import STAGES

MIB = selftest.MIB


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ALIGNKIT_REPORTS", str(tmp_path / "reports"))
    return tmp_path / "home"


def test_the_preset_is_shrunk_to_a_few_steps_in_bf16_qlora():
    cfg = selftest.gpu_config()
    assert (cfg.preset, cfg.model.base, cfg.model.dtype, cfg.model.device) == \
        ("qwen2.5-0.5b", "Qwen/Qwen2.5-0.5B", "bfloat16", "cuda")
    assert (cfg.sft.method, cfg.sft.merge_adapter, cfg.dpo.method) == ("qlora", False, "qlora")
    assert cfg.sft.gradient_checkpointing and cfg.dpo.gradient_checkpointing
    assert (cfg.sft_data.n_examples, cfg.world.n_eval) == (14, 14)
    # A few optimizer steps: 14 examples in batches of 4 for one epoch; DPO on >= 14 pairs, batches of 4.
    assert math.ceil(cfg.sft_data.n_examples / cfg.sft.batch_size) * cfg.sft.epochs == 4
    assert (cfg.pairs.min_pairs, cfg.dpo.batch_size, cfg.dpo.epochs) == (14, 4, 1)
    assert selftest.gpu_config(overrides=["sft.batch_size=2"]).sft.batch_size == 2  # -p wins over the shrink


def test_the_shrunk_config_is_planned_for_every_stage():
    result = plan.plan(selftest.gpu_config(), 24)
    assert list(result.peaks) == list(STAGES) and result.fits
    train = result.peaks["05_dpo_training"]
    assert train.step == "train qlora, 8 x 384 tokens, gradient checkpointing"  # 4 pairs, chosen + rejected


def test_without_a_gpu_it_refuses_with_the_reason(capsys, _home):
    assert cli.main(["selftest", "--gpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("alignkit selftest --gpu: cannot start: no CUDA GPU is visible (torch ")
    assert "torch.cuda.is_available() is False" in err and "`make test`" in err
    assert not (_home / "runs" / selftest.RUN_ID).exists()  # nothing was started


def test_without_the_gpu_flag_there_is_nothing_to_do(capsys):
    assert cli.main(["selftest", ]) == 2
    assert "alignkit selftest --gpu" in capsys.readouterr().err


def test_a_bad_override_is_a_config_error(capsys):
    assert cli.main(["selftest", "--gpu", "-p", "sft.method=adam"]) == 2
    assert "config error: sft.method: expected one of 'full', 'lora', 'qlora'; got 'adam'" in capsys.readouterr().err


def test_offline_without_cached_weights_says_how_to_download(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    reason = selftest.weights_missing(selftest.gpu_config(overrides=["model.base=someorg/not-cached-model"]))
    assert "model.base someorg/not-cached-model is not in the Hugging Face cache" in reason
    assert "snapshot_download as d; d('someorg/not-cached-model')" in reason
    folder = tmp_path / "local"
    folder.mkdir()
    assert selftest.weights_missing(selftest.gpu_config(overrides=[f"model.base={folder}"])) is None
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # online: from_pretrained downloads it
    assert selftest.weights_missing(selftest.gpu_config(overrides=["model.base=someorg/not-cached-model"])) is None


def _result(**changes):
    values = dict(stage="05_dpo_training", seconds=12.5, baseline_bytes=10 * MIB, peak_bytes=900 * MIB,
                  after_bytes=12 * MIB, planned_bytes=1000 * MIB, planned_step="train qlora")
    values.update(changes)
    return selftest.StageResult(**values)


def test_a_stage_passes_within_its_plan_and_after_giving_memory_back():
    ok = _result()
    assert ok.problems() == [] and ok.row().endswith("ok")
    assert ok.row().split() == ["05_dpo_training", "12.5", "900", "1000", "0.90", "2", "ok"]


def test_a_stage_over_its_plan_or_holding_memory_is_a_problem():
    over = _result(peak_bytes=1100 * MIB)
    assert over.problems() == ["05_dpo_training: peak 1100 MiB is above the plan of 1000 MiB (train qlora); "
                               "the plan underestimates this stage"]
    leaked = _result(after_bytes=(10 + 65) * MIB)
    assert leaked.problems() == ["05_dpo_training: 65 MiB still allocated after the stage released its models "
                                 "(tolerance 64 MiB): something keeps a model or its tensors alive"]
    assert _result(after_bytes=(10 + 64) * MIB).problems() == []
    failed = _result(error="RuntimeError: too few valid negatives")
    assert failed.problems() == ["05_dpo_training: failed: RuntimeError: too few valid negatives"]
    assert failed.row().endswith("FAILED") and over.row().endswith("PROBLEM")


def test_the_cli_has_the_selftest_subcommand(capsys):
    parser = cli.build_parser()
    args = parser.parse_args(["selftest", "--gpu", "--preset", "qwen2.5-7b-qlora", "--run-id", "pod-check"])
    assert (args.gpu, args.preset, args.run_id) == (True, "qwen2.5-7b-qlora", "pod-check")
    assert args.func(args) == 2 and "no CUDA GPU is visible" in capsys.readouterr().err
