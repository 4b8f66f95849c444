"""Typed configuration: one pydantic model per stage, validated on construction, resolved from layers.

Precedence (later wins): model defaults < preset YAML (``alignkit/presets/<name>.yaml``) < user YAML
(``--config FILE``) < overrides (``-p section.key=value`` on the CLI, the ``overrides`` papermill parameter).

    >>> cfg = resolve("smoke", overrides=["sft.learning_rate=1e-4"])
    >>> cfg.sft.learning_rate
    0.0001

Every problem is a :class:`ConfigError` naming the key (``sft.method``), what was expected and what came,
raised before any work starts (pydantic's ValidationError is translated into it). Every key has a one-line help:
:func:`help_keys`. The sections are ``...Settings`` (``SFTSettings``, ``DPOSettings``: never TRL's
``SFTConfig``/``DPOConfig``); :class:`StudyConfig` is the whole config. Reading presets, YAML and overrides,
dumping and hashing, with the models' base class and the error translation, live in :mod:`alignkit.config_io`
and are re-exported here.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

import yaml
from pydantic import BaseModel, BeforeValidator, Discriminator, Field, Tag, model_validator

from alignkit.config_io import (
    Bool,
    ConfigError,
    Float,
    Int,
    Ints,
    Settings,
    Str,
    Strs,
    available_presets,
    build,
    config_hash,
    describe_keys,
    dump_yaml,
    layered,
    load_preset,
    load_user_yaml,
    merge,
    parse_overrides,
)

__all__ = [
    "FAMILIES", "NEGATIVE_TYPES", "EVAL_MODELS", "UNTRAINED_MODELS", "CONTRASTS", "ENDPOINTS", "SEED_MIX",
    "MIX_NAMES", "STAGES", "STAGE_MODULES", "STAGE_SECTIONS", "ON_POLICY_METHODS", "PER_SEED_STAGES",
    "EMBEDDED_BASES", "ConfigError", "ModelSettings", "BaseBuildSettings", "WorldSettings", "SFTDataSettings",
    "TrainSettings", "SFTSettings", "NegativesSettings", "PairsSettings", "DPOSettings", "EvalSettings",
    "RuntimeSettings", "ExperimentSettings", "StudyConfig", "parse_contrast", "build", "resolve", "help_keys",
    "config_hash", "merge", "parse_overrides", "available_presets", "load_preset", "load_user_yaml", "dump_yaml",
]

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
#: Endpoints a contrast may name: a criterion of the scorer or a composite (``alignkit.eval.scoring``).
ENDPOINTS = ("ends_with_end", "proper_structure", "no_rambling", "addresses_instruction", "appropriate_length",
             "no_unwarranted_refusal", "factually_correct", "coherent", "on_topic", "format", "content", "overall")
#: Named negative mixes: ``seed`` is the study's design (30/25/20/15/10), ``uniform`` gives every type the same
#: share, ``observed`` follows the SFT model's own failure rate per type (measured in stage 03).
SEED_MIX = {"refusal": 0.30, "format": 0.25, "incorrect": 0.20, "off_topic": 0.15, "verbose": 0.10}
MixName = Literal["seed", "uniform", "observed"]
MIX_NAMES: tuple[str, ...] = typing.get_args(MixName)
STAGES = ("01_sft_data", "02_sft_training", "03_negatives", "04_preference_pairs", "05_dpo_training", "06_evaluation")
#: The module whose ``run(run, force)`` executes each stage (its code, with everything it imports from alignkit,
#: is part of the stage's cache key: see alignkit.codehash).
STAGE_MODULES = {
    "01_sft_data": "alignkit.stages.sft_data",
    "02_sft_training": "alignkit.stages.sft",
    "03_negatives": "alignkit.stages.negatives",
    "04_preference_pairs": "alignkit.stages.pairs",
    "05_dpo_training": "alignkit.stages.dpo",
    "06_evaluation": "alignkit.stages.evaluation",
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
#: Built-in base-model names: alignkit builds these itself (see :mod:`alignkit.world.tinybase`).
EMBEDDED_BASES = ("tiny-base", "smoke-base")


def _mix(value: Any) -> Any:
    """A named mix stays a name; a YAML mapping (``-p negatives.mix={refusal: 1}``) becomes a mapping."""
    if isinstance(value, str) and value not in MIX_NAMES:
        try:
            loaded = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        value = loaded if isinstance(loaded, dict) else value
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else value


Mix = Annotated[Union[Annotated[MixName, Tag("name")], Annotated[dict[Str, Float], Tag("mapping")]],
                Discriminator(lambda v: "name" if isinstance(v, str) else "mapping" if isinstance(v, dict) else None),
                BeforeValidator(_mix)]
Method = Literal["full", "lora", "qlora"]


class ModelSettings(Settings):
    """The base model every stage starts from."""

    _section: ClassVar[str] = "model"
    base: Str = Field("tiny-base", description="Embedded name (tiny-base, smoke-base), local HF folder or Hub id.")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Weights dtype for training and generation; always explicit, never 'auto'.")
    trust_remote_code: Bool = Field(False, description="Run Python shipped with a Hub model; opt-in, logged, reported.")
    allow_pickle_weights: Bool = Field(False, description="Load pickle (non-safetensors) weights, which can run code.")
    allow_instruct: Bool = Field(False, description="Accept an instruct/chat model as the base (refused by default).")
    revision: Str = Field("main", description="Hub commit or tag pinned for reproducibility; ignored for folders.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="'auto' picks cuda when available, else cpu.")

    @model_validator(mode="after")
    def _check_model(self) -> ModelSettings:
        if not self.base.strip():
            raise ConfigError("model.base: expected a model name, folder or Hub id; got an empty string")
        if not Path(self.base).is_absolute() and ".." in Path(self.base).parts:
            raise ConfigError(f"model.base: {self.base!r} climbs out of the working folder with '..'; "
                              "give an absolute path if the model really lives there")
        if self.dtype == "float16" and self.device == "cpu":
            raise ConfigError("model.dtype: float16 is not supported for training on the CPU; use float32 or bfloat16")
        return self


class BaseBuildSettings(Settings):
    """The embedded tiny base model: tokenizer, architecture and pretraining budget (used for embedded bases)."""

    _section: ClassVar[str] = "base_build"
    vocab_size: Int = Field(1024, description="Tokenizer vocabulary size (at least 300: bytes + special tokens).")
    hidden_size: Int = Field(128, description="Width of the Llama model (divisible by num_heads).")
    num_layers: Int = Field(4, description="Number of transformer layers.")
    num_heads: Int = Field(4, description="Attention heads per layer.")
    intermediate_size: Int = Field(512, description="Width of the MLP inside each layer.")
    max_position: Int = Field(512, description="Longest sequence the model supports (tokens).")
    n_documents: Int = Field(6000, description="Pretraining corpus size in documents (about 100 tokens each).")
    seq_len: Int = Field(128, description="Tokens per pretraining sequence (at most max_position).")
    batch_size: Int = Field(32, description="Sequences per pretraining step.")
    steps: Int = Field(600, description="Pretraining steps of batch_size x seq_len tokens.")
    learning_rate: Float = Field(3e-3, description="Peak pretraining learning rate.")
    warmup_steps: Int = Field(30, description="Linear warm-up steps before the learning rate decays.")
    seed: Int = Field(0, description="Seed of the corpus, the initial weights and the batch order.")

    @model_validator(mode="after")
    def _check_build(self) -> BaseBuildSettings:
        self._positive("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size", "max_position",
                       "n_documents", "seq_len", "batch_size", "steps")
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"base_build.hidden_size: {self.hidden_size} is not divisible by "
                              f"base_build.num_heads={self.num_heads}")
        if self.seq_len > self.max_position:
            raise ConfigError(f"base_build.seq_len: {self.seq_len} exceeds base_build.max_position={self.max_position}")
        if self.vocab_size < 300:
            raise ConfigError(f"base_build.vocab_size: expected at least 300 (bytes + special tokens); got {self.vocab_size}")
        return self


class WorldSettings(Settings):
    """Which task families the study samples, and the held-out set size."""

    _section: ClassVar[str] = "world"
    families: Strs = Field(FAMILIES, description="Task families the study samples (any of the embedded world's).")
    n_eval: Int = Field(130, description="Test items: scored once per run by stage 06, never used to choose settings.")
    n_dev: Int = Field(70, description="Dev items (disjoint from train/test): trainer eval sets, settings choices.")

    @model_validator(mode="after")
    def _check_world(self) -> WorldSettings:
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown:
            raise ConfigError(f"world.families: unknown {unknown}; expected any of {', '.join(FAMILIES)}")
        if not self.families:
            raise ConfigError("world.families: expected at least one family")
        if len(set(self.families)) != len(self.families):
            raise ConfigError(f"world.families: duplicates in {list(self.families)}")
        self._positive("n_eval", "n_dev")
        return self


class SFTDataSettings(Settings):
    """Stage 01: SFT examples generated by the base model through few-shot completion prompts."""

    _section: ClassVar[str] = "sft_data"
    n_examples: Int = Field(200, description="SFT examples wanted (verified answers of the base model).")
    n_dev_examples: Int = Field(40, description="Dev examples (from dev instructions): the trainers' eval sets.")
    candidate_factor: Float = Field(1.6, description="Instructions sampled per wanted example (unverified ones drop).")
    attempts: Int = Field(4, description="Best-of-N: attempts per instruction before it is dropped.")
    few_shot: Int = Field(4, description="Solved examples in each few-shot completion prompt.")
    temperature: Float = Field(0.7, description="Sampling temperature of the base model's attempts.")
    top_p: Float = Field(0.95, description="Nucleus sampling mass of the attempts, in (0, 1].")
    max_new_tokens: Int = Field(40, description="Longest generated answer (tokens).")
    batch_size: Int = Field(64, description="Prompts generated together.")

    @model_validator(mode="after")
    def _check_sft_data(self) -> SFTDataSettings:
        self._positive("n_examples", "n_dev_examples", "attempts", "few_shot", "max_new_tokens", "batch_size")
        if self.candidate_factor < 1.0:
            raise ConfigError(f"sft_data.candidate_factor: expected >= 1.0; got {self.candidate_factor}")
        self._require("temperature", self.temperature > 0, "> 0")
        self._require("top_p", 0 < self.top_p <= 1, "in (0, 1]")
        return self


class TrainSettings(Settings):
    """Shared training settings of stage 02 (SFT) and stage 05 (DPO)."""

    method: Method = Field("full", description="full = all weights; lora = adapters; qlora = adapters on 4-bit NF4.")
    learning_rate: Float = Field(5e-4, description="Peak learning rate.")
    epochs: Float = Field(3.0, description="Passes over the training data (fractions allowed).")
    batch_size: Int = Field(16, description="Examples per device per step.")
    gradient_accumulation: Int = Field(1, description="Steps whose gradients add up to one optimizer update.")
    max_length: Int = Field(128, description="Longest tokenised example (prompt + completion); longer ones truncated.")
    warmup_ratio: Float = Field(0.05, description="Fraction of the steps warming the learning rate up, in [0, 1).")
    weight_decay: Float = Field(0.0, description="AdamW weight decay.")
    lora_r: Int = Field(16, description="LoRA rank (lora/qlora).")
    lora_alpha: Int = Field(32, description="LoRA scaling alpha (lora/qlora).")
    lora_dropout: Float = Field(0.05, description="Dropout on the LoRA path, in [0, 1).")
    lora_target_modules: Strs = Field(("all-linear",), description="'all-linear' or a list of module names to adapt.")
    gradient_checkpointing: Bool = Field(False, description="Recompute activations in backward (less memory, slower).")
    logging_steps: Int = Field(5, description="Log the loss every this many steps.")
    save_steps: Int = Field(50, description="Save a checkpoint every this many steps.")
    save_total_limit: Int = Field(2, description="Checkpoint retention: keep the last K checkpoints on disk.")
    report_to: Literal["none", "tensorboard", "wandb"] = Field(
        "none", description="Tracking pass-through for the HF Trainer (none, tensorboard, wandb).")
    push_to_hub: Bool = Field(False, description="Upload checkpoints and model to the HF Hub (network + token); off.")
    hub_model_id: Str = Field("", description="Hub repository for push_to_hub, e.g. 'me/alignkit-sft'.")

    @model_validator(mode="after")
    def _check_train(self) -> TrainSettings:
        if self.push_to_hub and not self.hub_model_id.strip():
            raise ConfigError(f"{self._key('hub_model_id')}: push_to_hub=true needs a repository id like "
                              "'me/alignkit-sft'")
        self._positive("batch_size", "gradient_accumulation", "max_length", "lora_r", "lora_alpha", "logging_steps",
                       "save_steps", "save_total_limit")
        self._require("learning_rate", self.learning_rate > 0, "> 0")
        self._require("epochs", self.epochs > 0, "> 0")
        self._require("lora_dropout", 0 <= self.lora_dropout < 1, "in [0, 1)")
        self._require("warmup_ratio", 0 <= self.warmup_ratio < 1, "in [0, 1)")
        return self


class SFTSettings(TrainSettings):
    """Stage 02: supervised fine-tuning with loss on completion tokens only."""

    _section: ClassVar[str] = "sft"
    merge_adapter: Bool = Field(True, description="Merge a LoRA adapter into full weights (false: save base + adapter).")
    loss_on: Literal["completion", "all"] = Field(
        "completion", description="Tokens that carry the loss: completion (response + END + EOS: the study) or all "
                                  "(the masking ablation).")


class NegativesSettings(Settings):
    """Stage 03: five kinds of negatives, in a mix that is applied, not just declared."""

    _section: ClassVar[str] = "negatives"
    mix: Mix = Field("seed", description="A named mix (seed = 30/25/20/15/10, uniform, observed = the SFT model's "
                                         "failure rates) or a mapping type -> fraction.")
    types: Strs = Field(NEGATIVE_TYPES, description="Negative types used (leave-one-out drops one); mix renormalised.")
    per_example: Float = Field(2.6, description="Negatives per SFT example; pairs = examples x this (before drops).")
    samples: Int = Field(4, description="Sampled answers per instruction from which incorrect ones are mined.")
    temperature: Float = Field(1.0, description="Sampling temperature of the SFT model's answers.")
    max_new_tokens: Int = Field(48, description="Longest generated negative (tokens).")
    batch_size: Int = Field(64, description="Prompts generated together.")

    @model_validator(mode="after")
    def _check_negatives(self) -> NegativesSettings:
        if (any(t not in NEGATIVE_TYPES for t in self.types) or not self.types
                or len(set(self.types)) != len(self.types)):
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
        self._require("per_example", self.per_example > 0, "> 0")
        self._positive("samples", "max_new_tokens", "batch_size")
        self._require("temperature", self.temperature > 0, "> 0")
        return self


class PairsSettings(Settings):
    """Stage 04: preference pairs."""

    _section: ClassVar[str] = "pairs"
    min_pairs: Int = Field(500, description="Fewest train pairs stage 04 must produce (else it fails).")
    max_length: Int = Field(128, description="Pairs must stay distinct when truncated to this many tokens.")
    batch_size: Int = Field(32, description="Pairs scored together (log-probabilities of chosen and rejected).")

    @model_validator(mode="after")
    def _check_pairs(self) -> PairsSettings:
        self._positive("min_pairs", "max_length", "batch_size")
        return self


class DPOSettings(TrainSettings):
    """Stage 05: DPO from the SFT model (``sft_dpo``) and from the base model (``dpo_only``), same settings."""

    _section: ClassVar[str] = "dpo"
    method: Method = Field("lora", description="full = all weights; lora = adapters; qlora = adapters on 4-bit NF4.")
    learning_rate: Float = Field(5e-4, description="Peak learning rate.")
    epochs: Float = Field(2.0, description="Passes over the preference pairs (fractions allowed).")
    beta: Float = Field(0.1, description="DPO beta: higher keeps the policy closer to the reference model.")
    loss_type: Literal["sigmoid", "ipo", "rpo", "hinge", "robust"] = Field(
        "sigmoid", description="sigmoid = DPO; ipo = IPO; rpo = DPO + rpo_alpha x NLL on chosen; hinge, robust as "
                               "in TRL.")
    rpo_alpha: Float = Field(1.0, description="Weight of the NLL-on-chosen term of loss_type rpo (1.0 in Pang et al.).")

    @model_validator(mode="after")
    def _check_dpo(self) -> DPOSettings:
        self._require("beta", self.beta > 0, "> 0")
        self._require("rpo_alpha", self.rpo_alpha > 0, "> 0")
        return self


class EvalSettings(Settings):
    """Stage 06: sequential generation, scoring and statistics."""

    _section: ClassVar[str] = "evaluation"
    models: Strs = Field(EVAL_MODELS, description="Arms evaluated, one at a time.")
    split: Literal["test", "dev"] = Field("test", description="test = the held-out items; dev = the dev split (sweeps).")
    backend: Literal["hf", "vllm"] = Field("hf", description="hf = alignkit's batched HF engine; vllm = vLLM on CUDA.")
    max_new_tokens: Int = Field(64, description="Longest generated answer (tokens).")
    batch_size: Int = Field(32, description="Prompts generated together.")
    contrasts: Strs = Field(CONTRASTS, description="Pre-registered contrasts 'a->b:endpoint' (the primary endpoint).")
    alpha: Float = Field(0.05, description="Significance level of every test (two-sided).")
    power: Float = Field(0.8, description="Power the minimum detectable difference is computed for.")
    n_bootstrap: Int = Field(2000, description="Item-level bootstrap resamples for the intervals.")
    n_permutations: Int = Field(20000, description="Item-level sign-flip permutations for the p-values.")
    correction: Literal["holm", "bh"] = Field("holm", description="Correction of secondary tests (primaries: Holm).")
    n_examples: Int = Field(6, description="Example generations shown per arm in the report.")

    @model_validator(mode="after")
    def _check_eval(self) -> EvalSettings:
        unknown = [m for m in self.models if m not in EVAL_MODELS]
        if unknown:
            raise ConfigError(f"evaluation.models: unknown {unknown}; expected any of {', '.join(EVAL_MODELS)}")
        self._positive("max_new_tokens", "batch_size", "n_bootstrap", "n_permutations")
        if not 0 < self.alpha < 1 or not 0 < self.power < 1:
            raise ConfigError(f"evaluation.alpha / evaluation.power: expected in (0, 1); got {self.alpha} / "
                              f"{self.power}")
        for index, text in enumerate(self.contrasts):
            parse_contrast(text, key=f"evaluation.contrasts[{index}]")
        return self


class RuntimeSettings(Settings):
    """How this process uses the machine; never part of a stage's cache key."""

    _section: ClassVar[str] = "runtime"
    threads: Int = Field(0, description="torch intra-op threads; 0 = the CPUs available (affinity / cgroup quota).")

    @model_validator(mode="after")
    def _check_runtime(self) -> RuntimeSettings:
        if self.threads < 0:
            raise ConfigError(f"runtime.threads: expected 0 (automatic) or a positive count; got {self.threads}")
        return self


class ExperimentSettings(Settings):
    """Which sweep, suite and point a run belongs to (set by ``alignkit sweep``; recorded in every manifest, never
    part of a stage's cache key, so points share their unchanged stages)."""

    _section: ClassVar[str] = "experiment"
    sweep_id: Str = Field("", description="The sweep this run belongs to (set by alignkit sweep).")
    suite: Str = Field("", description="The suite the sweep ran (set by alignkit sweep).")
    point: Str = Field("", description="This run's point in the sweep (set by alignkit sweep).")


class StudyConfig(Settings):
    """The whole study: one section per stage plus run-wide settings."""

    preset: Str = Field("tiny", description="The preset resolved (choose it with --preset, not as a key).")
    seed: Int = Field(0, description="Data seed: world splits, stage 01 sampling, bootstrap and permutations.")
    seeds: Ints = Field((), description="Training seeds: stages 02-05 once per seed, 06 pools them (empty: seed).")
    model: ModelSettings = Field(default_factory=ModelSettings, description=ModelSettings.__doc__)
    base_build: BaseBuildSettings = Field(default_factory=BaseBuildSettings, description=BaseBuildSettings.__doc__)
    world: WorldSettings = Field(default_factory=WorldSettings, description=WorldSettings.__doc__)
    sft_data: SFTDataSettings = Field(default_factory=SFTDataSettings, description=SFTDataSettings.__doc__)
    sft: SFTSettings = Field(default_factory=SFTSettings, description=SFTSettings.__doc__)
    negatives: NegativesSettings = Field(default_factory=NegativesSettings, description=NegativesSettings.__doc__)
    pairs: PairsSettings = Field(default_factory=PairsSettings, description=PairsSettings.__doc__)
    dpo: DPOSettings = Field(default_factory=DPOSettings, description=DPOSettings.__doc__)
    evaluation: EvalSettings = Field(default_factory=EvalSettings, description=EvalSettings.__doc__)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings, description=RuntimeSettings.__doc__)
    experiment: ExperimentSettings = Field(default_factory=ExperimentSettings, description="Sweep, suite and point.")

    @model_validator(mode="after")
    def _check_study(self) -> StudyConfig:
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
        return self

    @property
    def training_seeds(self) -> tuple[int, ...]:
        """``seeds``, or ``(seed,)`` when none are listed."""
        return self.seeds or (self.seed,)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict in field order (tuples become lists); results.json and cache keys embed it."""
        return json.loads(json.dumps(self.model_dump()))

    def section(self, name: str) -> dict[str, Any]:
        """One section as a plain dict (``"seed"`` and ``"preset"`` return ``{name: value}``)."""
        value = getattr(self, name)
        if isinstance(value, BaseModel):
            return json.loads(json.dumps(value.model_dump()))
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


def resolve(preset: str = "tiny", config_file: str | Path | None = None,
            overrides: list[str] | str | None = None) -> StudyConfig:
    """Resolve defaults < preset < user YAML < overrides into a validated :class:`StudyConfig`."""
    return build(StudyConfig, layered(preset, config_file, overrides))


def help_keys() -> str:
    """Every config key as ``section.key  (type, default)  help``, one per line (``config show --help-keys``).

    >>> lines = help_keys().splitlines()
    >>> print("\\n".join(line for line in lines if line.split()[0] in ("seed", "sft.method", "negatives.mix")))
    ... # doctest: +NORMALIZE_WHITESPACE
    seed  (int, 0)  Data seed: world splits, stage 01 sampling, bootstrap and permutations.
    sft.method  (full|lora|qlora, full)  full = all weights; lora = adapters; qlora = adapters on 4-bit NF4.
    negatives.mix  (seed|uniform|observed or mapping, seed)  A named mix (seed = 30/25/20/15/10, uniform, observed =
        the SFT model's failure rates) or a mapping type -> fraction.
    """
    return describe_keys(StudyConfig)
