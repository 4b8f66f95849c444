"""Loading and releasing models: the one place that calls ``from_pretrained``.

Safety defaults: ``trust_remote_code`` off, safetensors only (no pickle) unless the config opts in, and
base models are used without chat templates. Memory: :func:`loaded` is a context manager that loads a model,
counts how many are resident at once (weak references, so the count is what is really alive), and on exit
drops its references, runs ``gc.collect()`` and empties the CUDA cache.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import re
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignkit.config import ConfigError, ModelConfig

log = logging.getLogger(__name__)

#: Names that mark instruction-tuned/chat checkpoints; the study needs a true base model.
_INSTRUCT_NAME = re.compile(r"(instruct|chat|-it\b|-sft\b|-dpo\b|rlhf)", re.IGNORECASE)


class ResidencyTracker:
    """Counts live model objects through weak references; ``max_resident`` is the peak count seen."""

    def __init__(self) -> None:
        self._refs: list[weakref.ref] = []
        self.max_resident = 0
        self.loads = 0

    def add(self, model: Any) -> None:
        self._refs.append(weakref.ref(model))
        self.loads += 1
        self.max_resident = max(self.max_resident, self.resident())

    def resident(self) -> int:
        self._refs = [ref for ref in self._refs if ref() is not None]
        return len(self._refs)

    def reset(self) -> None:
        self._refs = [ref for ref in self._refs if ref() is not None]
        self.max_resident = len(self._refs)
        self.loads = 0


TRACKER = ResidencyTracker()


def device_for(cfg: ModelConfig) -> str:
    """``cuda`` when asked for or available under ``auto``, else ``cpu``."""
    import torch

    if cfg.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("model.device: cuda was requested but torch.cuda.is_available() is False")
    return cfg.device


def torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def check_base_model(name_or_path: str, cfg: ModelConfig, tokenizer: Any | None = None) -> None:
    """Refuse instruct/chat checkpoints as base models unless ``model.allow_instruct`` is set."""
    if cfg.allow_instruct:
        return
    has_chat_template = bool(getattr(tokenizer, "chat_template", None)) if tokenizer is not None else False
    if _INSTRUCT_NAME.search(Path(str(name_or_path)).name) or has_chat_template:
        raise ConfigError(f"model.base: {name_or_path!r} looks like an instruction-tuned or chat model "
                          "(name or chat template); the study needs a true base model. Set "
                          "model.allow_instruct=true to use it anyway.")


def quantization_config(cfg: ModelConfig):
    """bitsandbytes 4-bit NF4 with double quantisation, computing in the model dtype."""
    from transformers import BitsAndBytesConfig

    compute = torch_dtype(cfg.dtype)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute, bnb_4bit_quant_storage=compute)


def load_tokenizer(path: str | Path, cfg: ModelConfig):
    """The tokenizer with a pad token (EOS when it has none); never given a chat template."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=cfg.trust_remote_code,
                                              revision=_revision(path, cfg))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _revision(path: str | Path, cfg: ModelConfig) -> str | None:
    return None if Path(str(path)).exists() else cfg.revision


def load_model(path: str | Path, cfg: ModelConfig, *, quantize_4bit: bool = False, adapter: str | Path | None = None,
               trainable: bool = False):
    """Load a causal LM from a folder or Hub id with the config's dtype and safety settings.

    ``adapter`` applies a PEFT adapter on top (merged into the weights unless ``trainable``).
    """
    from transformers import AutoModelForCausalLM

    if cfg.trust_remote_code:
        log.warning("trust_remote_code is ON for %s: code shipped with the model will run", path)
    kwargs: dict[str, Any] = {"dtype": torch_dtype(cfg.dtype), "trust_remote_code": cfg.trust_remote_code,
                              "use_safetensors": None if cfg.allow_pickle_weights else True,
                              "revision": _revision(path, cfg)}
    device = device_for(cfg)
    if quantize_4bit:
        kwargs["quantization_config"] = quantization_config(cfg)
        kwargs["device_map"] = {"": 0 if device == "cuda" else "cpu"}
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    except OSError as error:
        if "safetensors" in str(error) and not cfg.allow_pickle_weights:
            raise ConfigError(f"model.base: {path} has no safetensors weights; pickle weights can run code when "
                              "loaded. Convert them, or set model.allow_pickle_weights=true to accept the risk.") \
                from error
        raise
    if not quantize_4bit:
        model.to(device)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable)
        if not trainable and not quantize_4bit:
            model = model.merge_and_unload()
    if not trainable:
        model.eval()
    TRACKER.add(model)
    return model


def release() -> None:
    """Collect garbage and return cached CUDA memory to the driver."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


@dataclass
class Loaded:
    """A model and its tokenizer, held only by the :func:`loaded` context."""

    model: Any
    tokenizer: Any


@contextlib.contextmanager
def loaded(path: str | Path, cfg: ModelConfig, *, adapter: str | Path | None = None,
           quantize_4bit: bool = False) -> Iterator[Loaded]:
    """Load a model for inference, yield it, then free it completely (checked with a weak reference).

    Callers must not keep references to ``handle.model`` beyond the block.
    """
    tokenizer = load_tokenizer(path, cfg)
    handle = Loaded(load_model(path, cfg, adapter=adapter, quantize_4bit=quantize_4bit), tokenizer)
    ref = weakref.ref(handle.model)
    try:
        yield handle
    finally:
        handle.model = None
        handle.tokenizer = None
        release()
        if ref() is not None:
            log.warning("model from %s is still referenced after release; memory is not freed", path)
