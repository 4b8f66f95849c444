"""Typed configuration: one dataclass per stage, validated on construction, resolved from layers.

Precedence (later wins): dataclass defaults < preset YAML (``alignkit/presets/<name>.yaml``) < user YAML
(``--config FILE``) < overrides (``-p section.key=value`` on the CLI, the ``overrides`` papermill parameter).

    >>> cfg = resolve("smoke", overrides=["sft.learning_rate=1e-4"])
    >>> cfg.sft.learning_rate
    0.0001

Every problem is a :class:`ConfigError` naming the key (``sft.method``), what was expected and what came,
raised before any work starts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

FAMILIES = ("arithmetic", "capitals", "word_transform", "list_category", "comparison", "constraint", "open_ended")
NEGATIVE_TYPES = ("refusal", "format", "incorrect", "off_topic", "verbose")
#: The evaluated arms: the base in its own few-shot Q:/A: format (the content baseline), the base in the study
#: template (the format baseline), SFT, DPO from SFT, and DPO from the base (the control).
EVAL_MODELS = ("base_fewshot", "base", "sft", "sft_dpo", "dpo_only")
#: Arms that do not depend on the training seed (no training: greedy decoding of the same weights).
UNTRAINED_MODELS = ("base_fewshot", "base")
#: The study's pre-registered contrasts ``a->b:endpoint`` (difference b minus a on the primary endpoint): what SFT
#: adds beyond the base prompted the way it was trained (content), what DPO adds on top of SFT, what DPO alone adds,
#: whether the SFT foundation matters for DPO, and what SFT does to the format.
CONTRASTS = ("base_fewshot->sft:content", "sft->sft_dpo:overall", "base_fewshot->dpo_only:content",
             "dpo_only->sft_dpo:overall", "base->sft:format")
#: Endpoints a contrast may name: a criterion of the scorer or a composite (``alignkit.scoring``).
ENDPOINTS = ("ends_with_end", "proper_structure", "no_rambling", "addresses_instruction", "appropriate_length",
             "no_unwarranted_refusal", "factually_correct", "coherent", "on_topic", "format", "content", "overall")
#: Named negative mixes: ``seed`` is the study's design (30/25/20/15/10), ``uniform`` gives every type the same
#: share, ``observed`` follows the SFT model's own failure rate per type (measured in stage 03).
SEED_MIX = {"refusal": 0.30, "format": 0.25, "incorrect": 0.20, "off_topic": 0.15, "verbose": 0.10}
MIX_NAMES = ("seed", "uniform", "observed")
STAGES = ("01_sft_data", "02_sft_training", "03_negatives", "04_preference_pairs", "05_dpo_training", "06_evaluation")
#: The module whose ``run(run, force)`` executes each stage (its code, with everything it imports from alignkit,
#: is part of the stage's cache key: see alignkit.codehash).
STAGE_MODULES = {
    "01_sft_data": "alignkit.sft_data",
    "02_sft_training": "alignkit.sft",
    "03_negatives": "alignkit.negatives",
    "04_preference_pairs": "alignkit.pairs",
    "05_dpo_training": "alignkit.dpo",
    "06_evaluation": "alignkit.evaluation",
}
#: The config sections each stage's outputs depend on (with the seed, its inputs' hashes and its code: the cache
#: key). A section not listed here never re-runs the stage when it changes.
STAGE_SECTIONS = {
    "01_sft_data": ("model", "base_build", "world", "sft_data"),
    "02_sft_training": ("model", "sft"),
    "03_negatives": ("model", "negatives", "pairs"),
    "04_preference_pairs": ("model", "pairs"),
    "05_dpo_training": ("model", "dpo", "pairs"),
    "06_evaluation": ("model", "evaluation", "sft_data"),
}
#: Negative methods whose text is the SFT model's own output: the policy DPO starts from (for sft_dpo).
ON_POLICY_METHODS = ("sft_greedy", "sft_sample")
#: Stages that run once per training seed (``<stage>/seed<N>/``): SFT, its negatives and pairs, DPO. Stage 01's
#: data (made by the base model) and stage 06 (every seed's models, pooled) are shared by all seeds.
PER_SEED_STAGES = ("02_sft_training", "03_negatives", "04_preference_pairs", "05_dpo_training")
#: Built-in base-model names: alignkit builds these itself (see :mod:`alignkit.tinybase`).
EMBEDDED_BASES = ("tiny-base", "smoke-base")


class ConfigError(ValueError):
    """A configuration problem; the message names the key, what was expected and what was given."""


# --------------------------------------------------------------------------------------------------
# Stage configs
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    """The base model every stage starts from."""

    #: An embedded name (``tiny-base``/``smoke-base``: built by alignkit), a local HF folder or a Hub id.
    base: str = "tiny-base"
    #: Weights dtype for training and generation; always explicit, never "auto".
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    #: Executes Python shipped with a Hub model; off unless the user opts in (logged and reported).
    trust_remote_code: bool = False
    #: Load non-safetensors (pickle) weights; off: pickle files can run code when loaded.
    allow_pickle_weights: bool = False
    #: The study needs a true base model; instruct/chat checkpoints are refused unless this is set.
    allow_instruct: bool = False
    #: Hub revision (commit or tag) pinned for reproducibility; ignored for local folders.
    revision: str = "main"
    #: "auto" picks cuda when available, else cpu.
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def check(self) -> None:
        if not self.base.strip():
            raise ConfigError("model.base: expected a model name, folder or Hub id; got an empty string")
        if not Path(self.base).is_absolute() and ".." in Path(self.base).parts:
            raise ConfigError(f"model.base: {self.base!r} climbs out of the working folder with '..'; "
                              "give an absolute path if the model really lives there")
        if self.dtype == "float16" and self.device == "cpu":
            raise ConfigError("model.dtype: float16 is not supported for training on the CPU; use float32 or bfloat16")


@dataclass(frozen=True)
class BaseBuildConfig:
    """The embedded tiny base model: tokenizer, architecture and pretraining budget (used for embedded bases)."""

    vocab_size: int = 1024
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 512
    max_position: int = 512
    #: Corpus documents (about 100 tokens each) and pretraining steps of ``batch_size x seq_len`` tokens.
    n_documents: int = 6000
    seq_len: int = 128
    batch_size: int = 32
    steps: int = 600
    learning_rate: float = 3e-3
    warmup_steps: int = 30
    seed: int = 0

    def check(self) -> None:
        _positive(self, "base_build", ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                                        "max_position", "n_documents", "seq_len", "batch_size", "steps"))
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"base_build.hidden_size: {self.hidden_size} is not divisible by "
                              f"base_build.num_heads={self.num_heads}")
        if self.seq_len > self.max_position:
            raise ConfigError(f"base_build.seq_len: {self.seq_len} exceeds base_build.max_position={self.max_position}")
        if self.vocab_size < 300:
            raise ConfigError(f"base_build.vocab_size: expected at least 300 (bytes + special tokens); got {self.vocab_size}")


@dataclass(frozen=True)
class WorldConfig:
    """Which task families the study samples, and the held-out set size."""

    families: tuple[str, ...] = FAMILIES
    #: Test split: evaluated once per run by stage 06, never used to choose anything.
    n_eval: int = 130
    #: Dev split: disjoint from train and test; trainer eval sets and every choice of settings use it.
    n_dev: int = 70

    def check(self) -> None:
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown:
            raise ConfigError(f"world.families: unknown {unknown}; expected any of {', '.join(FAMILIES)}")
        if not self.families:
            raise ConfigError("world.families: expected at least one family")
        if len(set(self.families)) != len(self.families):
            raise ConfigError(f"world.families: duplicates in {list(self.families)}")
        _positive(self, "world", ("n_eval", "n_dev"))


@dataclass(frozen=True)
class SFTDataConfig:
    """Stage 01: SFT examples generated by the base model through few-shot completion prompts."""

    n_examples: int = 200
    #: Dev examples generated the same way from dev-split instructions: the trainers' held-out eval sets.
    n_dev_examples: int = 40
    #: Candidate instructions sampled per wanted example (some are dropped when no attempt verifies).
    candidate_factor: float = 1.6
    #: Best-of-N: attempts per instruction before it is dropped.
    attempts: int = 4
    few_shot: int = 4
    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 40
    batch_size: int = 64

    def check(self) -> None:
        _positive(self, "sft_data", ("n_examples", "n_dev_examples", "attempts", "few_shot", "max_new_tokens", "batch_size"))
        if self.candidate_factor < 1.0:
            raise ConfigError(f"sft_data.candidate_factor: expected >= 1.0; got {self.candidate_factor}")
        _sampling(self, "sft_data")


@dataclass(frozen=True)
class TrainConfig:
    """Shared training settings of stage 02 (SFT) and stage 05 (DPO)."""

    #: full = all weights; lora = adapters on a bf16/fp32 model; qlora = adapters on a 4-bit NF4 model.
    method: Literal["full", "lora", "qlora"] = "full"
    learning_rate: float = 5e-4
    epochs: float = 3.0
    batch_size: int = 16
    gradient_accumulation: int = 1
    max_length: int = 128
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    #: "all-linear" or a list of module names.
    lora_target_modules: tuple[str, ...] = ("all-linear",)
    gradient_checkpointing: bool = False
    logging_steps: int = 5
    save_steps: int = 50
    #: Checkpoint retention: keep the last K checkpoints on disk.
    save_total_limit: int = 2
    #: Tracking pass-through for the HF Trainer (``none``, ``tensorboard``, ``wandb``).
    report_to: Literal["none", "tensorboard", "wandb"] = "none"
    #: Upload checkpoints and the final model to the Hugging Face Hub (needs network and a token); off.
    push_to_hub: bool = False
    hub_model_id: str = ""

    def check(self, section: str) -> None:
        if self.push_to_hub and not self.hub_model_id.strip():
            raise ConfigError(f"{section}.hub_model_id: push_to_hub=true needs a repository id like 'me/alignkit-sft'")
        _positive(self, section, ("batch_size", "gradient_accumulation", "max_length", "lora_r", "lora_alpha",
                                   "logging_steps", "save_steps", "save_total_limit"))
        if not self.learning_rate > 0:
            raise ConfigError(f"{section}.learning_rate: expected > 0; got {self.learning_rate}")
        if not self.epochs > 0:
            raise ConfigError(f"{section}.epochs: expected > 0; got {self.epochs}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"{section}.lora_dropout: expected in [0, 1); got {self.lora_dropout}")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"{section}.warmup_ratio: expected in [0, 1); got {self.warmup_ratio}")


@dataclass(frozen=True)
class SFTConfig(TrainConfig):
    """Stage 02: supervised fine-tuning with loss on completion tokens only."""

    #: LoRA/QLoRA output: merge the adapter into full weights, or save base + adapter.
    merge_adapter: bool = True
    #: Which tokens carry the loss: ``completion`` (the study: response + END + EOS only) or ``all`` (prompt too;
    #: the masking ablation).
    loss_on: Literal["completion", "all"] = "completion"

    def check(self, section: str = "sft") -> None:
        super().check(section)


@dataclass(frozen=True)
class NegativesConfig:
    """Stage 03: five kinds of negatives, in a mix that is applied, not just declared."""

    #: A named mix (``seed`` = 30/25/20/15/10, ``uniform``, ``observed`` = the SFT model's own failure rates) or a
    #: mapping type -> fraction.
    mix: Literal["seed", "uniform", "observed"] | dict[str, float] = "seed"
    #: Which negative types are used (leave-one-type-out drops one); the mix is renormalised over them.
    types: tuple[str, ...] = NEGATIVE_TYPES
    #: Negatives wanted per SFT example; pairs = examples x this (before drops).
    per_example: float = 2.6
    #: Sampled answers per instruction from which incorrect ones are mined.
    samples: int = 4
    temperature: float = 1.0
    max_new_tokens: int = 48
    batch_size: int = 64

    def check(self) -> None:
        unknown_types = [t for t in self.types if t not in NEGATIVE_TYPES]
        if unknown_types or not self.types or len(set(self.types)) != len(self.types):
            raise ConfigError(f"negatives.types: expected distinct names from {', '.join(NEGATIVE_TYPES)}; "
                              f"got {list(self.types)}")
        if isinstance(self.mix, dict):
            unknown = sorted(set(self.mix) - set(NEGATIVE_TYPES))
            if unknown:
                raise ConfigError(f"negatives.mix: unknown type(s) {unknown}; expected any of "
                                  f"{', '.join(NEGATIVE_TYPES)}")
            if any(v < 0 for v in self.mix.values()) or abs(sum(self.mix.values()) - 1.0) > 1e-6:
                raise ConfigError(f"negatives.mix: expected non-negative fractions summing to 1; got {self.mix}")
            if not any(self.mix.get(t, 0) > 0 for t in self.types):
                raise ConfigError(f"negatives.mix: gives no share to any of negatives.types {list(self.types)}")
        if not self.per_example > 0:
            raise ConfigError(f"negatives.per_example: expected > 0; got {self.per_example}")
        _positive(self, "negatives", ("samples", "max_new_tokens", "batch_size"))
        _sampling(self, "negatives")


@dataclass(frozen=True)
class PairsConfig:
    """Stage 04: preference pairs."""

    min_pairs: int = 500
    #: Pairs are checked distinct after tokenisation and truncation at this many tokens (prompt + completion).
    max_length: int = 128
    batch_size: int = 32

    def check(self) -> None:
        _positive(self, "pairs", ("min_pairs", "max_length", "batch_size"))


@dataclass(frozen=True)
class DPOConfig(TrainConfig):
    """Stage 05: DPO from the SFT model (``sft_dpo``) and from the base model (``dpo_only``), same settings."""

    method: Literal["full", "lora", "qlora"] = "lora"
    beta: float = 0.1
    #: sigmoid = DPO (Rafailov et al. 2023); ipo = IPO (Azar et al. 2023); rpo = DPO plus an NLL (SFT) term on
    #: the chosen response weighted by ``rpo_alpha`` (Pang et al. 2024); hinge and robust as in TRL.
    loss_type: Literal["sigmoid", "ipo", "rpo", "hinge", "robust"] = "sigmoid"
    #: Weight of the NLL term on chosen for ``loss_type: rpo`` (1.0 in Pang et al. 2024).
    rpo_alpha: float = 1.0
    learning_rate: float = 5e-4
    epochs: float = 2.0

    def check(self, section: str = "dpo") -> None:
        super().check(section)
        if not self.beta > 0:
            raise ConfigError(f"dpo.beta: expected > 0; got {self.beta}")
        if not self.rpo_alpha > 0:
            raise ConfigError(f"dpo.rpo_alpha: expected > 0; got {self.rpo_alpha}")


@dataclass(frozen=True)
class EvalConfig:
    """Stage 06: sequential generation, scoring and statistics."""

    models: tuple[str, ...] = EVAL_MODELS
    #: ``test`` = the held-out items (a study's result); ``dev`` = the dev split (choosing settings: sweeps).
    split: Literal["test", "dev"] = "test"
    #: ``hf`` = alignkit's batched Hugging Face engine; ``vllm`` = vLLM on a CUDA GPU (optional install).
    backend: Literal["hf", "vllm"] = "hf"
    max_new_tokens: int = 64
    batch_size: int = 32
    #: Pre-registered contrasts ``a->b:endpoint``; the endpoint is the contrast's primary endpoint.
    contrasts: tuple[str, ...] = CONTRASTS
    #: Significance level of every test (two-sided) and the power the minimum detectable difference is for.
    alpha: float = 0.05
    power: float = 0.8
    #: Item-level resamples: bootstrap intervals and sign-flip permutation p-values.
    n_bootstrap: int = 2000
    n_permutations: int = 20000
    #: Multiple-testing correction within each family of secondary tests (primaries: always Holm).
    correction: Literal["holm", "bh"] = "holm"
    n_examples: int = 6

    def check(self) -> None:
        unknown = [m for m in self.models if m not in EVAL_MODELS]
        if unknown:
            raise ConfigError(f"evaluation.models: unknown {unknown}; expected any of {', '.join(EVAL_MODELS)}")
        _positive(self, "evaluation", ("max_new_tokens", "batch_size", "n_bootstrap", "n_permutations"))
        if not 0 < self.alpha < 1 or not 0 < self.power < 1:
            raise ConfigError(f"evaluation.alpha / evaluation.power: expected in (0, 1); got {self.alpha} / "
                              f"{self.power}")
        for index, text in enumerate(self.contrasts):
            parse_contrast(text, key=f"evaluation.contrasts[{index}]")


@dataclass(frozen=True)
class RuntimeConfig:
    """How this process uses the machine; never part of a stage's cache key."""

    #: torch intra-op threads; 0 = the CPUs available to the process (affinity / cgroup quota), see alignkit.threads.
    threads: int = 0

    def check(self) -> None:
        if self.threads < 0:
            raise ConfigError(f"runtime.threads: expected 0 (automatic) or a positive count; got {self.threads}")


@dataclass(frozen=True)
class ExperimentConfig:
    """Which sweep, suite and point a run belongs to (set by ``alignkit sweep``; recorded in every manifest, never
    part of a stage's cache key, so points share their unchanged stages)."""

    sweep_id: str = ""
    suite: str = ""
    point: str = ""

    def check(self) -> None:
        pass


@dataclass(frozen=True)
class StudyConfig:
    """The whole study: one section per stage plus run-wide settings."""

    preset: str = "tiny"
    #: The data seed: world splits, stage 01's sampling, bootstrap and permutation draws.
    seed: int = 0
    #: Training seeds: stages 02-05 run once per seed and stage 06 evaluates every seed's models (empty: ``seed``).
    seeds: tuple[int, ...] = ()
    model: ModelConfig = field(default_factory=ModelConfig)
    base_build: BaseBuildConfig = field(default_factory=BaseBuildConfig)
    world: WorldConfig = field(default_factory=WorldConfig)
    sft_data: SFTDataConfig = field(default_factory=SFTDataConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    negatives: NegativesConfig = field(default_factory=NegativesConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)

    def __post_init__(self) -> None:
        self.model.check()
        self.base_build.check()
        self.world.check()
        self.sft_data.check()
        self.sft.check("sft")
        self.negatives.check()
        self.pairs.check()
        self.dpo.check("dpo")
        self.evaluation.check()
        self.runtime.check()
        if self.sft.method == "qlora" and self.sft.merge_adapter:
            raise ConfigError("sft.merge_adapter: cannot merge an adapter into 4-bit QLoRA weights; "
                              "set sft.merge_adapter=false (the model is saved as base + adapter) "
                              "or use sft.method=lora")
        if self.model.dtype == "float16" and "qlora" in (self.sft.method, self.dpo.method):
            raise ConfigError("model.dtype: QLoRA here computes in bfloat16 or float32; float16 is not supported")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds: duplicates in {list(self.seeds)}")
        for index, text in enumerate(self.evaluation.contrasts):
            a, b, _endpoint = parse_contrast(text)
            missing = [m for m in (a, b) if m not in self.evaluation.models]
            if missing:
                raise ConfigError(f"evaluation.contrasts[{index}]: {text!r} names {missing}, which "
                                  f"evaluation.models {list(self.evaluation.models)} does not evaluate")

    @property
    def training_seeds(self) -> tuple[int, ...]:
        """``seeds``, or ``(seed,)`` when none are listed."""
        return self.seeds or (self.seed,)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def section(self, name: str) -> dict[str, Any]:
        """One section as a plain dict (``"seed"`` and ``"preset"`` return ``{name: value}``)."""
        value = getattr(self, name)
        if dataclasses.is_dataclass(value):
            return json.loads(json.dumps(dataclasses.asdict(value)))
        return {name: value}

    @property
    def embedded_base(self) -> bool:
        """True when the base model is one alignkit builds itself."""
        return self.model.base in EMBEDDED_BASES


def parse_contrast(text: str, key: str = "evaluation.contrasts") -> tuple[str, str, str]:
    """``"a->b:endpoint"`` -> ``(a, b, endpoint)``, checked against the arms and endpoints.

    >>> parse_contrast("sft->sft_dpo:overall")
    ('sft', 'sft_dpo', 'overall')
    """
    arms, sep, endpoint = text.partition(":")
    a, arrow, b = arms.partition("->")
    a, b, endpoint = a.strip(), b.strip(), endpoint.strip()
    if not sep or not arrow or not a or not b or not endpoint:
        raise ConfigError(f"{key}: {text!r} is not 'a->b:endpoint' (e.g. 'sft->sft_dpo:overall')")
    for arm in (a, b):
        if arm not in EVAL_MODELS:
            raise ConfigError(f"{key}: {text!r} names unknown arm {arm!r}; expected any of {', '.join(EVAL_MODELS)}")
    if a == b:
        raise ConfigError(f"{key}: {text!r} compares an arm with itself")
    if endpoint not in ENDPOINTS:
        raise ConfigError(f"{key}: {text!r} names unknown endpoint {endpoint!r}; expected any of "
                          f"{', '.join(ENDPOINTS)}")
    return a, b, endpoint


def config_hash(obj: Any) -> str:
    """Stable short hash of a JSON-able object (key order does not matter).

    >>> config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})
    True
    """
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# --------------------------------------------------------------------------------------------------
# Construction from layered dicts
# --------------------------------------------------------------------------------------------------


def _positive(obj: Any, section: str, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(obj, name)
        if value <= 0:
            raise ConfigError(f"{section}.{name}: expected a positive number; got {value!r}")


def _sampling(obj: Any, section: str) -> None:
    if not obj.temperature > 0:
        raise ConfigError(f"{section}.temperature: expected > 0; got {obj.temperature}")
    if hasattr(obj, "top_p") and not 0 < obj.top_p <= 1:
        raise ConfigError(f"{section}.top_p: expected in (0, 1]; got {obj.top_p}")


def _is_union(tp: Any) -> bool:
    return isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if _is_union(tp):
        return " or ".join(_type_name(member) for member in typing.get_args(tp))
    if origin in (tuple, list):
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _coerce(key: str, tp: Any, value: Any) -> Any:
    """Check ``value`` against type ``tp`` (strings from ``-p`` are parsed), returning the typed value.

    >>> _coerce("sft.epochs", float, "3")
    3.0
    >>> _coerce("x", tuple[str, ...], "[a, b]")
    ('a', 'b')
    """
    origin = typing.get_origin(tp)
    if _is_union(tp):  # e.g. a named mix or a mapping: the first member that accepts it
        errors = {}
        for member in typing.get_args(tp):
            try:
                return _coerce(key, member, value)
            except ConfigError as error:
                errors[typing.get_origin(member)] = error
        if isinstance(value, dict) and dict in errors:
            raise errors[dict]  # a mapping with a bad entry: name the entry
        raise ConfigError(f"{key}: expected {_type_name(tp)}; got {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key}: expected {_type_name(tp)}; got {value!r}")
        return value
    if origin in (tuple, list):
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected {_type_name(tp)}; got {value!r}")
        (item_tp, *_rest) = typing.get_args(tp)
        return tuple(_coerce(f"{key}[{i}]", item_tp, v) for i, v in enumerate(value))
    if origin is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping; got {value!r}")
        _key_tp, value_tp = typing.get_args(tp)
        return {str(k): _coerce(f"{key}.{k}", value_tp, v) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false; got {value!r}")
        return value
    if tp is int:
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                raise ConfigError(f"{key}: expected an integer; got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer; got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a number; got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number; got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string; got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported config type {tp}")


def build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Construct dataclass ``cls`` from a nested dict, rejecting unknown keys and wrong types by name.

    >>> build(PairsConfig, {"min_pairs": "600"}).min_pairs
    600
    >>> build(PairsConfig, {"min_pair": 600})
    Traceback (most recent call last):
    ...
    alignkit.config.ConfigError: unknown config key 'min_pair'; known keys: batch_size, max_length, min_pairs
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping; got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key {prefix + unknown[0]!r}; known keys: "
                          + ", ".join(prefix + name for name in sorted(fields)))
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        key = prefix + name
        if dataclasses.is_dataclass(tp):
            kwargs[name] = build(tp, value, key + ".")
        else:
            kwargs[name] = _coerce(key, tp, value)
    try:
        return cls(**kwargs)
    except TypeError as error:  # pragma: no cover - guarded by the unknown-key check above
        raise ConfigError(f"{prefix.rstrip('.')}: {error}") from None


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``update`` over ``base`` (mappings merge, everything else replaces).

    >>> merge({"sft": {"epochs": 1, "batch_size": 8}}, {"sft": {"epochs": 2}})
    {'sft': {'epochs': 2, 'batch_size': 8}}
    """
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "mix":
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_overrides(items: list[str] | str | None) -> dict[str, Any]:
    """Turn ``["sft.epochs=2", "seed=3"]`` (or one string of such items separated by newlines or ``;``)
    into a nested dict of strings; types are checked when the config is built.

    >>> parse_overrides("sft.epochs=2; seed=3")
    {'sft': {'epochs': '2'}, 'seed': '3'}
    """
    if items is None:
        return {}
    if isinstance(items, str):
        items = [part for line in items.splitlines() for part in line.split(";")]
    nested: dict[str, Any] = {}
    for raw in items:
        item = raw.strip()
        if not item:
            continue
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. sft.epochs=2")
        key, value = (part.strip() for part in item.split("=", 1))
        if not key:
            raise ConfigError(f"override {item!r}: empty key")
        target = nested
        parts = key.split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"override {item!r}: {part!r} is set both as a value and as a section")
        target[parts[-1]] = value
    return nested


def available_presets() -> list[str]:
    """Names of the presets shipped in ``alignkit/presets``."""
    folder = resources.files("alignkit") / "presets"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_preset(name: str) -> dict[str, Any]:
    """The raw dict of preset ``name``; unknown names list the available ones."""
    path = resources.files("alignkit") / "presets" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"preset {name!r}: not found; available presets: {', '.join(available_presets())}")
    return _load_yaml_text(path.read_text(encoding="utf-8"), f"preset {name}")


def load_user_yaml(path: str | Path) -> dict[str, Any]:
    """A user's YAML config file as a dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: file not found")
    return _load_yaml_text(path.read_text(encoding="utf-8"), str(path))


def _load_yaml_text(text: str, origin: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{origin}{where}: invalid YAML: {getattr(error, 'problem', error)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping of config sections; got {type(data).__name__}")
    return data


def resolve(preset: str = "tiny", config_file: str | Path | None = None,
            overrides: list[str] | str | None = None) -> StudyConfig:
    """Resolve defaults < preset < user YAML < overrides into a validated :class:`StudyConfig`."""
    layers = load_preset(preset)
    if layers.get("preset", preset) != preset:
        raise ConfigError(f"preset {preset!r}: its file sets preset={layers['preset']!r}")
    data = merge({"preset": preset}, layers)
    if config_file:
        data = merge(data, load_user_yaml(config_file))
    data = merge(data, parse_overrides(overrides))
    if data.get("preset", preset) != preset:
        raise ConfigError(f"preset: the config sets preset={data['preset']!r} but preset {preset!r} was loaded; "
                          f"choose the preset with --preset (or the papermill parameter), not as a config key")
    return build(StudyConfig, data)


def dump_yaml(cfg: StudyConfig) -> str:
    """The resolved config as YAML, as ``alignkit config show`` prints it."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=False)
