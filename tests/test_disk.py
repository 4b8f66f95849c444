"""Tests for alignkit.disk: free space, model sizes, training disk estimates (hand-worked) and the refusal."""

from __future__ import annotations

import json
import logging
import shutil
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from alignkit import disk
from alignkit.disk import (
    DiskSpaceError,
    check_free_space,
    estimate_training,
    human_bytes,
)

GiB = 1024**3
Usage = namedtuple("Usage", "total used free")

# A Llama-style config small enough to count LoRA parameters by hand (see test_lora_parameters_by_hand).
TINY_CONFIG = {"model_type": "llama", "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 2,
               "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 32}


def fake_model(folder: Path, config: dict | None = None) -> Path:
    """1,024 parameters in two safetensors shards (1,000 float32 + 24 float16), plus files that are not weights."""
    folder.mkdir(parents=True)
    save_file({"w": np.zeros((250, 4), np.float32)}, str(folder / "model-00001-of-00002.safetensors"))
    save_file({"b": np.zeros(24, np.float16)}, str(folder / "model-00002-of-00002.safetensors"))
    (folder / "pytorch_model.bin").write_bytes(bytes(9999))  # a second copy of the weights: ignored
    (folder / "tokenizer.json").write_text("{}")
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_human_bytes():
    assert [human_bytes(n) for n in (0, 1023, 1024, 1536, 10 * 1024**2, 2.5 * GiB, 3 * 1024**4)] == [
        "0 B", "1023 B", "1.0 KiB", "1.5 KiB", "10.0 MiB", "2.5 GiB", "3.0 TiB"]


def test_free_bytes_asks_the_nearest_existing_parent(tmp_path, monkeypatch):
    asked = []

    def usage(path):
        asked.append(Path(path))
        return Usage(100 * GiB, 60 * GiB, 40 * GiB)

    monkeypatch.setattr(disk.shutil, "disk_usage", usage)
    assert disk.free_bytes(tmp_path / "runs" / "tiny" / "02_sft_training") == 40 * GiB
    assert asked == [tmp_path]
    assert disk.nearest_existing(tmp_path) == tmp_path


def test_free_bytes_is_the_real_free_space(tmp_path):
    # Other processes write meanwhile: equal within 1% (hundreds of MB on a large disk).
    assert disk.free_bytes(tmp_path / "not-yet") == pytest.approx(shutil.disk_usage(tmp_path).free, rel=0.01)


def test_model_parameters_and_weight_bytes_of_a_folder(tmp_path):
    folder = fake_model(tmp_path / "m")
    assert [p.name for p in disk.weight_files(folder)] == ["model-00001-of-00002.safetensors",
                                                           "model-00002-of-00002.safetensors"]
    assert disk.model_parameters(folder) == 250 * 4 + 24
    shard_sizes = sum((folder / n).stat().st_size for n in ("model-00001-of-00002.safetensors",
                                                            "model-00002-of-00002.safetensors"))
    assert disk.weight_bytes(folder) == shard_sizes
    # Each shard: 8-byte header length + JSON header + data (4,000 and 48 bytes of tensors).
    assert shard_sizes > 4000 + 48


def test_bin_only_folder_counts_bytes_per_dtype(tmp_path):
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "pytorch_model-00001-of-00002.bin").write_bytes(bytes(3000))
    (folder / "pytorch_model-00002-of-00002.bin").write_bytes(bytes(1000))
    (folder / "training_args.bin").write_bytes(bytes(777))  # trainer settings, not weights
    assert disk.weight_bytes(folder) == 4000
    assert disk.model_parameters(folder, "float32") == 1000
    assert disk.model_parameters(folder, "bfloat16") == 2000
    with pytest.raises(FileNotFoundError, match="no .*safetensors or .*bin weight files"):
        disk.model_parameters(tmp_path / "nothing-here")


def test_lora_parameters_by_hand():
    # r=4; per layer q 8->8: 4*(8+8)=64, k 8->4: 48, v 8->4: 48, o 8->8: 64, gate 8->16: 96, up: 96,
    # down 16->8: 96; sum 512 per layer, 2 layers: 1,024.
    assert disk.lora_parameters(TINY_CONFIG, 4) == 1024
    with pytest.raises(KeyError, match="model config lacks 'intermediate_size'"):
        disk.lora_parameters({"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 1}, 4)


def test_lora_parameters_match_what_peft_builds():
    # Independent check: PEFT's own count of trainable parameters on a real (tiny) Llama.
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in TINY_CONFIG.items() if k != "model_type"}))
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert trainable == disk.lora_parameters(TINY_CONFIG, 4) == 1024


def test_full_training_estimate_from_a_folder(tmp_path):
    folder = fake_model(tmp_path / "m")
    e = estimate_training(folder, method="full", save_total_limit=2, dtype="bfloat16", overhead_bytes=0)
    # P = 1,024; W = 1,024 x 2 = 2,048; checkpoint = W + 2W (AdamW moments) = 6,144; final = 2,048;
    # peak = 2 x 6,144 + max(6,144, 2,048) = 18,432.
    assert (e.parameters, e.trainable_parameters) == (1024, 1024)
    assert (e.checkpoint_bytes, e.final_bytes, e.peak_bytes) == (6144, 2048, 18432)
    assert disk.estimate_training_bytes(folder, method="full", save_total_limit=2, dtype="bfloat16",
                                        overhead_bytes=0) == 18432
    # float32: W = 4,096, checkpoint 12,288; with 100 bytes of overhead per folder and L=1:
    # 1 x 12,388 + max(12,388, 4,196) = 24,776.
    assert disk.estimate_training_bytes(folder, method="full", save_total_limit=1, overhead_bytes=100) == 24776


def test_lora_estimate_from_the_folders_config(tmp_path):
    folder = fake_model(tmp_path / "m", TINY_CONFIG)
    e = estimate_training(folder, method="lora", save_total_limit=3, lora_r=4, overhead_bytes=1000)
    # A = 1,024; checkpoint = 4A + 8A = 12,288 (+1,000); final adapter = 4A = 4,096 (+1,000);
    # peak = 3 x 13,288 + max(13,288, 5,096) = 53,152.
    assert e.trainable_parameters == 1024
    assert (e.checkpoint_bytes, e.final_bytes, e.peak_bytes) == (13288, 5096, 53152)
    merged = estimate_training(folder, method="lora", save_total_limit=1, lora_r=4, dtype="bfloat16",
                               merge_adapter=True, overhead_bytes=0)
    # The merged final model is the full bf16 weights: 1,024 x 2 = 2,048; peak = 12,288 + 12,288.
    assert (merged.final_bytes, merged.peak_bytes) == (2048, 24576)
    qlora = estimate_training(folder, method="qlora", save_total_limit=3, lora_r=4, overhead_bytes=1000)
    assert qlora.peak_bytes == e.peak_bytes  # same adapter-sized checkpoints; the 4-bit base is not saved


def test_lora_estimate_without_dimensions_uses_the_stated_fraction():
    # 1,000,000 parameters, r=16: 2% -> A = 20,000; checkpoint 240,000; adapter 80,000; L=2: 720,000.
    e = estimate_training(1_000_000, method="lora", save_total_limit=2, lora_r=16, overhead_bytes=0)
    assert (e.trainable_parameters, e.checkpoint_bytes, e.final_bytes, e.peak_bytes) == (20000, 240000, 80000,
                                                                                         720000)
    # r=8 halves the adapter.
    assert estimate_training(1_000_000, method="qlora", save_total_limit=2, lora_r=8,
                             overhead_bytes=0).trainable_parameters == 10000
    # A config without Llama-style keys (GPT-2 names) falls back to the fraction too.
    gpt2 = estimate_training(1_000_000, method="lora", save_total_limit=2, model_config={"n_embd": 768},
                             overhead_bytes=0)
    assert gpt2.trainable_parameters == 20000


def test_qwen_7b_qlora_estimate_is_small_and_full_is_large():
    qwen7b = {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
              "num_attention_heads": 28, "num_key_value_heads": 4}
    qlora = estimate_training(7_615_616_512, method="qlora", save_total_limit=2, model_config=qwen7b,
                              dtype="bfloat16")
    assert qlora.trainable_parameters == 40_370_176
    # 12 x 40,370,176 = 484,442,112 bytes + 32 MiB per checkpoint; peak 3 checkpoints.
    assert qlora.peak_bytes == 3 * (484_442_112 + 32 * 1024**2)
    full = estimate_training(7_615_616_512, method="full", save_total_limit=2, dtype="bfloat16")
    assert full.peak_bytes == 3 * (3 * 2 * 7_615_616_512 + 32 * 1024**2)  # about 128 GiB
    assert human_bytes(full.peak_bytes) == "127.8 GiB"
    assert full.describe().startswith("127.8 GiB at the peak for full training: 2 checkpoint(s) of 42.6 GiB")


def test_estimate_refuses_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="method: expected 'full', 'lora' or 'qlora'; got 'dora'"):
        estimate_training(10, method="dora", save_total_limit=1)
    with pytest.raises(ValueError, match="dtype: expected one of float32, bfloat16, float16; got 'int8'"):
        estimate_training(10, method="full", save_total_limit=1, dtype="int8")
    with pytest.raises(ValueError, match="save_total_limit: expected >= 1; got 0"):
        estimate_training(10, method="full", save_total_limit=0)
    with pytest.raises(FileNotFoundError, match="Qwen/Qwen2.5-7B: not a local model folder; pass the parameter"):
        estimate_training("Qwen/Qwen2.5-7B", method="full", save_total_limit=1)


def test_check_free_space_refuses_with_the_numbers(tmp_path, monkeypatch):
    monkeypatch.setattr(disk.shutil, "disk_usage", lambda path: Usage(100 * GiB, 99 * GiB, 1 * GiB))
    target = tmp_path / "runs" / "tiny" / "02_sft_training"
    with pytest.raises(DiskSpaceError) as info:
        check_free_space(target, int(2.5 * GiB), "stage 02 checkpoints and model")
    assert str(info.value) == (
        f"not enough disk space for stage 02 checkpoints and model: needs about 2.5 GiB (2,684,354,560 bytes), "
        f"only 1.0 GiB (1,073,741,824 bytes) free at {target} (on the file system of {tmp_path}); free at least "
        "1.5 GiB there or point ALIGNKIT_HOME at a larger volume")
    assert (info.value.needed, info.value.free, info.value.path) == (int(2.5 * GiB), GiB, target)


def test_check_free_space_passes_and_logs_when_it_fits(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(disk.shutil, "disk_usage", lambda path: Usage(100 * GiB, 90 * GiB, 10 * GiB))
    caplog.set_level(logging.INFO, logger="alignkit.disk")
    assert check_free_space(tmp_path, 10 * GiB, "stage 05") == 10 * GiB  # exactly fits
    assert caplog.messages == [f"disk: stage 05 needs about 10.0 GiB; 10.0 GiB free at {tmp_path}"]
    with pytest.raises(DiskSpaceError, match=f"free at {tmp_path}; free at least 1 B there"):
        check_free_space(tmp_path, 10 * GiB + 1, "stage 05")
