"""Tests for the training pieces shared by stages 02 and 05 (alignkit.training), the SFT mask gate
(alignkit.stages.sft.verify_masks) and the DPO run pairing (alignkit.stages.dpo.run_configs).

The QLoRA test loads a tiny random Llama in 4-bit NF4 on the CPU (bitsandbytes 0.50) and runs two real
``trl.SFTTrainer`` steps.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from alignkit import artifacts, files, masks, template, threads, training
from alignkit.config import resolve
from alignkit.runs import Run
from alignkit.stages import dpo, sft


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Nothing a test does may land in ./data."""
    home = tmp_path / "home"
    monkeypatch.setenv("ALIGNKIT_HOME", str(home))
    monkeypatch.setenv("ALIGNKIT_REPORTS", str(tmp_path / "reports"))
    return home


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------


def _checkpoint(folder: Path, step: int, complete: bool = True) -> Path:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"w")
    if complete:
        files.write_json(path / "trainer_state.json", {"global_step": step})
    return path


def test_latest_checkpoint_skips_incomplete_and_orders_numerically(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    assert training.latest_checkpoint(folder) is None  # no folder yet
    folder.mkdir()
    assert training.latest_checkpoint(folder) is None
    _checkpoint(folder, 9)
    assert training.latest_checkpoint(folder) == folder / "checkpoint-9"
    _checkpoint(folder, 10)  # 10 > 9 numerically, though "checkpoint-10" < "checkpoint-9" as text
    assert training.latest_checkpoint(folder) == folder / "checkpoint-10"
    _checkpoint(folder, 20, complete=False)  # killed mid-save: no trainer_state.json
    assert training.latest_checkpoint(folder) == folder / "checkpoint-10"
    (folder / "checkpoint-30.tmp").mkdir()
    files.write_json(folder / "checkpoint-30.tmp" / "trainer_state.json", {})
    (folder / "checkpoint-x").mkdir()
    files.write_json(folder / "runs.json", {})
    assert training.latest_checkpoint(folder) == folder / "checkpoint-10"


def test_prepare_checkpoints_keeps_matching_and_wipes_mismatching(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    assert training.prepare_checkpoints(folder, "aaa", force=False) is None
    assert files.read_json(folder / "fingerprint.json") == {"fingerprint": "aaa"}
    _checkpoint(folder, 5)
    _checkpoint(folder, 10, complete=False)

    # Same job: resume from the newest complete checkpoint, keep everything.
    assert training.prepare_checkpoints(folder, "aaa", force=False) == folder / "checkpoint-5"
    assert (folder / "checkpoint-10").is_dir()

    # Config or data changed: stale checkpoints are deleted, the new fingerprint recorded.
    assert training.prepare_checkpoints(folder, "bbb", force=False) is None
    assert sorted(p.name for p in folder.iterdir()) == ["fingerprint.json"]
    assert files.read_json(folder / "fingerprint.json") == {"fingerprint": "bbb"}

    # --force starts afresh even when the fingerprint matches.
    _checkpoint(folder, 3)
    assert training.prepare_checkpoints(folder, "bbb", force=True) is None
    assert not (folder / "checkpoint-3").exists()


def test_prepare_checkpoints_without_marker_is_not_trusted(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    _checkpoint(folder, 7)  # from an unknown job: no fingerprint.json
    assert training.prepare_checkpoints(folder, "aaa", force=False) is None
    assert not (folder / "checkpoint-7").exists()


# --------------------------------------------------------------------------------------------------
# PEFT and trainer arguments
# --------------------------------------------------------------------------------------------------


def test_peft_config_full_lora_qlora() -> None:
    cfg = resolve("smoke", overrides=["sft.method=full", "dpo.method=lora", "dpo.lora_r=8", "dpo.lora_alpha=16",
                                      "dpo.lora_dropout=0.1"])
    assert training.peft_config(cfg.sft) is None
    lora = training.peft_config(cfg.dpo)
    assert (lora.r, lora.lora_alpha, lora.lora_dropout, lora.bias) == (8, 16, 0.1, "none")
    assert lora.target_modules == "all-linear"
    assert str(lora.task_type).endswith("CAUSAL_LM")

    qlora = resolve("smoke", overrides=["sft.method=qlora", "sft.merge_adapter=false",
                                        "sft.lora_target_modules=[q_proj, v_proj]"])
    config = training.peft_config(qlora.sft)
    assert config is not None and config.r == qlora.sft.lora_r
    assert set(config.target_modules) == {"q_proj", "v_proj"}


def test_trainer_kwargs_maps_dtype_device_and_reporting(tmp_path: Path) -> None:
    cfg = resolve("smoke", overrides=["model.device=cpu", "model.dtype=bfloat16", "seed=7", "sft.report_to=tensorboard",
                                      "sft.epochs=2", "sft.batch_size=3", "sft.gradient_accumulation=4",
                                      "sft.max_length=96", "sft.save_total_limit=1"])
    kwargs = training.trainer_kwargs(cfg.sft, cfg, tmp_path / "out")
    assert kwargs["output_dir"] == str(tmp_path / "out")
    assert (kwargs["bf16"], kwargs["fp16"], kwargs["use_cpu"]) == (True, False, True)
    assert kwargs["report_to"] == ["tensorboard"]
    assert (kwargs["seed"], kwargs["data_seed"]) == (7, 7)
    assert (kwargs["num_train_epochs"], kwargs["per_device_train_batch_size"], kwargs["gradient_accumulation_steps"],
            kwargs["max_length"], kwargs["save_total_limit"]) == (2.0, 3, 4, 96, 1)
    assert kwargs["learning_rate"] == cfg.sft.learning_rate and kwargs["push_to_hub"] is False

    plain = resolve("smoke", overrides=["model.device=cpu"])
    kwargs = training.trainer_kwargs(plain.dpo, plain, tmp_path / "dpo")
    assert (kwargs["bf16"], kwargs["fp16"], kwargs["use_cpu"]) == (False, False, True)
    assert kwargs["report_to"] == []
    assert kwargs["num_train_epochs"] == plain.dpo.epochs and kwargs["save_steps"] == plain.dpo.save_steps


def test_trainer_kwargs_are_accepted_by_trl_configs(tmp_path: Path) -> None:
    from trl import DPOConfig, SFTConfig

    cfg = resolve("smoke", overrides=["model.device=cpu"])
    sft_args = SFTConfig(**training.trainer_kwargs(cfg.sft, cfg, tmp_path / "sft"), completion_only_loss=True)
    dpo_args = DPOConfig(**training.trainer_kwargs(cfg.dpo, cfg, tmp_path / "dpo"), beta=cfg.dpo.beta)
    for args, train in ((sft_args, cfg.sft), (dpo_args, cfg.dpo)):
        assert args.use_cpu and args.report_to in ([], None, "none", ["none"])
        assert args.learning_rate == train.learning_rate and args.max_length == train.max_length
        assert args.warmup_steps == train.warmup_ratio  # a float in [0, 1): a share of the total steps
        assert args.lr_scheduler_type == "cosine" or str(args.lr_scheduler_type).endswith("COSINE")


@pytest.mark.parametrize("loss_type, expected_types, expected_weights", [
    ("sigmoid", ["sigmoid"], None), ("ipo", ["ipo"], None), ("hinge", ["hinge"], None),
    ("robust", ["robust"], None), ("rpo", ["sigmoid", "sft"], [1.0, 0.25])])
def test_every_dpo_loss_type_is_a_dpo_config_trl_accepts(tmp_path: Path, loss_type: str, expected_types: list[str],
                                                         expected_weights: list[float] | None) -> None:
    """The dpo_loss suite's switch (dpo.loss_type, dpo.rpo_alpha) reaches TRL as the loss it names."""
    from trl import DPOConfig

    from alignkit.stages import dpo

    cfg = resolve("smoke", overrides=["model.device=cpu", f"dpo.loss_type={loss_type}", "dpo.rpo_alpha=0.25"])
    args = DPOConfig(**training.trainer_kwargs(cfg.dpo, cfg, tmp_path / "dpo"), beta=cfg.dpo.beta,
                     **dpo.loss_args(cfg.dpo))
    assert list(args.loss_type) == expected_types
    assert (list(args.loss_weights) if args.loss_weights is not None else None) == expected_weights


# --------------------------------------------------------------------------------------------------
# A tiny model folder, and QLoRA on the CPU
# --------------------------------------------------------------------------------------------------

ROWS = [
    {"id": "r0", "prompt": template.prompt("Add 2 and 3."), "completion": template.completion("5")},
    {"id": "r1", "prompt": template.prompt("What is the capital of France?"),
     "completion": template.completion("Paris")},
    {"id": "r2", "prompt": template.prompt("Spell cat backwards."), "completion": template.completion("tac")},
    {"id": "r3", "prompt": template.prompt("Name two colors."), "completion": template.completion("red and blue")},
]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random Llama (hidden 64, 2 layers) with a byte-level BPE tokenizer, saved as an HF folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from alignkit import world
    from alignkit.world import tinybase

    tokenizer = tinybase.train_tokenizer(world.corpus(0, 80) + [template.full_text("Add 2 and 3.", "5")] * 5, 320)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        intermediate_size=128, max_position_embeddings=256, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    folder = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def _raw(tensor):
    """A parameter's stored bytes (4-bit weights are packed into float storage; compare bits, not values)."""
    import torch

    return tensor.detach().cpu().contiguous().view(torch.uint8).clone()


def test_qlora_training_steps_on_the_cpu(tiny_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bitsandbytes as bnb
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    cfg = resolve("smoke", overrides=["sft.method=qlora", "sft.merge_adapter=false", f"model.base={tiny_folder}",
                                      "model.device=cpu"])
    model, tokenizer = training.load_trainable(tiny_folder, cfg, cfg.sft)
    assert isinstance(model.model.layers[0].self_attn.q_proj, bnb.nn.Linear4bit)
    assert model.model.layers[0].self_attn.q_proj.weight.quant_state.quant_type == "nf4"
    assert model.training
    assert tokenizer.pad_token is not None and not getattr(tokenizer, "chat_template", None)

    # The stage's own arguments, cut to two steps of two rows with a large learning rate.
    kwargs = {**training.trainer_kwargs(cfg.sft, cfg, tmp_path / "out"), "max_steps": 2,
              "per_device_train_batch_size": 2, "learning_rate": 1e-2, "logging_steps": 1, "save_strategy": "no"}
    args = SFTConfig(**kwargs, completion_only_loss=True, packing=False, disable_tqdm=True)
    dataset = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in ROWS])
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=training.peft_config(cfg.sft), callbacks=training.trainer_callbacks("SFT test"))
    load_measurements = []
    monkeypatch.setattr(threads, "follow_load", lambda: load_measurements.append(trainer.state.global_step))
    wrapped = trainer.model
    trainable = {name for name, p in wrapped.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    before = {name: _raw(p) for name, p in wrapped.named_parameters()}

    trainer.train()

    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    assert load_measurements == [0, 1], "the CPU load is measured before every optimizer step"
    after = {name: _raw(p) for name, p in wrapped.named_parameters()}
    changed = {name for name in before if not before[name].equal(after[name])}
    lora_b = {name for name in trainable if "lora_B" in name}
    assert lora_b and lora_b <= changed, "every LoRA B matrix (zero at init) must have been updated"
    assert changed <= trainable, f"frozen (base) weights changed: {sorted(changed - trainable)[:3]}"
    quantized = [name for name, p in wrapped.named_parameters() if type(p).__name__ == "Params4bit"]
    assert quantized and not set(quantized) & changed

    kind = training.save_trained(wrapped, tokenizer, tmp_path / "model", merge=False)
    assert kind == "adapter"
    assert (tmp_path / "model" / "adapter_config.json").is_file()
    assert (tmp_path / "model" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "model" / "tokenizer.json").is_file()


def test_load_trainable_lora_is_a_plain_trainable_model(tiny_folder: Path) -> None:
    import torch

    cfg = resolve("smoke", overrides=["sft.method=lora", f"model.base={tiny_folder}", "model.device=cpu"])
    model, tokenizer = training.load_trainable(tiny_folder, cfg, cfg.sft)
    assert model.training
    assert model.dtype == torch.float32
    assert type(model.model.layers[0].self_attn.q_proj) is torch.nn.Linear
    assert tokenizer.eos_token == "</s>"


# --------------------------------------------------------------------------------------------------
# sft.verify_masks
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tiny_folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_folder))


def test_verify_masks_passes_on_good_rows(tokenizer) -> None:
    summary = sft.verify_masks(tokenizer, ROWS)
    assert summary["examples_checked"] == 4 and summary["failures"] == 0
    expected = [sum(masks.tokenize_example(tokenizer, r["prompt"], r["completion"])[1]) for r in ROWS]
    assert summary["trained_tokens_mean"] == round(sum(expected) / 4, 2)


def test_verify_masks_refuses_a_mask_that_trains_prompt_tokens(tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    real = masks.tokenize_example

    def off_by_one(tok, prompt, completion):
        ids, mask = real(tok, prompt, completion)
        if "France" in prompt:  # this row's mask also trains the prompt's last token
            first = mask.index(1)
            mask = mask[: first - 1] + [1] * (len(mask) - first + 1)
        return ids, mask

    monkeypatch.setattr(masks, "tokenize_example", off_by_one)
    with pytest.raises(sft.MaskError, match=r"1 of 4 examples") as error:
        sft.verify_masks(tokenizer, ROWS)
    assert "r1:" in str(error.value) and "prompt" in str(error.value)
    assert "r0:" not in str(error.value)


def test_verify_masks_refuses_a_mask_that_misses_the_eos(tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    real = masks.tokenize_example

    def no_eos(tok, prompt, completion):
        ids, mask = real(tok, prompt, completion)
        return ids, mask[:-1] + [0]

    monkeypatch.setattr(masks, "tokenize_example", no_eos)
    with pytest.raises(sft.MaskError, match=r"4 of 4 examples"):
        sft.verify_masks(tokenizer, ROWS)


def test_verify_masks_catches_a_tokenizer_that_merges_across_the_boundary() -> None:
    """Byte-level BPE without the regex split learns tokens that swallow "Response: " + the answer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [template.full_text(f"Add {a} and {b}.", str(a + b)) for a in range(12) for b in range(12)] * 3
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=600, special_tokens=["<pad>", "</s>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                        show_progress=False))
    merging = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>",
                                      clean_up_tokenization_spaces=False)
    rows = [{"id": f"m{a}", "prompt": template.prompt(f"Add {a} and 1."), "completion": template.completion(str(a + 1))}
            for a in range(5)]
    with pytest.raises(sft.MaskError, match="(?s)5 of 5 examples.*BPE merge across the prompt/completion boundary"):
        sft.verify_masks(merging, rows)


# --------------------------------------------------------------------------------------------------
# dpo.run_configs: the two DPO runs differ only in their initial model
# --------------------------------------------------------------------------------------------------


def _run_with_sft(saved: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Run, Path, Path]:
    run = Run(run_id="dpo-test", config=resolve("smoke")).for_seed(0)  # stages 02 and 05 run per seed
    stage_dir = run.stage_dir("02_sft_training")
    model_dir = stage_dir / "model"
    model_dir.mkdir(parents=True)
    (model_dir / "config.json").write_text("{}")
    files.write_json(stage_dir / "manifest.json", {
        "stage": "02_sft_training", "status": "complete",
        "outputs": {"model": {"path": str(model_dir.relative_to(run.dir)), "sha256": "not-checked-for-folders",
                              "rows": None}},
        "summary": {"saved": saved}})
    base = tmp_path / "base-model"
    base.mkdir()
    monkeypatch.setattr(artifacts, "ensure_base", lambda cfg, **kw: base)
    return run, model_dir, base


def test_dpo_run_configs_differ_only_in_the_initial_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                          _home: Path) -> None:
    run, model_dir, base = _run_with_sft("merged", monkeypatch, tmp_path)
    assert run.dir == _home / "runs" / "dpo-test"
    configs = dpo.run_configs(run)
    assert set(configs) == set(dpo.RUNS) == {"sft_dpo", "dpo_only"}
    a, b = configs["sft_dpo"], configs["dpo_only"]
    assert set(a) == set(b)
    differing = {key for key in a if a[key] != b[key]}
    assert differing == {"initial_model"}
    assert a["initial_model"] == str(model_dir) and a["initial_adapter"] is None
    assert b["initial_model"] == str(base) and b["initial_adapter"] is None
    # Everything that decides training is shared: the whole DPO section, the model settings and the seed.
    assert a["dpo"] == run.config.section("dpo") and a["model"] == run.config.section("model")
    assert a["seed"] == run.config.seed


def test_dpo_run_configs_with_an_sft_adapter(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # QLoRA SFT saved base + adapter: sft_dpo starts from the same base weights with the SFT adapter on top.
    run, model_dir, base = _run_with_sft("adapter", monkeypatch, tmp_path)
    a, b = dpo.run_configs(run)["sft_dpo"], dpo.run_configs(run)["dpo_only"]
    assert {key for key in a if a[key] != b[key]} == {"initial_adapter"}
    assert a["initial_model"] == b["initial_model"] == str(base)
    assert a["initial_adapter"] == str(model_dir) and b["initial_adapter"] is None


def test_dpo_run_configs_need_a_complete_sft_stage(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from alignkit.runs import StageInputError

    run, _, _ = _run_with_sft("merged", monkeypatch, tmp_path)
    manifest = files.read_json(run.stage_dir("02_sft_training") / "manifest.json")
    files.write_json(run.stage_dir("02_sft_training") / "manifest.json", {**manifest, "status": "running"})
    with pytest.raises(StageInputError, match="02_sft_training"):
        dpo.run_configs(run)
