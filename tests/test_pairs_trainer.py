"""A format pair whose rejected lacks END reaches TRL's DPOTrainer exactly as stage 04 wrote it.

Stage 04 keeps a format (or verbose) negative as the model produced it: a run-on without END. This test builds a
tiny random Llama and a BPE tokenizer in a temporary folder, loads them the way stage 05 does
(``alignkit.training.load_trainable``), creates ``trl.DPOTrainer`` with stage 05's arguments
(``alignkit.training.trainer_kwargs``, ``alignkit.stages.dpo.loss_args``, a LoRA ``peft_config``, on the CPU,
``max_length=128``, no reporting) on three pairs, two of them END-less (format, verbose), and reads back what
TRL will train on: the processed ``train_dataset``'s ``prompt_ids`` / ``chosen_ids`` / ``rejected_ids``. The
END-less rejected must decode to its own text followed by the tokenizer's EOS only (no ``\\nEND`` added), its
chosen to ``" {text}\\nEND"`` + EOS. Finally :func:`alignkit.stages.dpo.reference_check` must pass on that trainer:
before any step, the reference log-probs (the adapter-disabled policy) equal the policy's; and it must fail once
the LoRA weights are moved away from the identity.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from alignkit import schemas, template

EOS, PAD = "<eos>", "<pad>"
PROMPT = template.prompt("What is the capital of Egypt?")
#: The run-on a base-like model writes: the answer, then a new turn of the template, cut without END.
RUN_ON = "Cairo\nInstruction: write a word\nResponse: bread"
PAIRS = [
    {"id": "pair-00000", "sft_id": "s0", "family": "capitals", "negative_type": "format", "prompt": PROMPT,
     "chosen": template.completion("Cairo"), "rejected": " " + RUN_ON, "chosen_source": "sft_model_greedy",
     "margin": None},
    {"id": "pair-00001", "sft_id": "s0", "family": "capitals", "negative_type": "incorrect", "prompt": PROMPT,
     "chosen": template.completion("Cairo"), "rejected": template.completion("Paris"),
     "chosen_source": "sft_model_greedy", "margin": None},
    {"id": "pair-00002", "sft_id": "s1", "family": "list_category", "negative_type": "verbose",
     "prompt": template.prompt("List three body parts."), "chosen": template.completion("arm, leg, head"),
     "rejected": " arm, leg, head, and the cat sat on a mat, the cat sat on a mat",
     "chosen_source": "sft_model_sample0", "margin": None},
]


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)
    words = "the cat sat on a mat what is capital of egypt cairo write word bread list three body parts".split()
    corpus = [template.full_text(" ".join(rng.choice(words) for _ in range(6)), rng.choice(words))
              for _ in range(200)]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=320, special_tokens=[EOS, PAD], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS, pad_token=PAD)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    """A random 2-layer Llama and its tokenizer, saved as a local model folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-dpo") / "base"
    tokenizer = _tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def trainer(tiny_base: Path, tmp_path_factory):
    """A DPOTrainer built the way stage 05 builds it (LoRA from the base: the dpo_only run), before any step."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from alignkit import training
    from alignkit.config import resolve
    from alignkit.stages import dpo

    cfg = resolve("smoke", overrides=[f"model.base={tiny_base}", "model.device=cpu", "dpo.method=lora",
                                      "dpo.max_length=128", "dpo.batch_size=2", "dpo.lora_r=4", "dpo.lora_alpha=8"])
    for pair in PAIRS:  # the pairs are valid stage-04 records, END-less rejected included
        assert schemas.check_record("pairs", pair) == []
    model, tokenizer = training.load_trainable(tiny_base, cfg, cfg.dpo)
    kwargs = training.trainer_kwargs(cfg.dpo, cfg, tmp_path_factory.mktemp("dpo-out"), evaluate=True)
    assert (kwargs["use_cpu"], kwargs["max_length"], kwargs["report_to"]) == (True, 128, [])
    args = DPOConfig(**kwargs, beta=cfg.dpo.beta, **dpo.loss_args(cfg.dpo), precompute_ref_log_probs=False)

    def dataset(rows):
        return Dataset.from_list([{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]}
                                  for p in rows])

    return DPOTrainer(model=model, args=args, train_dataset=dataset(PAIRS), eval_dataset=dataset(PAIRS[:1]),
                      processing_class=tokenizer, peft_config=training.peft_config(cfg.dpo))


def _decoded(trainer, dataset, index: int) -> dict[str, str]:
    row = dataset[index]
    tokenizer = trainer.processing_class
    return {name: tokenizer.decode(row[f"{name}_ids"], skip_special_tokens=False)
            for name in ("prompt", "chosen", "rejected")}


@pytest.mark.slow
def test_end_less_rejected_reaches_the_trainer_without_end(trainer) -> None:
    dataset = trainer.train_dataset
    assert {"prompt_ids", "chosen_ids", "rejected_ids"} <= set(dataset.column_names)
    assert len(dataset) == len(PAIRS)  # nothing dropped: every prompt is far shorter than max_length
    eos_id = trainer.processing_class.eos_token_id

    # The format pair: rejected is the run-on as generated, then TRL's EOS, and no END anywhere.
    format_pair = _decoded(trainer, dataset, 0)
    assert format_pair["prompt"] == PROMPT
    assert format_pair["rejected"] == " " + RUN_ON + EOS
    assert "\nEND" not in format_pair["rejected"]
    assert format_pair["chosen"] == " Cairo\nEND" + EOS
    assert "\nEND" in format_pair["chosen"]
    assert dataset[0]["rejected_ids"][-1] == eos_id and dataset[0]["chosen_ids"][-1] == eos_id
    assert eos_id not in dataset[0]["rejected_ids"][:-1]  # one EOS, at the end

    # The pairs whose rejected ends with END keep it; the verbose one is END-less too.
    assert _decoded(trainer, dataset, 1)["rejected"] == " Paris\nEND" + EOS
    verbose = _decoded(trainer, dataset, 2)
    assert verbose["rejected"] == PAIRS[2]["rejected"] + EOS and "END" not in verbose["rejected"]
    assert verbose["chosen"] == " arm, leg, head\nEND" + EOS

    # The dev (eval) set is processed the same way.
    assert _decoded(trainer, trainer.eval_dataset, 0)["rejected"] == " " + RUN_ON + EOS


@pytest.mark.slow
def test_reference_check_passes_before_any_step(trainer) -> None:
    from alignkit.stages import dpo

    result = dpo.reference_check(trainer, "float32")
    assert result["ok"] is True
    assert result["pairs"] == len(PAIRS)
    assert result["tolerance_nats"] == dpo.REFERENCE_TOLERANCE["float32"] == 1e-2
    # LoRA starts as the identity (B = 0): policy and adapter-disabled reference agree to float32 rounding.
    assert 0.0 <= result["max_abs_diff_nats"] < 1e-4
    assert result["reference_logps_mean"] < 0


@pytest.mark.slow
def test_reference_check_fails_when_the_policy_is_not_the_reference(trainer) -> None:
    # The same check on a policy that already moved away from its reference (non-zero LoRA B) must stop the stage.
    import torch

    from alignkit.stages import dpo

    lora_b = [p for name, p in trainer.model.named_parameters() if "lora_B" in name]
    assert lora_b and all(float(p.abs().max()) == 0.0 for p in lora_b)
    saved = [p.detach().clone() for p in lora_b]
    try:
        torch.manual_seed(0)
        with torch.no_grad():
            for p in lora_b:
                p.normal_(std=0.5)
        with pytest.raises(RuntimeError, match="DPO reference check failed"):
            dpo.reference_check(trainer, "float32")
    finally:
        with torch.no_grad():
            for p, value in zip(lora_b, saved):
                p.copy_(value)
    assert dpo.reference_check(trainer, "float32")["max_abs_diff_nats"] == 0.0
