"""Stage 05: DPO from the SFT model (``sft_dpo``) and, as the control, from the base model (``dpo_only``).

    alignkit run --preset tiny --stages 05        (or notebooks/05_dpo_training.ipynb)

Both runs use the same pairs, the same DPO config and the same seed; only the initial model differs
(:func:`run_configs` builds both and a test asserts exactly that). LoRA is the default: the reference model is
the adapter-disabled policy, so no second copy of the model is held in memory (no ``ref_model`` is passed).
Full fine-tuning is optional and precomputes the reference log-probabilities before training. Interrupted
runs resume from their last checkpoint.

Outputs in ``05_dpo_training/``: ``sft_dpo/`` and ``dpo_only/`` (adapter or full weights, with the tokenizer),
``sft_dpo_log_history.json`` / ``dpo_only_log_history.json`` and ``manifest.json``, which records each run's
initial model path and hash so evaluation applies every adapter to exactly the weights it was trained on.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from alignkit import files, records
from alignkit.runs import Run, execute_stage, fingerprint_path, is_main_process
from alignkit.tinybase import ensure_base

log = logging.getLogger(__name__)

STAGE = "05_dpo_training"
RUNS = ("sft_dpo", "dpo_only")


def initial_models(run: Run) -> dict[str, tuple[Path, Path | None]]:
    """``{run name: (weights path, adapter or None)}``: the SFT model for sft_dpo, the base for dpo_only."""
    from alignkit import sft

    return {"sft_dpo": sft.sft_model(run), "dpo_only": (ensure_base(run.config), None)}


def run_configs(run: Run) -> dict[str, dict[str, Any]]:
    """The resolved settings of both DPO runs; they differ only in ``initial_model``."""
    cfg = run.config
    shared = {"dpo": cfg.section("dpo"), "model": cfg.section("model"), "seed": cfg.seed}
    return {name: {**shared, "initial_model": str(path), "initial_adapter": str(adapter) if adapter else None}
            for name, (path, adapter) in initial_models(run).items()}


def train_one(run: Run, ctx, name: str, init: tuple[Path, Path | None], pairs: list[dict]) -> dict[str, Any]:
    """One DPO run into ``ctx.dir/<name>``; returns its summary."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from alignkit.config import config_hash
    from alignkit.training import (load_trainable, log_history, peft_config, prepare_checkpoints, record_rank,
                                   save_trained, trainer_kwargs)

    cfg = run.config
    dpo = cfg.dpo
    path, adapter = init
    model, tokenizer = load_trainable(path, cfg, dpo, adapter=adapter)
    fingerprint = config_hash({**run_configs(run)[name], "pairs": [p["id"] + p["chosen"] + p["rejected"]
                                                                    for p in pairs]})
    checkpoints = ctx.path(f"checkpoints_{name}")
    resume = prepare_checkpoints(checkpoints, fingerprint, ctx.force)
    args = DPOConfig(**trainer_kwargs(dpo, cfg, checkpoints), beta=dpo.beta, loss_type=[dpo.loss_type],
                     precompute_ref_log_probs=dpo.method == "full", disable_tqdm=False)
    dataset = Dataset.from_list([{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]}
                                 for p in pairs])
    # No ref_model: with LoRA the adapter-disabled policy is the reference; with full fine-tuning the
    # reference log-probs are precomputed from the initial weights before the first update.
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config(dpo) if adapter is None else None)
    started = time.monotonic()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.monotonic() - started
    record_rank(trainer, ctx.dir, name)
    trainer.accelerator.wait_for_everyone()
    history = log_history(trainer)
    saved = None  # what rank 0 saved; other ranks save nothing
    if is_main_process():
        files.write_json(ctx.path(f"{name}_log_history.json"), history)
        saved = save_trained(trainer.accelerator.unwrap_model(trainer.model), tokenizer, ctx.path(name), merge=False)
    # Per-step logs carry loss and rewards; the trainer's closing summary entry has rewards but no loss.
    steps = [h for h in history if "loss" in h and "rewards/accuracies" in h]
    final = steps[-1] if steps else {}
    del trainer, model
    from alignkit.modeling import release

    release()
    return {"initial_model": str(path), "initial_model_sha256": fingerprint_path(Path(path)) if Path(path).exists()
            else None, "initial_adapter": str(adapter) if adapter else None, "saved": saved,
            "train_seconds": round(seconds, 1), "resumed_from": resume.name if resume else None,
            "final_reward_accuracy": final.get("rewards/accuracies"), "final_reward_margin": final.get("rewards/margins"),
            "final_loss": final.get("loss")}


def run(run: Run, force: bool = False) -> dict[str, Any]:
    """Execute stage 05 (cached); returns its manifest."""
    cfg = run.config
    pairs_path = run.output("04_preference_pairs", "pairs")
    inits = initial_models(run)
    inputs = {"pairs": pairs_path, "sft_model": run.output("02_sft_training", "model")}

    def body(ctx) -> None:
        pairs = records.load_records(pairs_path, "pairs")
        summaries = {}
        for name in RUNS:
            log.info("DPO run %s from %s", name, inits[name][0])
            summaries[name] = train_one(run, ctx, name, inits[name], pairs)
            if not is_main_process():  # other torchrun ranks only train
                continue
            ctx.add_output(name, ctx.path(name))
            ctx.add_output(f"{name}_log_history", ctx.path(f"{name}_log_history.json"))
        ctx.summary.update({"runs": summaries, "pairs": len(pairs), "method": cfg.dpo.method, "beta": cfg.dpo.beta,
                            "loss_type": cfg.dpo.loss_type})

    return execute_stage(run, STAGE, sections=("model", "dpo"), inputs=inputs, body=body, force=force)


def dpo_model(run: Run, name: str) -> tuple[Path, Path | None]:
    """``(weights, adapter)`` for evaluating ``sft_dpo`` or ``dpo_only``: an adapter goes on exactly the weights
    its run started from (recorded in the manifest), full weights load on their own."""
    manifest = run.require(STAGE)
    summary = manifest["summary"]["runs"][name]
    out = run.output(STAGE, name)
    if summary["saved"] == "adapter":
        # A DPO run that started from an SFT adapter kept training that adapter: the saved adapter holds
        # SFT + DPO and goes on the same base weights.
        return Path(summary["initial_model"]), out
    return out, None
