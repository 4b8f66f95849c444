"""Disk space before a long job: free space, what training will write, and a refusal with the numbers.

- :func:`free_bytes`: free space for this user on the file system of a path (or of its nearest existing parent);
- :func:`model_parameters`, :func:`weight_bytes`: a local model folder's parameter count and weight file size;
- :func:`lora_parameters`: adapter size of LoRA on every linear layer of a Llama-style decoder;
- :func:`estimate_training` / :func:`estimate_training_bytes`: the peak disk use of a training stage
  (checkpoints and final model), for ``full``, ``lora`` and ``qlora``;
- :func:`check_free_space`: raise :class:`DiskSpaceError` when that cannot fit;
- :func:`human_bytes`: ``2.0 KiB``-style sizes for messages (kept in :mod:`alignkit.files`, which every
  stage imports, so that editing this module does not change every stage's code hash).

Everything here is arithmetic over file sizes, safetensors headers and ``config.json``; nothing loads weights.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignkit.files import human_bytes, nearest_existing

log = logging.getLogger(__name__)

#: Bytes per value of the training dtypes alignkit accepts (``model.dtype``).
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
#: PEFT keeps LoRA weights in float32 whatever the base's dtype (``autocast_adapter_dtype``), and AdamW keeps
#: its two moments in the dtype of the parameter: bytes per adapter parameter for weights, for optimizer state.
ADAPTER_WEIGHT_BYTES = 4
ADAPTER_OPTIMIZER_BYTES = 2 * 4
#: Adapter parameters as a fraction of the model's, per unit of LoRA rank, when the model's dimensions are
#: unknown. LoRA r=16 on all linear layers is 0.53% of Qwen2.5-7B (40.4M of 7.62B), 0.59% of Llama-2-7B
#: (40.0M of 6.74B) and 1.78% of Qwen2.5-0.5B (8.8M of 494M); 2% at r=16 covers these, from 0.5B up.
ADAPTER_FRACTION_PER_RANK = 0.02 / 16
#: Files of every saved folder besides weights and optimizer state: tokenizer (Qwen2.5's tokenizer.json is
#: 7 MB), trainer_state.json, scheduler and RNG state, configs. A rounded-up allowance, in bytes.
FOLDER_OVERHEAD_BYTES = 32 * 1024**2


class DiskSpaceError(RuntimeError):
    """Not enough free disk space for a job; the message gives needed vs free and the path."""

    def __init__(self, message: str, path: Path, needed: int, free: int) -> None:
        super().__init__(message)
        self.path, self.needed, self.free = path, needed, free


def free_bytes(path: str | os.PathLike) -> int:
    """Bytes this user may still write on the file system of ``path`` (of its nearest existing parent).

    ``shutil.disk_usage(...).free`` is what unprivileged users get (blocks reserved for root excluded).
    """
    return shutil.disk_usage(nearest_existing(path)).free


def weight_files(folder: str | os.PathLike) -> list[Path]:
    """The weight files ``from_pretrained`` would read in ``folder``: its ``*.safetensors``, or when it has
    none its ``*.bin`` (repositories often ship both copies of the same weights; counting both would double
    the size). ``training_args.bin`` is not weights."""
    folder = Path(folder)
    found = sorted(folder.glob("*.safetensors"))
    if not found:
        found = sorted(p for p in folder.glob("*.bin") if p.name != "training_args.bin")
    return [p for p in found if p.is_file()]


def weight_bytes(folder: str | os.PathLike) -> int:
    """Total size of :func:`weight_files` in bytes (0 when there are none); symlinks (the Hugging Face cache)
    count as the files they point to."""
    return sum(p.stat().st_size for p in weight_files(folder))


def model_parameters(folder: str | os.PathLike, dtype: str = "float32") -> int:
    """Parameter count of a local model folder: exact from the safetensors headers (no weights are read), or
    for ``*.bin`` weights their size divided by the bytes of ``dtype`` (assumes they are stored in it).

    Raises ``FileNotFoundError`` naming the folder when it has no weight files.
    """
    paths = weight_files(folder)
    if not paths:
        raise FileNotFoundError(f"{folder}: no *.safetensors or *.bin weight files; expected a local model "
                                "folder (or pass the parameter count instead)")
    if paths[0].suffix != ".safetensors":
        return sum(p.stat().st_size for p in paths) // DTYPE_BYTES[dtype]
    from safetensors import safe_open

    total = 0
    for path in paths:
        with safe_open(str(path), framework="numpy") as handle:
            for name in handle.keys():
                total += math.prod(handle.get_slice(name).get_shape())
    return total


def lora_parameters(config: Mapping[str, Any], rank: int) -> int:
    """Adapter parameters of LoRA rank ``rank`` on every linear layer of each decoder layer of a Llama-style
    model (Llama, Qwen2, Mistral: q/k/v/o attention and gate/up/down MLP projections; PEFT's ``all-linear``
    leaves ``lm_head`` out). A linear ``d_in -> d_out`` gets ``rank * (d_in + d_out)`` parameters, so with
    hidden size h, intermediate size i, H query heads and K key/value heads of size d, per layer:
    ``rank * (7h + 2Hd + 2Kd + 3i)``. Fewer target modules need fewer, so this bounds any LoRA target set.

    Qwen2.5-7B (h 3584, i 18944, 28 layers, 28 heads, 4 kv heads of 128), r=16: 40,370,176 (as PEFT reports).

    >>> lora_parameters({"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
    ...                  "num_attention_heads": 28, "num_key_value_heads": 4}, 16)
    40370176
    """
    try:
        h, i, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
        heads = config["num_attention_heads"]
    except KeyError as error:
        raise KeyError(f"model config lacks {error.args[0]!r}; expected a Llama-style config.json "
                       "(hidden_size, intermediate_size, num_hidden_layers, num_attention_heads)") from None
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or h // heads
    return rank * layers * (7 * h + 2 * heads * head_dim + 2 * kv_heads * head_dim + 3 * i)


@dataclass(frozen=True)
class TrainingEstimate:
    """The disk a training stage will use at its peak, and how that splits (all sizes in bytes)."""

    method: str
    parameters: int
    trainable_parameters: int
    checkpoint_bytes: int
    checkpoints: int
    final_bytes: int
    peak_bytes: int

    def describe(self) -> str:
        """One line: the peak and what it is made of."""
        return (f"{human_bytes(self.peak_bytes)} at the peak for {self.method} training: {self.checkpoints} "
                f"checkpoint(s) of {human_bytes(self.checkpoint_bytes)} kept, one more being written or the "
                f"final model ({human_bytes(self.final_bytes)}), whichever is larger")


def estimate_training(model: str | os.PathLike | int, *, method: str, save_total_limit: int,
                      dtype: str = "float32", lora_r: int = 16, merge_adapter: bool = False,
                      model_config: Mapping[str, Any] | None = None,
                      overhead_bytes: int = FOLDER_OVERHEAD_BYTES) -> TrainingEstimate:
    """Peak disk use of one training stage with the Hugging Face Trainer (TRL SFT/DPO), ``adamw_torch``.

    ``model`` is a local model folder (parameters from :func:`model_parameters`, dimensions from its
    ``config.json``) or a parameter count (dimensions then from ``model_config``). With P parameters,
    W = P x bytes of ``dtype`` (the training dtype) and A adapter parameters, this counts:

    - ``full``: a checkpoint holds the weights (W) and AdamW's two moments, each the parameter's dtype (2W):
      3W. The final model is W.
    - ``lora`` / ``qlora``: the base weights are not saved; a checkpoint holds the float32 adapter (4A bytes)
      and its AdamW moments (8A): 12A. A is :func:`lora_parameters` of the model's dimensions (all linear
      layers, an upper bound for fewer targets), or when those are unknown
      :data:`ADAPTER_FRACTION_PER_RANK` x rank x P. The final model is the adapter (4A), or the merged full
      weights (W) with ``merge_adapter``.
    - plus :data:`FOLDER_OVERHEAD_BYTES` per saved folder (``overhead_bytes``).

    The Trainer writes a new checkpoint before deleting the oldest beyond ``save_total_limit`` (L), and the
    final model is saved while the last L remain, so the peak is L checkpoints plus the larger of one more
    checkpoint and the final model: ``L*C + max(C, F)`` with C, F including the overhead.

    Not counted: the input model itself (already on disk; QLoRA's 4-bit copy lives in memory only), the data,
    logs, and the frozen "ref" adapter TRL saves beside a LoRA DPO adapter (4A more per checkpoint).

    >>> e = estimate_training(1_000_000, method="full", save_total_limit=2, dtype="bfloat16", overhead_bytes=0)
    >>> e.checkpoint_bytes, e.final_bytes, e.peak_bytes
    (6000000, 2000000, 18000000)
    """
    if method not in ("full", "lora", "qlora"):
        raise ValueError(f"method: expected 'full', 'lora' or 'qlora'; got {method!r}")
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"dtype: expected one of {', '.join(DTYPE_BYTES)}; got {dtype!r}")
    if save_total_limit < 1:
        raise ValueError(f"save_total_limit: expected >= 1; got {save_total_limit}")
    if isinstance(model, int):
        parameters = model
    else:
        folder = Path(model)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: not a local model folder; pass the parameter count instead "
                                    "(e.g. 7_615_616_512 for Qwen2.5-7B)")
        parameters = model_parameters(folder, dtype)
        config_path = folder / "config.json"
        if model_config is None and config_path.is_file():
            model_config = json.loads(config_path.read_text(encoding="utf-8"))
    weights = parameters * DTYPE_BYTES[dtype]
    if method == "full":
        trainable = parameters
        checkpoint, final = 3 * weights, weights
    else:
        try:
            trainable = lora_parameters(model_config, lora_r) if model_config else None
        except KeyError:
            trainable = None
        if trainable is None:
            trainable = min(parameters, math.ceil(ADAPTER_FRACTION_PER_RANK * lora_r * parameters))
        checkpoint = (ADAPTER_WEIGHT_BYTES + ADAPTER_OPTIMIZER_BYTES) * trainable
        final = weights if merge_adapter else ADAPTER_WEIGHT_BYTES * trainable
    checkpoint += overhead_bytes
    final += overhead_bytes
    peak = save_total_limit * checkpoint + max(checkpoint, final)
    return TrainingEstimate(method=method, parameters=parameters, trainable_parameters=trainable,
                            checkpoint_bytes=checkpoint, checkpoints=save_total_limit, final_bytes=final,
                            peak_bytes=peak)


def estimate_training_bytes(model: str | os.PathLike | int, **kwargs: Any) -> int:
    """:func:`estimate_training`'s peak in bytes (same arguments).

    >>> estimate_training_bytes(1_000_000, method="full", save_total_limit=1, overhead_bytes=0)  # fp32
    24000000
    """
    return estimate_training(model, **kwargs).peak_bytes


def check_free_space(path: str | os.PathLike, needed_bytes: int, what: str) -> int:
    """Return the free bytes at ``path`` if ``needed_bytes`` fit there, else raise :class:`DiskSpaceError`
    naming ``what`` needs it, needed vs free in human units and bytes, and the path."""
    path = Path(path)
    free = free_bytes(path)
    if needed_bytes > free:
        existing = nearest_existing(path)
        where = str(path) if existing == path.absolute() else f"{path} (on the file system of {existing})"
        raise DiskSpaceError(
            f"not enough disk space for {what}: needs about {human_bytes(needed_bytes)} ({needed_bytes:,} bytes), "
            f"only {human_bytes(free)} ({free:,} bytes) free at {where}; free at least "
            f"{human_bytes(needed_bytes - free)} there or point ALIGNKIT_HOME at a larger volume",
            path, needed_bytes, free)
    log.info("disk: %s needs about %s; %s free at %s", what, human_bytes(needed_bytes), human_bytes(free), path)
    return free


__all__ = ["DTYPE_BYTES", "DiskSpaceError", "FOLDER_OVERHEAD_BYTES", "TrainingEstimate", "check_free_space",
           "estimate_training", "estimate_training_bytes", "free_bytes", "human_bytes", "lora_parameters",
           "model_parameters", "nearest_existing", "weight_bytes", "weight_files"]
