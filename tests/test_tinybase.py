"""Tests for alignkit.world.tinybase: learning-rate schedule, tokenizer, packing, the build and its cache.

The real builds use a micro configuration (a one-layer, 32-wide Llama pretrained for 8 steps on 150
documents) and two task families, so a build takes a few seconds; they are marked slow because the first one
in a process also pays for importing transformers and for the first forward passes.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from alignkit import files, template, world
from alignkit.config import BaseBuildSettings, resolve
from alignkit.world import tinybase

MICRO = BaseBuildSettings(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, n_documents=150, steps=8,
                        batch_size=4, seq_len=64, vocab_size=400)
FAMILIES = ("capitals", "arithmetic")


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing a test does may land in ./data."""
    monkeypatch.setenv("ALIGNKIT_HOME", str(tmp_path / "home"))


# --------------------------------------------------------------------------------------------------
# Learning-rate schedule
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("step", "expected"), [
    (0, 0.1),     # warm-up: (0 + 1) / 10
    (4, 0.5),     # (4 + 1) / 10
    (9, 1.0),     # last warm-up step reaches the peak
    (10, 1.0),    # decay starts at progress 0: 0.1 + 0.9 * 0.5 * (1 + cos 0) = 1.0
    (60, 0.55),   # progress 50 / 100 = 0.5: 0.1 + 0.9 * 0.5 * (1 + cos(pi/2)) = 0.55
    (35, 0.1 + 0.45 * (1 + math.cos(math.pi / 4))),  # progress 0.25
    (110, 0.1),   # progress 1: the floor, 10% of the peak
    (500, 0.1),   # past the end: clamped at the floor, never rising again
])
def test_lr_at_hand_values(step: int, expected: float) -> None:
    build = BaseBuildSettings(learning_rate=1.0, warmup_steps=10, steps=110)
    assert tinybase.lr_at(step, build) == pytest.approx(expected, abs=1e-12)


def test_lr_at_scales_with_peak_and_handles_no_warmup() -> None:
    build = BaseBuildSettings(learning_rate=3e-3, warmup_steps=0, steps=4)
    # No warm-up: step 0 is the peak; step 2 is half way (0.55 x peak); step 4 the floor.
    assert [round(tinybase.lr_at(s, build) / 3e-3, 6) for s in (0, 2, 4)] == [1.0, 0.55, 0.1]


def test_lr_at_warmup_rises_and_decay_falls() -> None:
    build = BaseBuildSettings(learning_rate=2.0, warmup_steps=5, steps=50)
    values = [tinybase.lr_at(s, build) for s in range(50)]
    assert values[:5] == sorted(values[:5]) and len(set(values[:5])) == 5
    assert values[5:] == sorted(values[5:], reverse=True)
    assert max(values) == pytest.approx(2.0)
    assert min(values) >= 0.2 - 1e-12


# --------------------------------------------------------------------------------------------------
# Tokenizer and packing
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    return tinybase.train_tokenizer(world.corpus(0, 120), 400)


@pytest.mark.parametrize("text", [
    "What is the capital of France?\nParis",
    "line one\nline two\n\n  indented\ttab\n",
    template.full_text("Add 2 and 3.", "5"),
    "Q: Spell cat backwards.\nA: tac\n\nQ: 12 times 12?\nA: 144",
    "caf\u00e9 na\u00efve \u2014 \u00fcber",   # bytes never seen in training still round-trip (byte-level)
    " leading space and trailing space ",
])
def test_tokenizer_round_trips(tokenizer, text: str) -> None:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text


def test_tokenizer_has_special_tokens_and_no_chat_template(tokenizer) -> None:
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<s>", "</s>", "<pad>")
    ids = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
    assert len(ids) == 3 and None not in ids
    assert not getattr(tokenizer, "chat_template", None)
    # The newline is a real token of its own, not a literal backslash-n.
    newline_ids = tokenizer("\n", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(newline_ids) == "\n"
    # EOS written as text maps to the single EOS id (training appends it as text).
    assert tokenizer("5</s>", add_special_tokens=False)["input_ids"][-1] == tokenizer.eos_token_id
    assert len(tokenizer) <= 400


class _CharTokenizer:
    """Stand-in tokenizer with hand-checkable ids: 'a' -> 1, 'b' -> 2, ...; EOS is 0."""

    eos_token_id = 0

    def __call__(self, texts, add_special_tokens=True):
        assert add_special_tokens is False, "pack must not add BOS/EOS through the tokenizer"
        return {"input_ids": [[ord(c) - 96 for c in text] for text in texts]}


def test_pack_hand_worked() -> None:
    # Stream: a b EOS c d e EOS f EOS = [1, 2, 0, 3, 4, 5, 0, 6, 0]: 9 ids -> two blocks of 4, the last id dropped.
    blocks = tinybase.pack(["ab", "cde", "f"], _CharTokenizer(), seq_len=4)
    assert blocks.tolist() == [[1, 2, 0, 3], [4, 5, 0, 6]]
    assert str(blocks.dtype) == "torch.int64"
    assert tinybase.pack(["ab", "cde", "f"], _CharTokenizer(), seq_len=3).tolist() == [[1, 2, 0], [3, 4, 5],
                                                                                        [0, 6, 0]]
    assert tuple(tinybase.pack(["ab"], _CharTokenizer(), seq_len=4).shape) == (0, 4)


def test_pack_real_tokenizer_separates_documents_with_eos(tokenizer) -> None:
    documents = world.corpus(3, 20)
    seq_len = 32
    blocks = tinybase.pack(documents, tokenizer, seq_len)
    stream = []
    for doc in documents:
        stream += tokenizer(doc, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    n = len(stream) // seq_len
    assert tuple(blocks.shape) == (n, seq_len)
    assert blocks.flatten().tolist() == stream[: n * seq_len]
    # Each document is followed by exactly one EOS: count the documents whose EOS lies inside the blocks.
    ends, position = [], 0
    for doc in documents:
        position += len(tokenizer(doc, add_special_tokens=False)["input_ids"]) + 1
        ends.append(position)
    complete = sum(1 for end in ends if end <= n * seq_len)
    flat = blocks.flatten().tolist()
    assert complete >= 1
    assert [i + 1 for i, t in enumerate(flat) if t == tokenizer.eos_token_id] == ends[:complete]
    pieces = tokenizer.decode(flat, skip_special_tokens=False).split(tokenizer.eos_token)
    assert pieces[:complete] == documents[:complete]


# --------------------------------------------------------------------------------------------------
# Fingerprint, cache and ensure_base (build replaced by a counting fake)
# --------------------------------------------------------------------------------------------------


def test_fingerprint_depends_on_build_and_families() -> None:
    fp = tinybase.build_fingerprint(MICRO, FAMILIES)
    assert fp == tinybase.build_fingerprint(BaseBuildSettings(**MICRO.__dict__), FAMILIES)
    assert fp != tinybase.build_fingerprint(BaseBuildSettings(**{**MICRO.__dict__, "steps": 9}), FAMILIES)
    assert fp != tinybase.build_fingerprint(BaseBuildSettings(**{**MICRO.__dict__, "seed": 1}), FAMILIES)
    assert fp != tinybase.build_fingerprint(MICRO, ("capitals",))


def _fake_folder(folder: Path, fingerprint: str, status: str = "complete", weights: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if weights:
        (folder / "model.safetensors").write_bytes(b"weights")
    files.write_json(folder / "manifest.json", {"status": status, "fingerprint": fingerprint})


def test_cached_manifest_needs_complete_status_matching_fingerprint_and_weights(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    assert tinybase.cached_manifest(folder, "abc") is None
    _fake_folder(folder, "abc")
    assert tinybase.cached_manifest(folder, "abc") == {"status": "complete", "fingerprint": "abc"}
    assert tinybase.cached_manifest(folder, "other") is None
    _fake_folder(folder, "abc", status="running")
    assert tinybase.cached_manifest(folder, "abc") is None
    (folder / "model.safetensors").unlink()
    _fake_folder(folder, "abc", weights=False)
    assert tinybase.cached_manifest(folder, "abc") is None


def _micro_overrides(**changes) -> list[str]:
    values = {**MICRO.__dict__, **changes}
    return [f"base_build.{k}={v}" for k, v in values.items()] + ["world.families=[capitals, arithmetic]"]


@pytest.fixture
def counting_build(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Replace ``tinybase.build`` by a fake that writes a complete folder and records each call."""
    calls: list[tuple] = []

    def fake_build(build_cfg, families, out, *, fingerprint=None, progress=True):
        calls.append((build_cfg, tuple(families), Path(out), fingerprint))
        _fake_folder(Path(out), fingerprint or tinybase.build_fingerprint(build_cfg, families))
        return {"status": "complete"}

    monkeypatch.setattr(tinybase, "build", fake_build)
    return calls


def test_ensure_base_builds_once_then_reuses_the_cache(tmp_path: Path, counting_build: list) -> None:
    cfg = resolve("smoke", overrides=_micro_overrides())
    assert cfg.embedded_base
    root = tmp_path / "root"
    folder = tinybase.ensure_base(cfg, root=root)
    assert folder == root / "models" / cfg.model.base
    assert len(counting_build) == 1
    build_cfg, families, out, fingerprint = counting_build[0]
    assert (build_cfg, families, out) == (cfg.base_build, FAMILIES, folder)
    assert fingerprint == tinybase.build_fingerprint(cfg.base_build, FAMILIES)

    assert tinybase.ensure_base(cfg, root=root) == folder
    assert tinybase.ensure_base(resolve("smoke", overrides=_micro_overrides()), root=root) == folder
    assert len(counting_build) == 1, "an unchanged build config must reuse the cached folder"

    tinybase.ensure_base(cfg, root=root, force=True)
    assert len(counting_build) == 2, "force rebuilds"


def test_ensure_base_rebuilds_when_the_build_config_changes(tmp_path: Path, counting_build: list) -> None:
    root = tmp_path / "root"
    tinybase.ensure_base(resolve("smoke", overrides=_micro_overrides()), root=root)
    changed = resolve("smoke", overrides=_micro_overrides(steps=9))
    tinybase.ensure_base(changed, root=root)
    assert len(counting_build) == 2
    assert counting_build[1][0].steps == 9
    # The new build replaced the old one: going back to the first config rebuilds again.
    tinybase.ensure_base(resolve("smoke", overrides=_micro_overrides()), root=root)
    assert len(counting_build) == 3
    # A half-finished build (status running) is not taken as done.
    folder = root / "models" / changed.model.base
    manifest = files.read_json(folder / "manifest.json")
    files.write_json(folder / "manifest.json", {**manifest, "status": "running"})
    tinybase.ensure_base(resolve("smoke", overrides=_micro_overrides()), root=root)
    assert len(counting_build) == 4


def test_ensure_base_uses_home_by_default(tmp_path: Path, counting_build: list) -> None:
    cfg = resolve("smoke", overrides=_micro_overrides())
    folder = tinybase.ensure_base(cfg)
    assert folder == tmp_path / "home" / "models" / cfg.model.base


def test_ensure_base_never_builds_for_a_local_folder_or_hub_id(tmp_path: Path, counting_build: list) -> None:
    local = tmp_path / "my-base"
    local.mkdir()
    (local / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    cfg = resolve("smoke", overrides=[f"model.base={local}"])
    assert tinybase.ensure_base(cfg) == local.resolve()
    hub = resolve("smoke", overrides=["model.base=Qwen/Qwen2.5-0.5B"])
    assert tinybase.ensure_base(hub) == Path("Qwen/Qwen2.5-0.5B")
    assert counting_build == []


# --------------------------------------------------------------------------------------------------
# Real micro builds
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("tinybase") / "micro-base"
    manifest = tinybase.build(MICRO, FAMILIES, out, progress=False)
    return out, manifest


@pytest.mark.slow
def test_build_writes_a_complete_hf_folder_and_manifest(built) -> None:
    out, returned = built
    for name in ("model.safetensors", "tokenizer.json", "config.json", "manifest.json"):
        assert (out / name).is_file(), name
    assert not list(out.parent.glob(".*.tmp")), "the temporary build folder must be gone"
    manifest = files.read_json(out / "manifest.json")
    assert manifest == returned
    assert manifest["status"] == "complete"
    assert manifest["fingerprint"] == tinybase.build_fingerprint(MICRO, FAMILIES)
    assert manifest["build"] == MICRO.__dict__
    assert manifest["families"] == list(FAMILIES)
    assert manifest["template_free_corpus"] is True
    assert math.isfinite(manifest["heldout_perplexity"]) and manifest["heldout_perplexity"] > 1
    per_family = manifest["few_shot"]["per_family"]
    assert sorted(per_family) == sorted(FAMILIES)
    assert all(0.0 <= v <= 1.0 for v in per_family.values())
    assert manifest["few_shot"]["n"] == tinybase.MEASURE_PER_FAMILY * len(FAMILIES)
    assert manifest["tokens_seen"] == MICRO.steps * MICRO.batch_size * MICRO.seq_len
    assert len(manifest["loss_curve"]) == MICRO.steps
    assert returned["fingerprint"] == manifest["fingerprint"]
    assert tinybase.cached_manifest(out, manifest["fingerprint"]) is not None


@pytest.mark.slow
def test_built_folder_loads_offline_with_auto_classes(built) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, _ = built
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    model = AutoModelForCausalLM.from_pretrained(str(out))
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<s>", "</s>", "<pad>")
    assert not getattr(tokenizer, "chat_template", None)
    text = template.full_text("What is the capital of France?", "Paris")
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text
    assert model.config.model_type == "llama"
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert model.config.hidden_size == MICRO.hidden_size and model.config.num_hidden_layers == MICRO.num_layers
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.inference_mode():
        logits = model(input_ids=ids).logits
    assert tuple(logits.shape) == (1, ids.shape[1], len(tokenizer))
    assert torch.isfinite(logits).all()


@pytest.mark.slow
def test_build_is_deterministic_for_a_seed(built, tmp_path: Path) -> None:
    import torch

    out, manifest = built
    torch.rand(7)  # disturb the global RNG: the build must seed everything itself
    again = tinybase.build(MICRO, FAMILIES, tmp_path / "again", progress=False)
    other = tinybase.build(BaseBuildSettings(**{**MICRO.__dict__, "seed": 1}), FAMILIES, tmp_path / "other",
                           progress=False)
    same = files.sha256_file(out / "model.safetensors")
    assert files.sha256_file(tmp_path / "again" / "model.safetensors") == same
    assert files.sha256_file(tmp_path / "again" / "tokenizer.json") == files.sha256_file(out / "tokenizer.json")
    assert again["heldout_perplexity"] == manifest["heldout_perplexity"]
    assert again["few_shot"] == manifest["few_shot"]
    assert files.sha256_file(tmp_path / "other" / "model.safetensors") != same
    assert other["fingerprint"] != manifest["fingerprint"]


def test_external_base_models_are_checked_before_use(tmp_path, monkeypatch):
    from alignkit import config as config_module
    from alignkit import files as files_module
    from alignkit.world.tinybase import external_base

    def cfg(base, *extra):
        return config_module.resolve("smoke", overrides=[f"model.base={base}", *extra])

    with pytest.raises(config_module.ConfigError, match="does not exist"):
        external_base(cfg(str(tmp_path / "missing")))
    folder = tmp_path / "enc"
    folder.mkdir()
    with pytest.raises(config_module.ConfigError, match="no config.json"):
        external_base(cfg(str(folder)))
    files_module.write_json(folder / "config.json", {"architectures": ["BertForMaskedLM"]})
    with pytest.raises(config_module.ConfigError, match="not a causal LM"):
        external_base(cfg(str(folder)))
    files_module.write_json(folder / "config.json", {"architectures": ["LlamaForCausalLM"]})
    assert external_base(cfg(str(folder))) == folder.resolve()
    with pytest.raises(config_module.ConfigError, match="instruction-tuned"):
        external_base(cfg("Qwen/Qwen2.5-7B-Instruct"))
    assert str(external_base(cfg("Qwen/Qwen2.5-7B-Instruct", "model.allow_instruct=true"))) == \
        "Qwen/Qwen2.5-7B-Instruct"
    assert str(external_base(cfg("Qwen/Qwen2.5-7B"))) == "Qwen/Qwen2.5-7B"
