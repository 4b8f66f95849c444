"""Benchmark: peak memory of evaluating ONE model vs FOUR models sequentially with alignkit.stages.evaluation.

Run ``python tests/benchmarks/bench_eval_memory.py``. It builds a randomly initialised ~110M-parameter Llama
(hidden 768, 12 layers, vocabulary 32,000, tied embeddings; about 440 MB of float32 safetensors) and a 32,000-token
byte-level BPE tokenizer written out directly (no training, no download), copies the folder so that four distinct
models exist on disk, then runs :func:`alignkit.stages.evaluation.generate_responses` in two fresh subprocesses: one
with one model, one with the four copies (load, generate, write, release, next). Each subprocess reports its
lifetime peak RSS (``ru_maxrss``) and the peak sampled by the evaluation's 20 ms RSS monitor. The script prints
both peaks and ``ratio=X.XX`` = peak(four) / peak(one) on ``ru_maxrss``; sequential evaluation that really frees
each model stays near 1.0 (target <= 1.25), while one that kept models alive would grow by ~440 MB per model.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

VOCAB = 32000
TARGET_RATIO = 1.25


def build_tokenizer():
    """A byte-level BPE tokenizer with exactly :data:`VOCAB` tokens: 3 specials, the 256 byte symbols and
    two-symbol merges (alphanumerics first), so every id the random model can emit decodes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "</s>", "<pad>"]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet(), key=lambda c: (not c.isalnum(), c))
    vocab = {token: index for index, token in enumerate(specials)}
    for symbol in alphabet:
        vocab[symbol] = len(vocab)
    merges = []
    for left in alphabet:
        for right in alphabet:
            if len(vocab) >= VOCAB:
                break
            vocab[left + right] = len(vocab)
            merges.append((left, right))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def count_parameters(folder: Path) -> int:
    """Parameters stored in ``folder/model.safetensors`` (tied embeddings are stored once)."""
    import math

    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="pt") as handle:
        return sum(math.prod(handle.get_slice(name).get_shape()) for name in handle.keys())


def build_model_folder(folder: Path) -> None:
    """Write the random Llama and its tokenizer to ``folder``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                         num_attention_heads=12, num_key_value_heads=12, max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def child(folders: list[Path], n_prompts: int, max_new_tokens: int, out_dir: Path) -> None:
    """Evaluate ``folders`` sequentially (as models m0, m1, ...) and print one JSON line of measurements."""
    import resource

    from alignkit import world
    from alignkit.artifacts import Arm, ModelSpec
    from alignkit.config import resolve
    from alignkit.stages import evaluation

    cfg = resolve("smoke", overrides=[f"model.base={folders[0]}", "model.device=cpu",
                                      f"evaluation.max_new_tokens={max_new_tokens}", "evaluation.batch_size=8"])
    items = world.heldout_items(0, n_prompts)
    arm_list = [Arm(f"m{i}", None, ModelSpec(folder)) for i, folder in enumerate(folders)]
    started = time.monotonic()
    memory = evaluation.generate_responses(arm_list, items, [], cfg, out_dir, progress=False)
    print(json.dumps({
        "models": len(folders), "seconds": round(time.monotonic() - started, 1),
        "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "sampled_peak_rss_mb": memory["peak_rss_mb"], "max_models_resident": memory["max_models_resident"],
        "models_loaded": memory["models_loaded_this_process"],
        "per_model": {name: {k: m[k] for k in ("rss_baseline_mb", "rss_peak_mb", "rss_after_release_mb")}
                      for name, m in memory["per_model"].items()},
    }))


def measure(folders: list[Path], args: argparse.Namespace, work: Path) -> dict:
    out_dir = Path(tempfile.mkdtemp(dir=work, prefix=f"out{len(folders)}_"))
    command = [sys.executable, __file__, "--child", "--prompts", str(args.prompts), "--max-new-tokens",
               str(args.max_new_tokens), "--out", str(out_dir), *map(str, folders)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child with {len(folders)} model(s) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("folders", nargs="*", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--models", type=int, default=4, help="models evaluated in the sequential run (default 4)")
    parser.add_argument("--prompts", type=int, default=8, help="held-out prompts per model (default 8)")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--keep", type=Path, help="build the models in this folder and keep them")
    args = parser.parse_args(argv)
    if args.child:
        child(args.folders, args.prompts, args.max_new_tokens, args.out)
        return 0

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_eval_memory_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        first = work / "model0"
        if not (first / "model.safetensors").is_file():
            build_model_folder(first)
        folders = [first]
        for index in range(1, args.models):
            copy = work / f"model{index}"
            if not copy.exists():
                shutil.copytree(first, copy)
            folders.append(copy)
        size_mb = (first / "model.safetensors").stat().st_size / 2**20
        print(f"model: random Llama, {count_parameters(first) / 1e6:.1f}M parameters, "
              f"{size_mb:.0f} MB safetensors (float32), vocab {VOCAB}; "
              f"prompts={args.prompts} max_new_tokens={args.max_new_tokens}")
        one = measure(folders[:1], args, work)
        many = measure(folders, args, work)
        for result in (one, many):
            print(f"{result['models']} model(s): peak RSS {result['ru_maxrss_mb']:.0f} MB (ru_maxrss), "
                  f"sampled peak {result['sampled_peak_rss_mb']:.0f} MB, max_models_resident="
                  f"{result['max_models_resident']}, models_loaded={result['models_loaded']}, {result['seconds']} s")
        for name, m in many["per_model"].items():
            print(f"  {name}: RSS before {m['rss_baseline_mb']:.0f} MB, peak {m['rss_peak_mb']:.0f} MB, "
                  f"after release {m['rss_after_release_mb']:.0f} MB")
        ratio = many["ru_maxrss_mb"] / one["ru_maxrss_mb"]
        sampled = many["sampled_peak_rss_mb"] / one["sampled_peak_rss_mb"]
        print(f"sampled_ratio={sampled:.2f}")
        print(f"ratio={ratio:.2f} (target <= {TARGET_RATIO}: {'met' if ratio <= TARGET_RATIO else 'NOT met'})")
        return 0 if ratio <= TARGET_RATIO else 1
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
