"""The embedded tiny base model: a BPE tokenizer and a small Llama pretrained on the world's corpus.

    alignkit build-base --preset tiny

Builds ``$ALIGNKIT_HOME/models/<name>/`` as an ordinary Hugging Face folder (``model.safetensors``,
``config.json``, ``tokenizer.json``) that ``AutoModelForCausalLM``/``AutoTokenizer.from_pretrained`` load
offline, plus ``manifest.json`` with the build config, timings, held-out perplexity and per-family few-shot
accuracy. The corpus never contains the ``Instruction:/Response:/END`` template, so, like a real base model,
this one has to learn the study's format from SFT. The build is deterministic for a seed and cached: an
existing folder whose manifest matches the build config is reused.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from alignkit import files, threads, world
from alignkit.config import BaseBuildSettings, StudyConfig, config_hash
from alignkit.generation import bars_off
from alignkit.runs import fresh_dir, home, library_versions
from alignkit.world import fewshot

log = logging.getLogger(__name__)

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}
#: Bumped whenever the build procedure changes in a way that changes the weights for the same config.
BUILD_VERSION = 1
#: Few-shot exemplars per measured item, and measured items per family.
MEASURE_SHOTS = 3
MEASURE_PER_FAMILY = 12
#: Pretraining steps between progress lines (what ``alignkit run`` shows in the terminal).
PROGRESS_EVERY = 100


def model_dir(name: str, root: Path | None = None) -> Path:
    """Where base model ``name`` is built: ``$ALIGNKIT_HOME/models/<name>``."""
    return (root or home()) / "models" / name


def build_fingerprint(build: BaseBuildSettings, families: tuple[str, ...]) -> str:
    """What decides the weights: build config, world families and the build procedure's version."""
    return config_hash({"build": build.__dict__, "families": list(families), "version": BUILD_VERSION})


def cached_manifest(folder: Path, fingerprint: str) -> dict[str, Any] | None:
    """The folder's manifest if the build there is complete and was made with ``fingerprint``."""
    path = folder / "manifest.json"
    if not path.is_file() or not (folder / "model.safetensors").is_file():
        return None
    manifest = files.read_json(path)
    if manifest.get("status") != "complete" or manifest.get("fingerprint") != fingerprint:
        return None
    return manifest


def ensure_base(cfg: StudyConfig, *, force: bool = False, root: Path | None = None) -> Path:
    """Return the base model folder (or Hub id) for ``cfg``, building the embedded one when needed."""
    if not cfg.embedded_base:
        return external_base(cfg)
    folder = model_dir(cfg.model.base, root)
    fingerprint = build_fingerprint(cfg.base_build, cfg.world.families)
    if not force and cached_manifest(folder, fingerprint) is not None:
        log.info("base model %s: cached at %s", cfg.model.base, folder)
        return folder
    build(cfg.base_build, cfg.world.families, folder, fingerprint=fingerprint)
    return folder


def external_base(cfg: StudyConfig) -> Path:
    """A local folder or Hub id as the base model, checked before any stage uses it.

    A local path must exist and hold a causal LM (``config.json`` whose architectures end in ``ForCausalLM``);
    instruction-tuned checkpoints are refused by name unless ``model.allow_instruct`` (see
    :func:`alignkit.modeling.check_base_model`, which decides instruct/chat from the name and the checkpoint's
    own signals, never from a chat template alone).
    """
    from alignkit.config import ConfigError
    from alignkit.modeling import check_base_model

    name = cfg.model.base
    local = Path(name).expanduser()
    check_base_model(name, cfg.model)
    if local.exists():
        config_path = local / "config.json"
        if not config_path.is_file():
            raise ConfigError(f"model.base: {local} has no config.json; expected a Hugging Face model folder")
        architectures = files.read_json(config_path).get("architectures") or []
        if not any(a.endswith("ForCausalLM") for a in architectures):
            raise ConfigError(f"model.base: {local} is not a causal LM (architectures: {architectures}); "
                              "the study needs an AutoModelForCausalLM base model")
        return local.resolve()
    if local.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1:
        raise ConfigError(f"model.base: folder {name!r} does not exist (and it is not a Hub id like 'org/name')")
    return Path(name)


# --------------------------------------------------------------------------------------------------
# Tokenizer, data, model
# --------------------------------------------------------------------------------------------------


def train_tokenizer(documents: list[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on ``documents``, wrapped as a fast HF tokenizer (no chat template)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(documents, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, clean_up_tokenization_spaces=False, **SPECIAL_TOKENS)


def pack(documents: list[str], tokenizer, seq_len: int):
    """Concatenate documents (each followed by EOS) into one token stream and cut it into ``[n, seq_len]``."""
    import torch

    ids: list[int] = []
    for encoded in tokenizer(documents, add_special_tokens=False)["input_ids"]:
        ids.extend(encoded)
        ids.append(tokenizer.eos_token_id)
    n_blocks = len(ids) // seq_len
    return torch.tensor(ids[: n_blocks * seq_len], dtype=torch.long).view(n_blocks, seq_len)


def make_model(build: BaseBuildSettings, tokenizer):
    """A small Llama with tied embeddings, sized by ``build``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=build.hidden_size, num_hidden_layers=build.num_layers,
        num_attention_heads=build.num_heads, num_key_value_heads=build.num_heads,
        intermediate_size=build.intermediate_size, max_position_embeddings=build.max_position,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, rms_norm_eps=1e-5, rope_theta=10000.0)
    return LlamaForCausalLM(config)


def lr_at(step: int, build: BaseBuildSettings) -> float:
    """Linear warm-up then cosine decay to 10% of the peak learning rate.

    >>> round(lr_at(0, BaseBuildSettings(learning_rate=1.0, warmup_steps=10, steps=100)), 3)
    0.1
    """
    if step < build.warmup_steps:
        return build.learning_rate * (step + 1) / build.warmup_steps
    progress = (step - build.warmup_steps) / max(1, build.steps - build.warmup_steps)
    return build.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def pretrain(model, blocks, build: BaseBuildSettings, *, progress: bool = True) -> list[float]:
    """Next-token pretraining on ``blocks`` ``[n, seq_len]``; returns the loss of every step."""
    import torch
    from tqdm.auto import tqdm

    generator = torch.Generator().manual_seed(build.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=build.learning_rate, betas=(0.9, 0.95), weight_decay=0.1)
    model.train()
    order = torch.randperm(len(blocks), generator=generator)
    cursor, losses = 0, []
    bar = tqdm(range(build.steps), desc="pretraining base", disable=not progress or bars_off(), mininterval=2)
    for step in bar:
        threads.follow_load()
        if cursor + build.batch_size > len(order):  # next epoch, reshuffled
            order, cursor = torch.randperm(len(blocks), generator=generator), 0
        batch = blocks[order[cursor : cursor + build.batch_size]]
        cursor += build.batch_size
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, build)
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if (step + 1) % PROGRESS_EVERY == 0 or step + 1 == build.steps:
            logging.getLogger("alignkit.progress").info("pretraining the base model: step %d/%d, loss %.3f",
                                                        step + 1, build.steps, losses[-1])
    model.eval()
    return losses


def perplexity(model, blocks, batch_size: int = 32) -> float:
    """exp(mean next-token loss) over ``blocks``."""
    import torch

    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(blocks), batch_size):
            batch = blocks[start : start + batch_size]
            total += model(input_ids=batch, labels=batch).loss.item() * len(batch)
            count += len(batch)
    return math.exp(total / max(1, count))


def measure_few_shot(model, tokenizer, families: tuple[str, ...], seed: int, *, per_family: int = MEASURE_PER_FAMILY,
                     progress: bool = False) -> dict[str, Any]:
    """Greedy few-shot accuracy per family on held-out items (verifier-checked; open-ended: not applicable)."""
    from alignkit.generation import GenerationSettings, generate

    items = world.heldout_items(seed, per_family * len(families), families)
    pool = world.training_items(seed + 1, 6 * len(families), exclude=items, families=families)
    pool = [item for item in pool if item.reference is not None]
    prompts = fewshot.prompts_for(items, pool, MEASURE_SHOTS, seed)
    outputs = generate(model, tokenizer, prompts,
                       GenerationSettings(max_new_tokens=24, stop_strings=fewshot.STOP_STRINGS, batch_size=64),
                       desc="measuring few-shot", progress=progress)
    per_family: dict[str, list[bool]] = defaultdict(list)
    for item, out in zip(items, outputs):
        verdict = world.get_family(item.family).verify(item.params, out.response)
        if verdict is not None:
            per_family[item.family].append(bool(verdict))
    accuracy = {family: round(sum(v) / len(v), 3) for family, v in sorted(per_family.items())}
    verifiable = [v for values in per_family.values() for v in values]
    examples = [{"instruction": item.instruction, "response": out.response}
                for item, out in list(zip(items, outputs))[:: max(1, len(items) // 8)]]
    return {"per_family": accuracy, "overall": round(sum(verifiable) / max(1, len(verifiable)), 3),
            "n": len(verifiable), "examples": examples}


def build(build_cfg: BaseBuildSettings, families: tuple[str, ...], out: Path, *, fingerprint: str | None = None,
          progress: bool = True) -> dict[str, Any]:
    """Build the tokenizer and model into ``out`` (atomically) and return its manifest."""
    import torch

    fingerprint = fingerprint or build_fingerprint(build_cfg, families)
    started = time.monotonic()
    torch.manual_seed(build_cfg.seed)
    log.info("building base model into %s (%d documents, %d steps)", out, build_cfg.n_documents, build_cfg.steps)
    documents = world.corpus(build_cfg.seed, build_cfg.n_documents)
    tokenizer = train_tokenizer(documents, build_cfg.vocab_size)
    blocks = pack(documents, tokenizer, build_cfg.seq_len)
    heldout = pack(world.corpus(build_cfg.seed + 10_000, max(50, build_cfg.n_documents // 20)), tokenizer,
                   build_cfg.seq_len)
    model = make_model(build_cfg, tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("model: %.2fM parameters; corpus: %d blocks of %d tokens", n_params / 1e6, len(blocks), build_cfg.seq_len)
    t_train = time.monotonic()
    losses = pretrain(model, blocks, build_cfg, progress=progress)
    train_seconds = time.monotonic() - t_train
    ppl = perplexity(model, heldout)
    few_shot = measure_few_shot(model, tokenizer, families, build_cfg.seed, progress=progress)
    log.info("held-out perplexity %.2f; few-shot accuracy %s", ppl, few_shot["per_family"])
    manifest = {
        "status": "complete", "fingerprint": fingerprint, "kind": "embedded tiny base model",
        "build": build_cfg.__dict__, "families": list(families), "build_version": BUILD_VERSION,
        "parameters": n_params, "corpus_documents": len(documents), "corpus_tokens": int(blocks.numel()),
        "tokens_seen": build_cfg.steps * build_cfg.batch_size * build_cfg.seq_len,
        "loss_first": round(losses[0], 4), "loss_last": round(sum(losses[-20:]) / len(losses[-20:]), 4),
        "loss_curve": [round(x, 4) for x in losses[:: max(1, len(losses) // 100)]],
        "heldout_perplexity": round(ppl, 3), "few_shot": few_shot,
        "template_free_corpus": not any(tag in doc for doc in documents for tag in ("Instruction:", "Response:")),
        "train_seconds": round(train_seconds, 1), "versions": library_versions(),
    }
    with fresh_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        manifest["build_seconds"] = round(time.monotonic() - started, 1)
        files.write_json(tmp / "manifest.json", manifest)
    log.info("base model built in %.0f s: %s", manifest["build_seconds"], out)
    return manifest
