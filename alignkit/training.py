"""What SFT (stage 02) and DPO (stage 05) share: trainable model loading, PEFT settings, trainer arguments,
checkpoint resume and retention, and saving the result.

Resume: checkpoints live in ``<stage>/<name>/checkpoints/`` next to ``fingerprint.json`` (the hash of the
training config and data). Running the stage again after an interruption continues from the newest
checkpoint when the fingerprint matches, and starts afresh (deleting stale checkpoints) when it does not.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import shutil
import time
from pathlib import Path
from typing import Any

from alignkit import files
from alignkit.config import StudyConfig, TrainSettings
from alignkit.modeling import device_for, load_model, load_tokenizer

log = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete ``checkpoint-N`` folder (one with ``trainer_state.json``), or None.

    A checkpoint killed mid-save lacks ``trainer_state.json`` (the Trainer writes it last), so it is skipped.
    """
    if not folder.is_dir():
        return None
    found = []
    for path in folder.iterdir():
        match = _CHECKPOINT.match(path.name)
        if match and (path / "trainer_state.json").is_file():
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def prepare_checkpoints(folder: Path, fingerprint: str, force: bool) -> Path | None:
    """Make ``folder`` hold only checkpoints of this exact training job; return the one to resume from."""
    from alignkit.runs import barrier, is_main_process

    marker = folder / "fingerprint.json"
    if is_main_process():  # one rank decides; the others wait, then read the same folder
        stale = not marker.is_file() or files.read_json(marker).get("fingerprint") != fingerprint
        if folder.exists() and (force or stale):
            log.info("discarding checkpoints in %s (config or data changed, or --force)", folder)
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        files.write_json(marker, {"fingerprint": fingerprint})
    barrier()
    resume = latest_checkpoint(folder)
    if resume is not None:
        log.info("resuming from %s", resume)
    return resume


def peft_config(train: TrainSettings):
    """LoRA adapters for ``lora``/``qlora`` (None for full fine-tuning)."""
    if train.method == "full":
        return None
    from peft import LoraConfig

    targets: Any = list(train.lora_target_modules)
    if targets == ["all-linear"]:
        targets = "all-linear"
    return LoraConfig(r=train.lora_r, lora_alpha=train.lora_alpha, lora_dropout=train.lora_dropout,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM")


def load_trainable(path: str | Path, cfg: StudyConfig, train: TrainSettings, adapter: str | Path | None = None):
    """The model to train: full weights, or the base for LoRA, or a 4-bit NF4 base for QLoRA.

    ``adapter`` is an SFT adapter (SFT trained with QLoRA): full fine-tuning merges it into the weights;
    LoRA/QLoRA keep training it (TRL then copies its initial state as the "ref" adapter, so the reference
    is the SFT model, not the bare base). Callers pass ``peft_config`` to the trainer only when no adapter
    was loaded here.
    """
    from peft import PeftModel

    quantize = train.method == "qlora"
    model = load_model(path, cfg.model, quantize_4bit=quantize, trainable=True)
    if quantize:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=train.gradient_checkpointing)
        keep_4bit_weights_trainable(model)
    if adapter is not None:
        if train.method == "full":
            model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        else:
            model = PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
    model.train()
    return model, load_tokenizer(path, cfg.model)


def keep_4bit_weights_trainable(model) -> int:
    """Stop bitsandbytes from repacking 4-bit weights for CPU inference; returns the 4-bit layers touched.

    bitsandbytes 0.50 on a CPU with AVX512-BF16 repacks a ``Linear4bit``'s weights into an inference-only layout on
    its first eval-mode forward without gradients; stage 05's reference check and implicit-reward pass are such
    forwards, run before training. Training through repacked weights then fails (``result += bias`` on a leaf,
    e.g. Qwen's q/k/v biases) or backpropagates through ``gemv_4bit``, which has no autograd kernel. On a GPU the
    flag does nothing.
    """
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)


def trainer_kwargs(train: TrainSettings, cfg: StudyConfig, output_dir: Path, evaluate: bool = False) -> dict[str, Any]:
    """Arguments shared by ``trl.SFTConfig`` and ``trl.DPOConfig`` (names as in TRL 1.16); ``evaluate`` adds an
    evaluation of the dev eval set at the end of every epoch."""
    device = device_for(cfg.model)
    evaluation = {"eval_strategy": "epoch", "per_device_eval_batch_size": train.batch_size} if evaluate else \
        {"eval_strategy": "no"}
    return {**evaluation,
        "output_dir": str(output_dir), "num_train_epochs": train.epochs,
        "per_device_train_batch_size": train.batch_size, "gradient_accumulation_steps": train.gradient_accumulation,
        "learning_rate": train.learning_rate, "lr_scheduler_type": "cosine", "warmup_steps": train.warmup_ratio,  # a float in [0, 1) is a ratio
        "weight_decay": train.weight_decay, "logging_steps": train.logging_steps, "logging_first_step": True,
        "save_strategy": "steps", "save_steps": train.save_steps, "save_total_limit": train.save_total_limit,
        "report_to": [] if train.report_to == "none" else [train.report_to], "seed": cfg.seed, "data_seed": cfg.seed,
        "bf16": cfg.model.dtype == "bfloat16", "fp16": cfg.model.dtype == "float16",
        "use_cpu": device == "cpu", "gradient_checkpointing": train.gradient_checkpointing,
        "optim": "adamw_torch", "dataloader_num_workers": 0, "max_length": train.max_length,
        "push_to_hub": train.push_to_hub, "hub_model_id": train.hub_model_id or None,
    }


def log_history(trainer) -> list[dict[str, Any]]:
    """The trainer's logged metrics, one dict per logging step."""
    return [dict(entry) for entry in trainer.state.log_history]


def weights_sha256(model) -> str:
    """sha256 over a model's parameters (names and bytes, in order): what each DDP rank ends up with."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        # Raw bytes (viewed as uint8) so any dtype, bf16 included, hashes exactly.
        digest.update(tensor.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def record_rank(trainer, folder: Path, name: str) -> None:
    """Under torchrun, every rank writes what it trained (steps, samples, weights hash) for inspection."""
    from alignkit.runs import rank, world_size

    if world_size() > 1:
        model = trainer.accelerator.unwrap_model(trainer.model)
        files.write_json(folder / f"{name}_rank{rank()}.json", {
            "rank": rank(), "world_size": world_size(), "global_step": trainer.state.global_step,
            "weights_sha256": weights_sha256(model)})


def save_trained(model, tokenizer, out: Path, *, merge: bool) -> str:
    """Save the trained model into ``out``: full weights, a merged adapter, or the adapter alone.

    Returns what was saved: ``"full"``, ``"merged"`` or ``"adapter"``.
    """
    from alignkit.runs import fresh_dir

    kind = "full"
    if hasattr(model, "peft_config"):
        if merge:
            model = model.merge_and_unload()
            kind = "merged"
        else:
            kind = "adapter"
    with fresh_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return kind


@dataclasses.dataclass
class Trained:
    """What :func:`train_and_save` returns: the trainer's output, wall time, log history and what was saved."""

    training_loss: float  # mean training loss over the run (TRL's ``TrainOutput.training_loss``)
    seconds: float  # wall time of ``trainer.train`` on this rank
    history: list[dict[str, Any]]
    saved: str | None  # "full" / "merged" / "adapter" on rank 0, None on the other ranks
    resumed_from: str | None  # the checkpoint folder the run continued from, if any


def train_and_save(trainer, tokenizer, out_dir: Path, name: str, resume: Path | None, *, model_dir: Path,
                   merge: bool) -> Trained:
    """The tail SFT and DPO share: train (continuing from ``resume``), time it, record this rank's weights under
    torchrun, wait for every rank, then rank 0 alone writes ``<name>_log_history.json`` (``log_history.json``
    for ``name="sft"``) into ``out_dir`` and saves the model into ``model_dir``. The caller drops its references
    to the trainer and model and calls :func:`alignkit.modeling.release` afterwards."""
    from alignkit.runs import is_main_process

    started = time.monotonic()
    output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.monotonic() - started
    record_rank(trainer, out_dir, name)
    trainer.accelerator.wait_for_everyone()
    history = log_history(trainer)
    saved = None
    if is_main_process():
        files.write_json(out_dir / ("log_history.json" if name == "sft" else f"{name}_log_history.json"), history)
        saved = save_trained(trainer.accelerator.unwrap_model(trainer.model), tokenizer, model_dir, merge=merge)
    return Trained(output.training_loss, seconds, history, saved, resume.name if resume else None)


#: Training-progress lines per training run in the terminal (plus one per dev evaluation).
PROGRESS_LINES = 4


def trainer_callbacks(label: str) -> list:
    """The callbacks every alignkit trainer gets: progress lines (:func:`progress_callback`) and, before each
    optimizer step, a new measurement of the CPU load for the thread count (:func:`alignkit.threads.follow_load`)."""
    from transformers import TrainerCallback

    from alignkit import threads

    class FollowLoad(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            threads.follow_load()

    return [progress_callback(label), FollowLoad()]


def progress_callback(label: str):
    """A ``TrainerCallback`` that logs one line per logging step to ``alignkit.progress`` (what ``alignkit run``
    relays to the terminal): step, loss, and for DPO the reward accuracy and margin; dev metrics per epoch."""
    from transformers import TrainerCallback

    progress = logging.getLogger("alignkit.progress")

    class ProgressLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            where = f"{label}: step {state.global_step}/{state.max_steps}"
            # About PROGRESS_LINES training lines per run, whatever logging_steps is (the terminal stays short;
            # the full history is in the stage's log_history.json).
            every = max(args.logging_steps, math.ceil(state.max_steps / PROGRESS_LINES))
            shown = state.global_step % every == 0 or state.global_step in (1, state.max_steps)
            if "loss" in logs and shown:
                parts = [f"loss {logs['loss']:.3f}"]
                if "rewards/accuracies" in logs:
                    parts.append(f"reward accuracy {logs['rewards/accuracies']:.2f}, "
                                 f"margin {logs.get('rewards/margins', float('nan')):.2f}")
                progress.info("%s, %s", where, ", ".join(parts))
            elif "eval_loss" in logs:
                extra = (f", dev reward accuracy {logs['eval_rewards/accuracies']:.2f}"
                         if "eval_rewards/accuracies" in logs else "")
                progress.info("%s, dev loss %.3f%s", where, logs["eval_loss"], extra)

    return ProgressLog()


def check_disk(out_dir: Path, model_path: str | Path, cfg: StudyConfig, train: TrainSettings, what: str,
               runs: int = 1) -> None:
    """Refuse to start training when its checkpoints and model cannot fit under ``out_dir`` (numbers in the
    error); a Hub id whose weights are not local is not sized here."""
    from alignkit import disk

    if not Path(model_path).is_dir():
        log.info("disk: %s is not a local folder; its training size is not estimated", model_path)
        return
    needed = runs * disk.estimate_training_bytes(model_path, method=train.method,
                                                 save_total_limit=train.save_total_limit, dtype=cfg.model.dtype,
                                                 lora_r=train.lora_r,
                                                 merge_adapter=getattr(train, "merge_adapter", False))
    disk.check_free_space(out_dir, needed, what)


def quiet_trainer(trainer) -> None:
    """In a headless run (``TQDM_DISABLE`` set) drop the trainer's own progress bar and log printer: the progress
    callback's lines and log_history.json say the same, once."""
    import os

    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from transformers.utils.notebook import NotebookProgressCallback

    if os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes"):
        # In a notebook kernel the trainer uses NotebookProgressCallback (a bar and a metrics table per run).
        for callback in (ProgressCallback, NotebookProgressCallback, PrinterCallback):
            trainer.remove_callback(callback)
