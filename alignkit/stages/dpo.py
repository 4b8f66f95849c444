"""Stage 05: DPO from the SFT model (``sft_dpo``) and, as the control, from the base model (``dpo_only``).

    alignkit run --preset tiny --stages 05        (or notebooks/05_dpo_training.ipynb)

Runs once per training seed (``05_dpo_training/seed<N>/``). Both runs use the same pairs, the same DPO config and
the same seed; only the initial model differs (:func:`run_configs` builds both and a test asserts exactly that).
LoRA is the default: the reference model is the adapter-disabled policy (or, when DPO continues an SFT adapter,
TRL's frozen copy of it), so no second copy of the model is held in memory (no ``ref_model`` is passed). Full
fine-tuning precomputes the reference log-probabilities before training. Interrupted runs resume from their
last checkpoint. Losses (``dpo.loss_type``): sigmoid (DPO), ipo, rpo (DPO + ``rpo_alpha`` x NLL on chosen), hinge,
robust.

Diagnostics, per run: the **reference check** (before the first step, the reference log-probs TRL will use equal
the policy's, i.e. the initial model's: SFT weights for sft_dpo, the base for dpo_only, the SFT adapter on the
QLoRA path; the stage stops when they differ); the policy log-probs of chosen and rejected over steps (a falling
chosen log-prob is the known failure); the implicit reward margin and accuracy per negative type on the training
pairs and on the dev pairs, computed from the initial and final policy; the trainer's dev evaluation every epoch.
Summaries use whole-run figures (mean training loss, mean over logged steps, and the reward accuracy of the final
policy on every training and dev pair), never the last logged step alone.

Outputs in ``05_dpo_training/seed<N>/``: ``sft_dpo/`` and ``dpo_only/`` (adapter or full weights, with the
tokenizer), ``<run>_log_history.json`` and ``manifest.json``, which records each run's initial model path and hash
so evaluation applies every adapter to exactly the weights it was trained on.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

from alignkit import artifacts, schemas
from alignkit.artifacts import DPO_RUNS
from alignkit.runs import (
    Run,
    StageContext,
    execute_stage,
    fingerprint_path,
    is_main_process,
)

log = logging.getLogger(__name__)

STAGE = "05_dpo_training"
RUNS = DPO_RUNS


def run_configs(run: Run) -> dict[str, dict[str, Any]]:
    """The resolved settings of both DPO runs; they differ only in ``initial_model``."""
    cfg = run.config
    shared = {"dpo": cfg.section("dpo"), "model": cfg.section("model"), "seed": cfg.seed}
    return {name: {**shared, "initial_model": str(path), "initial_adapter": str(adapter) if adapter else None}
            for name, (path, adapter) in artifacts.initial_models(run).items()}


#: Reference check tolerance: |policy - reference| summed log-prob per sequence, in nats (float32 sums over a
#: hundred tokens agree to ~1e-4; bf16 / 4-bit forwards to ~0.1).
REFERENCE_TOLERANCE = {"float32": 1e-2, "bfloat16": 0.5, "float16": 0.5}
#: Pairs in the reference check batch.
REFERENCE_CHECK_PAIRS = 8


def loss_args(dpo) -> dict[str, Any]:
    """TRL's ``loss_type`` / ``loss_weights`` for ``dpo.loss_type`` (rpo = sigmoid + weighted NLL on chosen).

    >>> from alignkit.config import DPOSettings
    >>> loss_args(DPOSettings(loss_type="rpo", rpo_alpha=0.5))
    {'loss_type': ['sigmoid', 'sft'], 'loss_weights': [1.0, 0.5]}
    >>> loss_args(DPOSettings(loss_type="ipo"))
    {'loss_type': ['ipo'], 'loss_weights': None}
    """
    if dpo.loss_type == "rpo":
        return {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, dpo.rpo_alpha]}
    return {"loss_type": [dpo.loss_type], "loss_weights": None}


def sequence_logps(model, batch) -> Any:
    """Summed log-prob of each sequence's completion tokens in a collated DPO batch (``[2B]``: chosen then
    rejected), from plain logits: independent of TRL's own forward."""
    import torch

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    token_lp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, batch["input_ids"][:, 1:].unsqueeze(-1))
    return (token_lp.squeeze(-1) * batch["completion_mask"][:, 1:]).sum(dim=-1)


def reference_check(trainer, dtype: str, n_pairs: int = REFERENCE_CHECK_PAIRS) -> dict[str, Any]:
    """Before any step: the reference log-probs TRL will train against equal the policy's (= the initial model's).

    Catches a reference that is not the initial model (e.g. the bare base instead of the SFT adapter being
    continued, or stale precomputed log-probs). Raises ``RuntimeError`` beyond :data:`REFERENCE_TOLERANCE`.
    """
    import torch

    rows = [trainer.train_dataset[i] for i in range(min(n_pairs, len(trainer.train_dataset)))]
    batch = {k: v.to(trainer.accelerator.device) if hasattr(v, "to") else v
             for k, v in trainer.data_collator(rows).items()}
    model = trainer.model
    was_training = model.training
    model.eval()
    with torch.no_grad():
        if "ref_chosen_logps" in batch:  # full fine-tuning: precomputed from the initial weights
            reference = torch.cat([batch["ref_chosen_logps"], batch["ref_rejected_logps"]])
        else:
            reference = torch.cat(trainer.compute_ref_log_probs(model, batch))
        policy = sequence_logps(model, batch)
    model.train(was_training)
    gap = float((policy.float() - reference.float()).abs().max())
    tolerance = REFERENCE_TOLERANCE.get(dtype, 0.5)
    result = {"pairs": len(rows), "max_abs_diff_nats": round(gap, 6), "tolerance_nats": tolerance,
              "reference_logps_mean": round(float(reference.float().mean()), 4), "ok": gap <= tolerance}
    if not result["ok"]:
        raise RuntimeError(f"DPO reference check failed: before the first step the reference log-probs differ from "
                           f"the initial policy's by up to {gap:.3f} nats (tolerance {tolerance}); the reference is "
                           "not the model DPO starts from")
    return result


def implicit_rewards(model, tokenizer, pairs: list[dict], batch_size: int) -> tuple[list[float], list[float]]:
    """``(log p(chosen), log p(rejected))`` per pair under ``model`` (eval mode, completion tokens only)."""
    from alignkit.logprobs import completion_logprobs

    was_training = model.training
    model.eval()
    prompts = [p["prompt"] for p in pairs]
    chosen = completion_logprobs(model, tokenizer, prompts, [p["chosen"] for p in pairs], batch_size)
    rejected = completion_logprobs(model, tokenizer, prompts, [p["rejected"] for p in pairs], batch_size)
    model.train(was_training)
    return chosen, rejected


def margins_by_type(pairs: list[dict], before: tuple[list[float], list[float]],
                    after: tuple[list[float], list[float]], beta: float) -> dict[str, dict[str, Any]]:
    """Implicit reward margin ``beta * ((log pi - log ref)(chosen) - (log pi - log ref)(rejected))`` per negative
    type (mean, accuracy = share > 0) and the mean change of the chosen log-prob, from the policy before (the
    reference) and after training.

    >>> margins_by_type([{"negative_type": "format"}], ([-2.0], [-3.0]), ([-1.5], [-6.0]), 0.1)
    {'format': {'n': 1, 'margin_mean': 0.35, 'accuracy': 1.0, 'chosen_logp_change': 0.5}}
    """
    by_type: dict[str, list[tuple[float, float]]] = {}
    for pair, ref_c, ref_r, pol_c, pol_r in zip(pairs, *before, *after):
        margin = beta * ((pol_c - ref_c) - (pol_r - ref_r))
        by_type.setdefault(pair["negative_type"], []).append((margin, pol_c - ref_c))
    return {t: {"n": len(v), "margin_mean": round(sum(m for m, _ in v) / len(v), 4),
                "accuracy": round(sum(m > 0 for m, _ in v) / len(v), 4),
                "chosen_logp_change": round(sum(c for _, c in v) / len(v), 4)}
            for t, v in by_type.items()}


def whole_run(history: list[dict], key: str) -> float | None:
    """Mean of ``key`` over every logged training step (not the last step alone).

    >>> whole_run([{"loss": 0.7, "step": 1}, {"loss": 0.5, "step": 2}, {"eval_loss": 0.1}], "loss")
    0.6
    """
    values = [h[key] for h in history if key in h and "eval_loss" not in h]
    return round(sum(values) / len(values), 4) if values else None


def train_one(run: Run, ctx, name: str, init: tuple[Path, Path | None], pairs: list[dict],
              dev_pairs: list[dict]) -> dict[str, Any]:
    """One DPO run into ``ctx.dir/<name>``; returns its summary."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from alignkit import training
    from alignkit.config import config_hash
    from alignkit.modeling import release

    cfg = run.config
    dpo = cfg.dpo
    path, adapter = init
    training.check_disk(ctx.dir, path, cfg, dpo, f"DPO {name} (seed {cfg.seed})")
    model, tokenizer = training.load_trainable(path, cfg, dpo, adapter=adapter)
    fingerprint = config_hash({**run_configs(run)[name], "pairs": [p["id"] + p["chosen"] + p["rejected"]
                                                                    for p in pairs]})
    checkpoints = ctx.path(f"checkpoints_{name}")
    resume = training.prepare_checkpoints(checkpoints, fingerprint, ctx.force)
    args = DPOConfig(**training.trainer_kwargs(dpo, cfg, checkpoints, evaluate=bool(dev_pairs)), beta=dpo.beta,
                     **loss_args(dpo), precompute_ref_log_probs=dpo.method == "full", disable_tqdm=False)

    def dataset(rows: list[dict]):
        return Dataset.from_list([{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]}
                                  for p in rows])

    # No ref_model: with LoRA the adapter-disabled policy (or TRL's copy of a continued adapter) is the reference;
    # with full fine-tuning the reference log-probs are precomputed from the initial weights.
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset(pairs),
                         eval_dataset=dataset(dev_pairs) if dev_pairs else None, processing_class=tokenizer,
                         peft_config=training.peft_config(dpo) if adapter is None else None,
                         callbacks=training.trainer_callbacks(f"DPO {name} seed {cfg.seed}"))
    training.quiet_trainer(trainer)
    # QLoRA: TRL casts the trainable adapter to bf16 while the frozen reference copy stays float32, so their sums
    # agree only to bf16 precision whatever the model dtype.
    check = reference_check(trainer, "bfloat16" if dpo.method == "qlora" else cfg.model.dtype)
    before = implicit_rewards(trainer.model, tokenizer, pairs, cfg.pairs.batch_size)
    dev_before = implicit_rewards(trainer.model, tokenizer, dev_pairs, cfg.pairs.batch_size)
    trained = training.train_and_save(trainer, tokenizer, ctx.dir, name, resume, model_dir=ctx.path(name),
                                      merge=False)
    history = trained.history
    after = implicit_rewards(trainer.model, tokenizer, pairs, cfg.pairs.batch_size)
    dev_after = implicit_rewards(trainer.model, tokenizer, dev_pairs, cfg.pairs.batch_size)
    evals = [h for h in history if "eval_loss" in h]
    del trainer, model
    release()
    return {"initial_model": str(path), "initial_model_sha256": fingerprint_path(Path(path)) if Path(path).exists()
            else None, "initial_adapter": str(adapter) if adapter else None, "saved": trained.saved,
            "train_seconds": round(trained.seconds, 1), "resumed_from": trained.resumed_from,
            "reference_check": check, "train_loss_mean": round(trained.training_loss, 4),
            "reward_accuracy_mean": whole_run(history, "rewards/accuracies"),
            "reward_margin_mean": whole_run(history, "rewards/margins"),
            "chosen_logp_first": next((h["logps/chosen"] for h in history if "logps/chosen" in h), None),
            "chosen_logp_last": next((h["logps/chosen"] for h in reversed(history) if "logps/chosen" in h), None),
            "dev_eval": [{k: h.get(k) for k in ("epoch", "eval_loss", "eval_rewards/accuracies",
                                                  "eval_rewards/margins")} for h in evals],
            "train_by_type": margins_by_type(pairs, before, after, dpo.beta),
            "dev_by_type": margins_by_type(dev_pairs, dev_before, dev_after, dpo.beta),
            "train_reward_accuracy": _accuracy(pairs, before, after),
            "dev_reward_accuracy": _accuracy(dev_pairs, dev_before, dev_after)}


def _accuracy(pairs: list[dict], before, after) -> float | None:
    if not pairs:
        return None
    wins = sum((pc - rc) - (pr - rr) > 0 for rc, rr, pc, pr in zip(*before, *after))
    return round(wins / len(pairs), 4)


def run(run: Run, force: bool = False) -> dict[str, Any]:
    """Execute stage 05 for one training seed's view of the run (cached); returns its manifest."""
    inputs = {"pairs": run.output("04_preference_pairs", "pairs"),
              "dev_pairs": run.output("04_preference_pairs", "dev_pairs"),
              "sft_model": run.output("02_sft_training", "model")}
    return execute_stage(run, STAGE, inputs=inputs, body=functools.partial(produce, run, inputs), force=force)


def produce(run: Run, inputs: dict[str, Path], ctx: StageContext) -> None:
    """Stage 05's work in its stage folder ``ctx``: the same DPO from each initial model (:data:`RUNS`: from the
    SFT model, and from the base model as the control), each with its own reference check and margins."""
    cfg = run.config
    inits = artifacts.initial_models(run)
    pairs = schemas.load_records(inputs["pairs"], "pairs")
    dev_pairs = schemas.load_records(inputs["dev_pairs"], "pairs")
    summaries = {}
    for name in RUNS:
        log.info("DPO run %s (seed %s) from %s", name, cfg.seed, inits[name][0])
        summaries[name] = train_one(run, ctx, name, inits[name], pairs, dev_pairs)
        if not is_main_process():  # other torchrun ranks only train
            continue
        ctx.add_output(name, ctx.path(name))
        ctx.add_output(f"{name}_log_history", ctx.path(f"{name}_log_history.json"))
    ctx.summary.update({"runs": summaries, "pairs": len(pairs), "dev_pairs": len(dev_pairs),
                        "method": cfg.dpo.method, "beta": cfg.dpo.beta, "loss_type": cfg.dpo.loss_type,
                        "learning_rate": cfg.dpo.learning_rate, "epochs": cfg.dpo.epochs})
