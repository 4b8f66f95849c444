"""The optional vLLM backend, checked on the CPU against the Hugging Face engine through a fake vLLM engine.

The fake implements the part of ``vllm.LLM.generate`` the backend uses, with vLLM's stop semantics: decode
greedily token by token, and cut the text right after the first stop string (kept in the output).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from alignkit import template, world
from alignkit.generation import GenerationSettings, find_stop, generate
from alignkit.vllm_backend import VLLMGenerator, sampling_params
from alignkit.world import tinybase


@dataclass
class FakeParams:
    n: int
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    seed: int | None
    stop: list[str]
    include_stop_str_in_output: bool
    skip_special_tokens: bool


@dataclass
class FakeCompletion:
    text: str
    token_ids: list[int]


@dataclass
class FakeRequestOutput:
    prompt_token_ids: list[int]
    outputs: list[FakeCompletion] = field(default_factory=list)


class FakeLLM:
    """Greedy decoding with vLLM's output contract, on a Hugging Face model."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self.calls = []

    def generate(self, prompts, params: FakeParams, **kwargs):
        assert params.temperature == 0.0 and params.include_stop_str_in_output
        self.calls.append((prompts, params, kwargs))
        outputs = []
        for prompt in prompts:
            prompt_ids = self.tokenizer(prompt)["input_ids"]
            ids = list(prompt_ids)
            new: list[int] = []
            text = ""
            with torch.inference_mode():
                for _ in range(params.max_tokens):
                    token = int(self.model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
                    if token == self.tokenizer.eos_token_id:
                        break
                    ids.append(token)
                    new.append(token)
                    text = self.tokenizer.decode(new, skip_special_tokens=True)
                    hit = find_stop(text, params.stop)
                    if hit is not None:
                        text = text[: hit[0] + len(hit[1])]
                        break
            outputs.append(FakeRequestOutput(prompt_ids, [FakeCompletion(text, new)]))
        return outputs


@pytest.fixture(scope="module")
def tiny():
    documents = world.corpus(0, 80)
    tokenizer = tinybase.train_tokenizer(documents, 400)
    torch.manual_seed(0)
    # A large init makes a random model's greedy choices varied and clear-cut (no near-ties to flip).
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                         initializer_range=0.5, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(config).eval(), tokenizer


def test_sampling_params_mirror_the_generation_config():
    params = sampling_params(GenerationSettings(max_new_tokens=7, stop_strings=("\nEND", "\n\n")), FakeParams)
    assert params.max_tokens == 7 and params.temperature == 0.0 and params.top_k == -1 and params.seed is None
    assert params.stop == ["\nEND", "\n\n"] and params.include_stop_str_in_output
    sampled = sampling_params(GenerationSettings(do_sample=True, temperature=0.7, top_p=0.9, top_k=5, seed=3),
                              FakeParams)
    assert (sampled.temperature, sampled.top_p, sampled.top_k, sampled.seed) == (0.7, 0.9, 5, 3)


def test_vllm_backend_agrees_with_the_hf_engine(tiny):
    model, tokenizer = tiny
    prompts = [template.prompt(item.instruction) for item in world.heldout_items(0, 7)]
    config = GenerationSettings(max_new_tokens=12, stop_strings=("\nEND", "or"), batch_size=4)
    hf = generate(model, tokenizer, prompts, config, progress=False)
    engine = FakeLLM(model, tokenizer)
    via_vllm = VLLMGenerator(engine, params_factory=FakeParams).generate(prompts, config)
    assert [g.prompt for g in via_vllm] == prompts
    assert [(g.response, g.stopped, g.stop) for g in via_vllm] == [(g.response, g.stopped, g.stop) for g in hf]
    assert [g.prompt_tokens for g in via_vllm] == [g.prompt_tokens for g in hf]
    assert [g.output_tokens for g in via_vllm] == [g.output_tokens for g in hf]
    assert {g.stopped for g in hf} == {True, False}  # both a stop and the token limit were exercised


def test_lora_request_is_passed_per_call(tiny):
    model, tokenizer = tiny
    engine = FakeLLM(model, tokenizer)
    VLLMGenerator(engine, params_factory=FakeParams, lora_request="adapter-1").generate(
        ["Instruction: x\nResponse:"], GenerationSettings(max_new_tokens=2))
    assert engine.calls[0][2] == {"lora_request": "adapter-1"}


def test_missing_vllm_says_how_to_get_it(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_vllm(name, *args, **kwargs):
        if name == "vllm" or name.startswith("vllm."):
            raise ImportError("No module named 'vllm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_vllm)
    with pytest.raises(ImportError, match="pip install vllm"):
        sampling_params(GenerationSettings())
