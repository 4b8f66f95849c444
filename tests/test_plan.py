"""The memory plan (:mod:`alignkit.plan`): parameter counts against real models, the formula by hand, and the
verdicts for the shipped presets on 24, 48 and 80 GiB (the table in the README)."""

from __future__ import annotations

import json

import pytest

from alignkit import cli, plan
from alignkit.config import STAGES, ConfigError, available_presets, resolve

GPU_PRESETS = ("qwen2.5-0.5b", "qwen2.5-7b-qlora", "qwen2.5-32b-qlora")


def test_the_preset_bases_have_their_published_parameter_counts():
    # Hugging Face lists 494M, 7.62B and 32.8B parameters for these checkpoints.
    counts = {name: shape.parameters for name, shape in plan.KNOWN_BASES.items()}
    assert counts == {"Qwen/Qwen2.5-0.5B": 494_032_768, "Qwen/Qwen2.5-7B": 7_615_616_512,
                      "Qwen/Qwen2.5-32B": 32_763_876_352}


@pytest.mark.parametrize("arch", ["qwen2", "llama", "mistral"])
def test_parameter_and_lora_counts_match_real_models(arch):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(arch, vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                                  num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=arch == "qwen2")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    shape = plan.shape_from_config(json.loads(config.to_json_string()))
    assert shape.qkv_bias is (arch == "qwen2") and shape.tied is (arch == "qwen2")
    assert shape.parameters == sum(p.numel() for p in model.parameters())
    wrapped = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    assert shape.lora_parameters(4) == sum(p.numel() for p in wrapped.parameters() if p.requires_grad)


def test_nf4_bytes_per_weight_match_bitsandbytes():
    import bitsandbytes as bnb
    import torch

    layer = bnb.nn.Linear4bit(256, 512, bias=False, compute_dtype=torch.float32, quant_type="nf4",
                              compress_statistics=True).to("cpu")
    weight = layer.weight
    state = weight.quant_state
    stored = weight.numel() * weight.element_size() + state.absmax.numel() * state.absmax.element_size() \
        + state.state2.absmax.numel() * state.state2.absmax.element_size()
    assert plan.NF4_BYTES == 0.515869140625  # 1/2 + 1/64 + 4/16384
    assert stored == 256 * 512 * plan.NF4_BYTES  # 65536 + 2048 + 32 bytes


def test_one_layers_activations_by_hand():
    shape = plan.ModelShape(layers=2, hidden=8, intermediate=16, heads=2, kv_heads=1, vocab=100, tied=True)
    assert (shape.q, shape.kv) == (8, 4)
    # 2 bytes x (2h + 3q + 3kv + 4I = 16 + 24 + 12 + 64) + 16h = 232 + 128
    assert plan._layer_bytes(shape, 2, lora_dropout=False) == 360
    # LoRA dropout copies: 2 bytes x (5h + q + I = 40 + 8 + 16)
    assert plan._layer_bytes(shape, 2, lora_dropout=True) == 488


def test_the_smoke_sft_step_by_hand():
    cfg = resolve("smoke")
    shape, source = plan.model_shape(cfg)
    assert source == "the embedded base's base_build section"
    assert shape.parameters == 1_180_800  # the README's "1.18M parameters" of the embedded base
    step = plan.train_step("02_sft_training", shape, cfg, cfg.sft, rows_per_example=1, ref_adapter=False)
    assert step.step == "train full, 16 x 128 tokens"
    assert step.weights == 1_180_800 * 4 and step.state == 1_180_800 * 12  # float32 weights; grads + 2 moments
    # 2048 tokens; per token and layer 4 x (256 + 384 + 384 + 2048) + 16 x 128 = 14336 bytes, kept for 4 + 1 layers;
    # fused head: 4 x 1024 x (2048 + 128) + 4 x 128 x 2048.
    assert step.working == 5 * 14336 * 2048 + 4 * 1024 * (2048 + 128) + 4 * 128 * 2048 == 156_762_112


def test_the_7b_qlora_dpo_step_by_hand():
    cfg = resolve("qwen2.5-7b-qlora")
    shape = plan.KNOWN_BASES["Qwen/Qwen2.5-7B"]
    step = plan.train_step("05_dpo_training", shape, cfg, cfg.dpo, rows_per_example=2, ref_adapter=True)
    assert step.step == "train qlora, 8 x 384 tokens, gradient checkpointing"
    quantised = 28 * 233_046_016  # the seven projections of 28 layers, in NF4
    assert step.weights == quantised * plan.NF4_BYTES + (7_615_616_512 - quantised) * 4  # the rest in float32
    assert step.state == 40_370_176 * 16 + 40_370_176 * 4  # LoRA r16 on all projections + TRL's frozen ref copy


def test_every_preset_plans_all_six_stages(capsys):
    assert set(available_presets()) >= {"smoke", "tiny", *GPU_PRESETS}
    for name in available_presets():
        result = plan.plan(resolve(name), 80)
        assert list(result.peaks) == list(STAGES) and all(s.peak > 0 for s in result.steps)
    assert cli.main(["plan", "--preset", "all", "--gpu-memory", "80"]) == 0
    out = capsys.readouterr().out
    for name in available_presets():
        assert f"alignkit plan: preset {name} on a 80 GiB GPU" in out
    rows = [line.split()[0] for line in out.splitlines() if line.startswith("0")]
    assert sorted(set(rows)) == list(STAGES) and rows.count("05_dpo_training") == len(available_presets())


@pytest.mark.parametrize("preset,gpu,fits", [
    ("qwen2.5-0.5b", 24, True), ("qwen2.5-7b-qlora", 24, True), ("qwen2.5-32b-qlora", 24, False),
    ("qwen2.5-32b-qlora", 48, False), ("qwen2.5-32b-qlora", 80, True)])
def test_gpu_presets_on_24_48_80_gib(preset, gpu, fits, capsys):
    assert cli.main(["plan", "--preset", preset, "--gpu-memory", str(gpu)]) == (0 if fits else 1)
    assert ("does not fit" in capsys.readouterr().out) is not fits


def test_the_32b_preset_trains_on_48_gib_but_generates_unquantised():
    result = plan.plan(resolve("qwen2.5-32b-qlora"), 48)
    verdicts = {name: plan.verdict(step.peak, 48) for name, step in result.peaks.items()}
    assert verdicts["02_sft_training"] == verdicts["01_sft_data"] == "does not fit"  # bf16 generation: 61 GiB weights
    training = [s for s in result.steps if s.step.startswith("train qlora")]
    assert len(training) == 2 and all(plan.verdict(s.peak, 48) == "fits" for s in training)


def test_a_local_folder_is_planned_from_its_config_json(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64,
        "intermediate_size": 128, "num_attention_heads": 4, "vocab_size": 320, "tie_word_embeddings": False}))
    result = plan.plan(resolve("smoke", overrides=[f"model.base={folder}"]), 24)
    assert result.source == str(folder / "config.json")
    assert result.shape == plan.ModelShape(2, 64, 128, 4, 4, 320, tied=False)


def test_an_unknown_hub_model_says_how_to_get_its_config(capsys):
    cfg = resolve("qwen2.5-0.5b", overrides=["model.base=someorg/some-model"])
    with pytest.raises(ConfigError, match=r"no config.json for 'someorg/some-model'.*hf_hub_download"):
        plan.plan(cfg, 80)
    assert cli.main(["plan", "--preset", "qwen2.5-0.5b", "-p", "model.base=someorg/some-model"]) == 2
    assert "alignkit plan: config error: model.base:" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--gpu-memory: expected a positive size"):
        plan.plan(resolve("tiny"), 0)


def test_the_cli_has_the_plan_subcommand(capsys):
    parser = cli.build_parser()
    args = parser.parse_args(["plan", "--preset", "qwen2.5-7b-qlora", "--gpu-memory", "24", "-p", "sft.batch_size=4"])
    assert args.func(args) == 0
    assert "train qlora, 4 x 384 tokens, gradient checkpointing" in capsys.readouterr().out
