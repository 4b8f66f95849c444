"""Stage 02: supervised fine-tuning with the loss on response tokens only, proven on decoded batches.

    alignkit run --preset tiny --stages 02        (or notebooks/02_sft_training.ipynb)

Runs once per training seed (``02_sft_training/seed<N>/``). Trains with TRL's ``SFTTrainer`` on the
prompt/completion rows of ``01_sft_data/sft.jsonl``, with the dev examples (``dev_sft.jsonl``) as the held-out
eval set (loss every epoch). Before any
training step the loss mask is checked twice: on every example with :mod:`alignkit.masks` (full-sequence
offsets), and on the trainer's own collated batches (the kept labels must decode to exactly
``completion + EOS``). Either failing stops the stage. Full fine-tuning, LoRA and QLoRA by config; an
interrupted run resumes from its last checkpoint.

Outputs in ``02_sft_training/``: ``model/`` (full or merged weights, or the adapter for QLoRA, with the
tokenizer), ``log_history.json`` (loss per logging step), ``samples.jsonl`` (base vs SFT responses on
instructions used by neither training nor evaluation) and ``manifest.json``.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

from alignkit import files, schemas, template, world
from alignkit.runs import Run, StageContext, execute_stage, is_main_process
from alignkit.world.tinybase import ensure_base

log = logging.getLogger(__name__)

STAGE = "02_sft_training"
#: Instructions used for the base-vs-SFT comparison shown in the notebook, and their token budget (QC only: the
#: evaluation's own settings are stage 06's).
N_SAMPLES = 20
SAMPLE_MAX_NEW_TOKENS = 64


class MaskError(RuntimeError):
    """The loss mask does not cover exactly the completion tokens; training is refused."""


def verify_masks(tokenizer, rows: list[dict]) -> dict[str, Any]:
    """Check every example's mask; raise :class:`MaskError` listing the failures."""
    from alignkit.masks import check_dataset

    results = check_dataset(tokenizer, rows)
    failures = [f"{row_id}: {check.problem}" for row_id, check in results if not check.ok]
    if failures:
        raise MaskError(f"{len(failures)} of {len(results)} examples have a wrong loss mask, e.g.\n  "
                        + "\n  ".join(failures[:5]))
    trained = [sum(check.mask) for _, check in results]
    return {"examples_checked": len(results), "failures": 0, "trained_tokens_mean": round(sum(trained) / len(trained), 2)}


def verify_trainer_batches(trainer, tokenizer, rows: list[dict], n_batches: int = 2,
                           loss_on: str = "completion") -> int:
    """Collate the trainer's own processed rows and check the labels decode to completion + EOS.

    TRL shuffles and may filter its processed dataset, so each processed row is matched to its source row
    through the ``prompt`` column it keeps (prompts are unique: one per instruction).
    """
    from alignkit.masks import check_batch

    by_prompt = {row["prompt"]: row for row in rows}
    dataset = trainer.train_dataset
    size = trainer.args.per_device_train_batch_size
    checked = 0
    for start in range(0, min(len(dataset), n_batches * size), size):
        examples = [dataset[i] for i in range(start, min(start + size, len(dataset)))]
        sources = [by_prompt[example["prompt"]] for example in examples]
        batch = trainer.data_collator([{k: v for k, v in e.items() if k not in ("prompt", "completion")}
                                       for e in examples])
        problems = check_batch(tokenizer, batch, sources, loss_on)
        if problems:
            raise MaskError("trainer batch labels are wrong:\n  " + "\n  ".join(problems[:5]))
        checked += len(examples)
    return checked


def train(run: Run, ctx, base_path, rows: list[dict], dev_rows: list[dict]) -> dict[str, Any]:
    """Train the SFT model into ``ctx.dir/model`` (held-out loss on ``dev_rows`` every epoch); returns the
    training summary."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from alignkit import training
    from alignkit.config import config_hash
    from alignkit.modeling import release

    cfg = run.config
    train_cfg = cfg.sft
    training.check_disk(ctx.dir, base_path, cfg, train_cfg, f"SFT (seed {cfg.seed})")
    model, tokenizer = training.load_trainable(base_path, cfg, train_cfg)
    # The study trains on the response only, proven on every example; the masking ablation trains on everything.
    mask_summary = verify_masks(tokenizer, rows) if train_cfg.loss_on == "completion" else \
        {"examples_checked": 0, "failures": 0, "loss_on": "all (prompt and response: the masking ablation)"}
    fingerprint = config_hash({"sft": cfg.section("sft"), "model": cfg.section("model"), "seed": cfg.seed,
                               "data": [r["id"] + r["completion"] for r in rows]})
    checkpoints = ctx.path("checkpoints")
    resume = training.prepare_checkpoints(checkpoints, fingerprint, ctx.force)
    args = SFTConfig(**training.trainer_kwargs(train_cfg, cfg, checkpoints, evaluate=bool(dev_rows)),
                     completion_only_loss=train_cfg.loss_on == "completion", packing=False,
                     dataset_num_proc=None, shuffle_dataset=True, disable_tqdm=False)
    dataset = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    dev = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in dev_rows]) \
        if dev_rows else None
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, eval_dataset=dev, processing_class=tokenizer,
                         peft_config=training.peft_config(train_cfg),
                         callbacks=training.trainer_callbacks(f"SFT seed {cfg.seed}"))
    training.quiet_trainer(trainer)
    batch_rows = verify_trainer_batches(trainer, tokenizer, rows, loss_on=train_cfg.loss_on)
    trained = training.train_and_save(trainer, tokenizer, ctx.dir, "sft", resume, model_dir=ctx.path("model"),
                             merge=train_cfg.method != "qlora" and train_cfg.merge_adapter)
    history = trained.history
    losses = [h["loss"] for h in history if "loss" in h]
    dev_losses = [h["eval_loss"] for h in history if "eval_loss" in h]
    summary = {"method": train_cfg.method, "saved": trained.saved, "resumed_from": trained.resumed_from,
               "train_seconds": round(trained.seconds, 1), "steps": trainer.state.global_step,
               "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
               "train_loss_mean": round(trained.training_loss, 4),
               "dev_loss_per_epoch": [round(x, 4) for x in dev_losses], "dev_examples": len(dev_rows),
               "masks": {**mask_summary, "trainer_batch_rows_checked": batch_rows},
               "trainable_parameters": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)}
    del trainer, model
    release()
    return summary


def sample_instructions(cfg, rows: list[dict], eval_items: list[dict]) -> list[world.Item]:
    """Instructions used neither in SFT data nor in evaluation, balanced over families."""
    used = [world.Item.from_record(r) for r in eval_items]
    used += [world.Item.from_record({**r, "reference": None}) for r in rows]
    return world.training_items(cfg.seed + 4242, N_SAMPLES, exclude=used, families=cfg.world.families)


def compare_samples(run: Run, base_path, model_dir, adapter, items: list[world.Item]) -> tuple[list[dict], dict]:
    """Greedy responses of the base and the SFT model on ``items`` (one model loaded at a time)."""
    from alignkit import modeling
    from alignkit.generation import GenerationSettings, generate

    cfg = run.config
    gen_cfg = GenerationSettings(max_new_tokens=SAMPLE_MAX_NEW_TOKENS, batch_size=N_SAMPLES)
    prompts = [template.prompt(item.instruction) for item in items]
    outputs = {}
    for name, path, extra in (("base", base_path, None), ("sft", model_dir, adapter)):
        with modeling.loaded(path, cfg.model, adapter=extra) as handle:
            outputs[name] = generate(handle.model, handle.tokenizer, prompts, gen_cfg, desc=f"samples: {name}")
    samples = [{"item_id": item.id, "family": item.family, "instruction": item.instruction,
                "base": b.response, "base_emitted_end": b.stopped, "sft": s.response, "sft_emitted_end": s.stopped}
               for item, b, s in zip(items, outputs["base"], outputs["sft"])]
    rates = {name: round(sum(o.stopped for o in outs) / len(outs), 3) for name, outs in outputs.items()}
    return samples, {"end_emission_rate": rates, "n": len(items)}


def run(run: Run, force: bool = False) -> dict[str, Any]:
    """Execute stage 02 (cached); returns its manifest."""
    cfg = run.config
    sft_path = run.output("01_sft_data", "sft")  # stage 01's outputs first: a missing stage fails before any build
    dev_path = run.output("01_sft_data", "dev_sft")
    eval_path = run.output("01_sft_data", "eval_items")
    base_path = ensure_base(cfg)
    inputs = {"sft": sft_path, "dev_sft": dev_path, "eval_items": eval_path}
    if base_path.exists():
        inputs["base_model"] = base_path
    return execute_stage(run, STAGE, inputs=inputs, body=functools.partial(produce, run, base_path, inputs),
                         force=force)


def produce(run: Run, base_path: Path, inputs: dict[str, Path], ctx: StageContext) -> None:
    """Stage 02's work in its stage folder ``ctx``: train on the SFT rows (dev rows as the eval set), then
    (rank 0) record the model and compare base and SFT answers on a few instructions."""
    rows = schemas.load_records(inputs["sft"], "sft")  # validated at the boundary, before any compute
    dev_rows = schemas.load_records(inputs["dev_sft"], "sft")
    eval_items = schemas.load_records(inputs["eval_items"], "eval-items")
    summary = train(run, ctx, base_path, rows, dev_rows)
    if not is_main_process():  # other torchrun ranks only train
        return
    ctx.add_output("model", ctx.path("model"))
    ctx.add_output("log_history", ctx.path("log_history.json"))
    adapter = ctx.path("model") if summary["saved"] == "adapter" else None
    model_path = base_path if adapter else ctx.path("model")
    samples, sample_summary = compare_samples(run, base_path, model_path, adapter,
                                              sample_instructions(run.config, rows, eval_items))
    ctx.add_output("samples", ctx.path("samples.jsonl"), rows=files.write_jsonl(ctx.path("samples.jsonl"), samples))
    ctx.summary.update({**summary, "samples": sample_summary, "examples": len(rows)})
