"""Benchmark: batched vs one-at-a-time generation with alignkit.generation.generate.

Run ``python tests/benchmarks/bench_generation.py [--model DIR]``. Without ``--model`` it builds a randomly
initialised ~3M-parameter Llama and a BPE tokenizer trained here (no network, a few seconds). It generates for
130 template prompts with ``max_new_tokens=48``, once with ``batch_size=32`` and once with ``batch_size=1``, and
prints both wall times and ``batched_speedup=X.XXx``. Greedy outputs of the two runs are compared as a check
(they can differ only by floating-point ties).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

# alignkit before torch: its CPU threading policy must be in place when torch loads the OpenMP runtime. The
# split keeps import sorting from moving it below torch (as it once did, silently voiding the policy).
import alignkit  # noqa: E402,F401

# isort: split
import torch  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from alignkit import template, threads  # noqa: E402
from alignkit.generation import GenerationSettings, generate  # noqa: E402

N_PROMPTS = 130
MAX_NEW_TOKENS = 48
BATCH_SIZE = 32

NOUNS = "cat dog river mountain city garden teacher robot ocean forest library train apple winter music".split()
COUNTRIES = "France Spain Italy Japan Kenya Peru Norway Egypt Canada Chile".split()
WORDS = "bright quiet orange silver window pencil market planet rabbit thunder".split()


def instructions(n: int, seed: int = 0) -> list[str]:
    """``n`` varied instructions of several task kinds and lengths."""
    rng = random.Random(seed)
    makers = [
        lambda: f"Add {rng.randint(1, 99)} and {rng.randint(1, 99)}.",
        lambda: f"What is the capital of {rng.choice(COUNTRIES)}?",
        lambda: f"Write the word '{rng.choice(WORDS)}' in uppercase.",
        lambda: f"Reverse the word '{rng.choice(WORDS)}'.",
        lambda: f"List three kinds of {rng.choice(NOUNS)}.",
        lambda: f"Write a sentence about the {rng.choice(NOUNS)} near the {rng.choice(NOUNS)}.",
        lambda: (
            f"Write exactly {rng.randint(3, 9)} words about a {rng.choice(NOUNS)}, in lowercase, "
            f"and include the word '{rng.choice(WORDS)}'."
        ),
        lambda: f"Which is larger, {rng.randint(1, 999)} or {rng.randint(1, 999)}?",
    ]
    return [makers[i % len(makers)]() for i in range(n)]


def build_random_model(seed: int = 0) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A randomly initialised ~3M-parameter Llama and a byte-level BPE tokenizer trained on template text."""
    rng = random.Random(seed)
    corpus = [
        template.full_text(instr, " ".join(rng.choice(NOUNS + WORDS) for _ in range(rng.randint(1, 8))))
        for instr in instructions(2000, seed=seed + 1)
    ]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2048,
        special_tokens=["<eos>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=704,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval(), tokenizer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a local Hugging Face model folder (default: random ~3M Llama)")
    parser.add_argument("--n", type=int, default=N_PROMPTS, help="number of prompts")
    parser.add_argument("--batched-only", action="store_true", help="skip the one-at-a-time run")
    parser.add_argument("--repeat", type=int, default=5, help="batched passes; the median wall time is reported")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    if args.model is not None:
        tokenizer = AutoTokenizer.from_pretrained(args.model)
        model = AutoModelForCausalLM.from_pretrained(args.model).eval()
        name = str(args.model)
    else:
        model, tokenizer = build_random_model()
        name = "random-llama"
    n_params = sum(p.numel() for p in model.parameters())
    prompts = [template.prompt(instr) for instr in instructions(args.n)]
    print(f"model={name} params={n_params / 1e6:.2f}M device={model.device} torch_threads={torch.get_num_threads()}")
    print(f"prompts={len(prompts)} max_new_tokens={MAX_NEW_TOKENS}")

    # Warm-up: first calls pay one-off costs (allocations, lazy imports) that would bias whichever runs first.
    generate(model, tokenizer, prompts[:4], GenerationSettings(max_new_tokens=4, batch_size=4), progress=False)

    timings = {}
    outputs = {}
    runs = (("batched", BATCH_SIZE),) if args.batched_only else (("batched", BATCH_SIZE), ("sequential", 1))
    for label, batch_size in runs:
        config = GenerationSettings(max_new_tokens=MAX_NEW_TOKENS, batch_size=batch_size)
        walls = []
        # The batched pass takes about a second: its median over --repeat passes is what is reported.
        for _ in range(args.repeat if label == "batched" else 1):
            start = time.perf_counter()
            outputs[label] = generate(model, tokenizer, prompts, config, desc=label, progress=False)
            walls.append(time.perf_counter() - start)
        timings[label] = statistics.median(walls)
        tokens = sum(g.output_tokens for g in outputs[label])
        print(
            f"{label}: batch_size={batch_size} wall_s={timings[label]:.2f} output_tokens={tokens} "
            f"tokens_per_s={tokens / timings[label]:.0f}"
        )
    # How alignkit's load follower moved torch's thread count during the passes (None: the count was fixed).
    print(f"cpu_threads={threads.follower_summary()}")
    if args.batched_only:
        return 0
    same = sum(a == b for a, b in zip(outputs["batched"], outputs["sequential"]))
    print(f"identical_outputs={same}/{len(prompts)}")
    print(f"batched_speedup={timings['sequential'] / timings['batched']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
