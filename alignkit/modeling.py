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

from alignkit.config import ConfigError, ModelSettings

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


def device_for(cfg: ModelSettings) -> str:
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


#: Tokens that close a chat turn. A base model ends a document with a plain EOS (``<|endoftext|>``, ``</s>``,
#: ``<|end_of_text|>``); a checkpoint whose EOS, or whose generation config's stop ids, include one of these was
#: tuned to answer in turns (Qwen/ChatML, Llama 3, Gemma, Phi-3, Cohere, Llama 3.1 tool calls).
CHAT_TURN_END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|END_OF_TURN_TOKEN|>",
                        "<|eom_id|>")
#: A name part that marks a tuned variant; removing it names the base checkpoint in the fix we suggest.
_INSTRUCT_SUFFIX = re.compile(r"[-_.](instruct|chat|it|sft|dpo|rlhf)(?=$|[-_.])", re.IGNORECASE)


@dataclass(frozen=True)
class BaseModelCheck:
    """What :func:`check_base_model` found: the instruct/chat signals (empty for a base model) and whether the
    tokenizer ships a chat template (which alignkit never applies, so it says nothing about the weights)."""

    name: str
    signals: tuple[str, ...]
    chat_template: bool

    @property
    def instruct(self) -> bool:
        return bool(self.signals)


def _checkpoint_json(name_or_path: str, filename: str, revision: str | None) -> dict[str, Any] | None:
    """``filename`` of a local model folder, or of a Hub id already in the local HF cache (never downloads)."""
    import json

    local = Path(str(name_or_path)).expanduser()
    path: Any = local / filename if local.is_dir() else None
    if path is None and not local.is_absolute() and str(name_or_path).count("/") <= 1:
        try:
            from huggingface_hub import try_to_load_from_cache

            path = try_to_load_from_cache(str(name_or_path), filename, revision=revision)
        except Exception as error:  # an id the Hub would refuse (e.g. a path-like name): nothing cached
            log.debug("no cached %s for %s: %s", filename, name_or_path, error)
            path = None
    if not isinstance(path, (str, Path)) or not Path(path).is_file():
        return None
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        log.warning("%s: unreadable (%s); its base-model signals are not checked", path, error)
        return None
    return data if isinstance(data, dict) else None


def _token_text(value: Any) -> str | None:
    """A special token as written in tokenizer_config.json: a string or ``{"content": ...}``.

    >>> _token_text({"content": "<|im_end|>", "special": True}), _token_text("</s>"), _token_text(None)
    ('<|im_end|>', '</s>', None)
    """
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _ids(value: Any) -> list[int]:
    """Token ids from a config's ``eos_token_id`` (one id, a list, or absent).

    >>> _ids(151643), _ids([151645, 151643]), _ids(None)
    ([151643], [151645, 151643], [])
    """
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


def instruct_signals(name_or_path: str, tokenizer: Any | None = None, *, tokenizer_config: dict | None = None,
                     generation_config: dict | None = None, model_config: dict | None = None) -> list[str]:
    """Why a checkpoint looks instruction-tuned/chat, one reason per signal; empty for a base model.

    Signals: a name with an instruct/chat part (the folder or Hub name, or ``_name_or_path`` in config.json), an
    EOS that closes a chat turn, and stop ids (generation_config.json, config.json) that include such a token.
    A chat template alone is not a signal: Qwen2.5 base checkpoints ship a ChatML template too.

    >>> instruct_signals("Qwen/Qwen2.5-7B", tokenizer_config={"eos_token": "<|endoftext|>", "chat_template": "..."})
    []
    >>> instruct_signals("ckpt", tokenizer_config={"eos_token": "<|im_end|>"})
    ["EOS token is '<|im_end|>', which closes a chat turn"]
    """
    signals: list[str] = []
    names = [Path(str(name_or_path)).name]
    original = (model_config or {}).get("_name_or_path")
    if isinstance(original, str) and original.strip():
        names.append(Path(original).name)
    for name in dict.fromkeys(names):
        if _INSTRUCT_NAME.search(name):
            signals.append(f"the name {name!r} marks an instruction-tuned/chat variant")
            break
    tokenizer_config = tokenizer_config or {}
    eos = getattr(tokenizer, "eos_token", None) if tokenizer is not None else None
    eos = eos if isinstance(eos, str) else _token_text(tokenizer_config.get("eos_token"))
    if eos in CHAT_TURN_END_TOKENS:
        signals.append(f"EOS token is {eos!r}, which closes a chat turn")
    added = {int(k): _token_text(v) for k, v in (tokenizer_config.get("added_tokens_decoder") or {}).items()
             if str(k).isdigit()}

    def token_of(token_id: int) -> str | None:
        if tokenizer is not None and hasattr(tokenizer, "convert_ids_to_tokens"):
            try:
                return tokenizer.convert_ids_to_tokens(token_id)
            except (IndexError, OverflowError, TypeError, ValueError):
                return None
        return added.get(token_id)

    for source, config in (("generation_config.json", generation_config), ("config.json", model_config)):
        stops = map(token_of, _ids((config or {}).get("eos_token_id")))
        turn_ends = sorted({token for token in stops if token in CHAT_TURN_END_TOKENS})
        if turn_ends:
            signals.append(f"{source} stops generation at {', '.join(map(repr, turn_ends))}, which closes a chat turn")
    return signals


def check_base_model(name_or_path: str, cfg: ModelSettings, tokenizer: Any | None = None) -> BaseModelCheck:
    """Refuse instruct/chat checkpoints as base models unless ``model.allow_instruct`` is set.

    Decided by :func:`instruct_signals` on the name and the checkpoint's own files (a local folder, or a Hub id
    already in the HF cache; nothing is downloaded) and, when given, the loaded tokenizer. A chat template is only
    logged: alignkit prompts with its own plain template and never applies one.
    """
    revision = None if Path(str(name_or_path)).exists() else cfg.revision
    tokenizer_config = _checkpoint_json(name_or_path, "tokenizer_config.json", revision) or {}
    template = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
    has_template = bool(template or tokenizer_config.get("chat_template"))
    signals = instruct_signals(name_or_path, tokenizer, tokenizer_config=tokenizer_config,
                               generation_config=_checkpoint_json(name_or_path, "generation_config.json", revision),
                               model_config=_checkpoint_json(name_or_path, "config.json", revision))
    found = BaseModelCheck(str(name_or_path), tuple(signals), has_template)
    if has_template:
        log.info("model.base %s: its tokenizer carries a chat template; alignkit never applies it (prompts use the "
                 "study's plain Instruction:/Response: template)", name_or_path)
    if not signals:
        return found
    if cfg.allow_instruct:
        log.warning("model.base %s looks instruction-tuned (%s); used anyway because model.allow_instruct=true",
                    name_or_path, "; ".join(signals))
        return found
    # Only the last part of the name is the model's name; folders above it may contain anything.
    head, slash, tail = str(name_or_path).rpartition("/")
    base_name = head + slash + _INSTRUCT_SUFFIX.sub("", tail)
    suggestion = f"Use its base checkpoint (e.g. model.base={base_name})" if base_name != str(name_or_path) else \
        "Use a base (pretrained-only) checkpoint"
    raise ConfigError(f"model.base: {name_or_path!r} looks like an instruction-tuned or chat model: "
                      f"{'; '.join(signals)}. The study needs a true base model. {suggestion}, or set "
                      "model.allow_instruct=true to use this one anyway.")


def quantization_config(cfg: ModelSettings):
    """bitsandbytes 4-bit NF4 with double quantisation, computing in the model dtype."""
    from transformers import BitsAndBytesConfig

    compute = torch_dtype(cfg.dtype)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute, bnb_4bit_quant_storage=compute)


def load_tokenizer(path: str | Path, cfg: ModelSettings):
    """The tokenizer with a pad token (EOS when it has none); never given a chat template."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=cfg.trust_remote_code,
                                              revision=_revision(path, cfg))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _revision(path: str | Path, cfg: ModelSettings) -> str | None:
    return None if Path(str(path)).exists() else cfg.revision


def load_model(path: str | Path, cfg: ModelSettings, *, quantize_4bit: bool = False, adapter: str | Path | None = None,
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
def loaded(path: str | Path, cfg: ModelSettings, *, adapter: str | Path | None = None,
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
