"""Optional vLLM generation backend for evaluation on GPUs (``evaluation.backend=vllm``).

vLLM is not a dependency: it is imported only when this backend is used, and a missing install is an error
that says how to get it. The backend returns the same :class:`alignkit.generation.Generation` records as the
Hugging Face engine: the exact prompt, the raw output up to and including the stop string, the response before
it, whether a stop string was emitted, and token counts. Stops are vLLM's own (``SamplingParams.stop``, with the
stop string kept in the output) and the cut is made by the same :func:`alignkit.generation.cut_at_stop`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from alignkit.config import ModelSettings
from alignkit.generation import Generation, GenerationSettings, cut_at_stop

log = logging.getLogger(__name__)


def _vllm():
    try:
        import vllm
    except ImportError as error:
        raise ImportError("evaluation.backend=vllm needs vLLM on a CUDA machine: `pip install vllm` "
                          "(or use evaluation.backend=hf)") from error
    return vllm


def sampling_params(config: GenerationSettings, factory: Callable[..., Any] | None = None):
    """vLLM ``SamplingParams`` equivalent to ``config`` (greedy is temperature 0; top_k 0 means no cut)."""
    factory = factory or _vllm().SamplingParams
    return factory(
        n=1, max_tokens=config.max_new_tokens, temperature=config.temperature if config.do_sample else 0.0,
        top_p=config.top_p if config.do_sample else 1.0, top_k=config.top_k if config.top_k > 0 else -1,
        seed=config.seed if config.do_sample else None, stop=list(config.stop_strings),
        include_stop_str_in_output=True, skip_special_tokens=True)


class VLLMGenerator:
    """Generate with a vLLM ``LLM`` engine (or anything with the same ``generate`` interface)."""

    def __init__(self, engine: Any, *, params_factory: Callable[..., Any] | None = None,
                 lora_request: Any | None = None) -> None:
        self.engine = engine
        self.params_factory = params_factory
        self.lora_request = lora_request

    @classmethod
    def load(cls, path: str | Path, cfg: ModelSettings, *, adapter: str | Path | None = None,
             gpu_memory_utilization: float = 0.85) -> VLLMGenerator:
        """A vLLM engine for a model folder or Hub id, with a LoRA adapter applied per request if given."""
        vllm = _vllm()
        engine = vllm.LLM(model=str(path), dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code,
                          enable_lora=adapter is not None, gpu_memory_utilization=gpu_memory_utilization,
                          revision=None if Path(str(path)).exists() else cfg.revision)
        lora = None
        if adapter is not None:
            from vllm.lora.request import LoRARequest

            lora = LoRARequest("adapter", 1, str(adapter))
        return cls(engine, lora_request=lora)

    def generate(self, prompts: Sequence[str], config: GenerationSettings) -> list[Generation]:
        params = sampling_params(config, self.params_factory)
        kwargs = {"lora_request": self.lora_request} if self.lora_request is not None else {}
        outputs = self.engine.generate(list(prompts), params, **kwargs)
        results = []
        for prompt, output in zip(prompts, outputs):
            completion = output.outputs[0]
            raw = completion.text
            response, stopped, stop = cut_at_stop(raw, config.stop_strings)
            results.append(Generation(prompt=prompt, raw_output=raw, response=response, stopped=stopped, stop=stop,
                                      prompt_tokens=len(output.prompt_token_ids),
                                      output_tokens=len(completion.token_ids)))
        log.info("vLLM: %d prompts, %d output tokens", len(results), sum(r.output_tokens for r in results))
        return results
