"""``alignkit plan``: the peak GPU memory of every stage of a preset, estimated from the model's shape.

    alignkit plan --preset qwen2.5-7b-qlora --gpu-memory 80
    alignkit plan --preset all --gpu-memory 24

The shape (layers ``L``, hidden ``h``, intermediate ``I``, query width ``q`` = heads x head_dim, key/value width
``kv`` = kv_heads x head_dim, vocabulary ``V``, tied embeddings) comes from the base model's ``config.json`` (a local
folder, or a Hub id already in the HF cache), from :data:`KNOWN_BASES` for the preset bases, or from
``base_build`` for the embedded bases. Every stage is modelled the way alignkit runs it, in bytes:

* **weights** ``W``: dense ``N x b`` (``N`` parameters, ``b`` = 4 for float32, 2 for bfloat16/float16). QLoRA
  training: the decoder's linear weights in NF4 (:data:`NF4_BYTES` per parameter, double-quantised absmax
  included) and every other parameter in float32 (peft's ``prepare_model_for_kbit_training`` upcasts embeddings,
  LM head and norms). 4-bit inference (evaluation of a QLoRA adapter) keeps those in the model dtype.
* **training state** ``S``: full fine-tuning ``N x 3b`` (gradients and AdamW's two moments in the weights' dtype);
  LoRA/QLoRA ``P x 16`` with ``P = L x r x (7h + 2q + 2kv + 3I)`` adapter parameters on all seven projections
  (float32 weight, gradient and two moments), plus ``P x 4`` for TRL's frozen ``ref`` copy when DPO continues an
  SFT adapter.
* **training activations** for ``T`` tokens (batch x ``max_length``, twice that for DPO's chosen + rejected rows;
  every sequence is assumed full length, so this is an upper bound). Per token and layer the backward keeps
  ``A = a x (2h + 3q + 3kv + 4I [+ 5h + q + I with LoRA dropout]) + 16h`` bytes (``a`` = activation bytes; norm
  inputs and outputs, q/k/v before and after RoPE, attention output, gate/up/act/product of the MLP, the dropout
  copies LoRA feeds its adapters, and two float32 RMSNorm buffers). Without gradient checkpointing the peak is
  ``(L + 1) x A x T`` (one extra layer for the backward's working set); with it, ``L x r_b x h x T + 2 x A x T``
  (layer inputs in the residual stream's dtype ``r_b``, float32 under QLoRA, plus one recomputed layer and its
  gradients). TRL's fused LM head adds ``a x min(V, 32768) x (min(T, 4096) + h) + 4 x h x T`` (one logits tile,
  one weight slice, the float32 gradient of the last hidden states).
* **generation** (stages 01, 03, 06 and the SFT samples of 02) of ``B`` prompts of ``P`` tokens plus ``n`` new ones:
  KV cache ``2 x L x kv x a x B x (P + n)`` plus the prefill's MLP working set ``a x B x P x (3I + 2h)``, plus
  ``12 x B x V`` for the last position's float32 logits, scores and probabilities (logits are computed for the last
  position only). ``P`` = :data:`PROMPT_TOKENS` per template prompt, ``few_shot + 1`` times that for few-shot
  prompts (stage 01, and a few-shot evaluated base in stage 06). Generation loads the weights dense in the model
  dtype, except stage 06's QLoRA adapters, which go on 4-bit weights as they were trained.
* **log-probabilities** (stage 04): full logits ``B x S x V x (a + 8)`` (model dtype, a float32 copy and its
  log-softmax) plus the prefill working set, ``S`` = ``pairs.max_length``.

A stage's peak is the largest of its steps. It fits a GPU of ``G`` GiB when ``peak x 1.10 + 0.75 GiB <= G`` (10%
for the caching allocator's fragmentation, :data:`CUDA_CONTEXT_GIB` for the CUDA context and cuBLAS workspace);
"tight" when it fits only without the 10% margin.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignkit.config import (
    ConfigError,
    StudyConfig,
    TrainSettings,
    available_presets,
    resolve,
)

log = logging.getLogger(__name__)

GIB = 2**30
#: NF4 with double quantisation: 4 bits per weight, one 8-bit absmax per 64 weights, one float32 per 256 absmax.
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
#: Tokens assumed per template prompt (one instruction; the longest constraint instructions stay under it).
PROMPT_TOKENS = 64
#: TRL's fused LM head: tokens and vocabulary entries per logits tile.
HEAD_TILE_TOKENS, HEAD_TILE_VOCAB = 4096, 32768
#: CUDA context and cuBLAS workspace, outside the tensors the allocator reports (GiB).
CUDA_CONTEXT_GIB = 0.75
#: Headroom for the caching allocator's fragmentation (fraction of the estimate).
ALLOCATOR_MARGIN = 0.10
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a decoder-only transformer (Llama/Qwen2/Mistral layout) that memory depends on."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool
    qkv_bias: bool = False
    head_dim: int = 0  # 0: hidden / heads

    @property
    def q(self) -> int:
        return self.heads * (self.head_dim or self.hidden // self.heads)

    @property
    def kv(self) -> int:
        return self.kv_heads * (self.head_dim or self.hidden // self.heads)

    @property
    def linear_per_layer(self) -> int:
        """Weights of the seven projections of one layer (the ones QLoRA quantises and LoRA adapts)."""
        h = self.hidden
        return h * self.q * 2 + h * self.kv * 2 + 3 * h * self.intermediate

    @property
    def embedding(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2)

    @property
    def parameters(self) -> int:
        """All parameters: embeddings (+ LM head), projections, q/k/v biases, two norms per layer, final norm.

        >>> KNOWN_BASES["Qwen/Qwen2.5-7B"].parameters
        7615616512
        """
        other = (self.q + 2 * self.kv if self.qkv_bias else 0) + 2 * self.hidden
        return self.embedding + self.layers * (self.linear_per_layer + other) + self.hidden

    def lora_parameters(self, rank: int) -> int:
        """Adapter parameters with rank ``rank`` on all seven projections (A: in x r, B: r x out).

        >>> KNOWN_BASES["Qwen/Qwen2.5-7B"].lora_parameters(16)
        40370176
        """
        h, q, kv, i = self.hidden, self.q, self.kv, self.intermediate
        per_layer = (h + q) + 2 * (h + kv) + (q + h) + 2 * (h + i) + (i + h)
        return self.layers * rank * per_layer

    def describe(self) -> str:
        count = f"{self.parameters / 1e9:.2f}B" if self.parameters >= 1e9 else f"{self.parameters / 1e6:.2f}M"
        return (f"{count} parameters; {self.layers} layers, hidden {self.hidden}, intermediate "
                f"{self.intermediate}, heads {self.heads}/{self.kv_heads} kv, vocab {self.vocab}, "
                f"{'tied' if self.tied else 'untied'} embeddings")


#: From the public config.json of each base model (the instruct variants share the shapes).
KNOWN_BASES: dict[str, ModelShape] = {
    "Qwen/Qwen2.5-0.5B": ModelShape(24, 896, 4864, 14, 2, 151936, tied=True, qkv_bias=True),
    "Qwen/Qwen2.5-7B": ModelShape(28, 3584, 18944, 28, 4, 152064, tied=False, qkv_bias=True),
    "Qwen/Qwen2.5-32B": ModelShape(64, 5120, 27648, 40, 8, 152064, tied=False, qkv_bias=True),
}


def shape_from_config(config: dict[str, Any]) -> ModelShape:
    """A :class:`ModelShape` from a Hugging Face ``config.json`` dict.

    >>> shape_from_config({"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
    ...                    "num_attention_heads": 4, "vocab_size": 320}).kv_heads
    4
    """
    required = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "vocab_size")
    missing = [key for key in required if not isinstance(config.get(key), int)]
    if missing:
        raise ConfigError(f"config.json: missing or non-integer {', '.join(missing)}; alignkit plan reads a "
                          "decoder-only (Llama/Qwen2/Mistral-style) config")
    return ModelShape(
        layers=config["num_hidden_layers"], hidden=config["hidden_size"], intermediate=config["intermediate_size"],
        heads=config["num_attention_heads"],
        kv_heads=config.get("num_key_value_heads") or config["num_attention_heads"],
        vocab=config["vocab_size"], tied=bool(config.get("tie_word_embeddings", True)),
        qkv_bias=bool(config.get("attention_bias", config.get("model_type") == "qwen2")),
        head_dim=int(config.get("head_dim") or 0))


def model_shape(cfg: StudyConfig) -> tuple[ModelShape, str]:
    """The base model's shape and where it came from (embedded build config, local config.json, table, HF cache)."""
    from alignkit.modeling import _checkpoint_json

    base = cfg.model.base
    if cfg.embedded_base:
        b = cfg.base_build
        # The BPE tokenizer is trained up to vocab_size entries, so this is the embedding's upper bound.
        return ModelShape(b.num_layers, b.hidden_size, b.intermediate_size, b.num_heads, b.num_heads, b.vocab_size,
                          tied=True), "the embedded base's base_build section"
    local = Path(base).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ConfigError(f"model.base: {local} has no config.json; alignkit plan needs the model's config")
        return shape_from_config(_checkpoint_json(str(local), "config.json", None) or {}), f"{local / 'config.json'}"
    if base in KNOWN_BASES:
        return KNOWN_BASES[base], "alignkit's table of the preset base models"
    cached = _checkpoint_json(base, "config.json", cfg.model.revision)
    if cached is not None:
        return shape_from_config(cached), "config.json in the Hugging Face cache"
    raise ConfigError(f"model.base: no config.json for {base!r} (not a local folder, not in alignkit.plan.KNOWN_BASES, "
                      "not in the HF cache); download it first, e.g. HF_HUB_OFFLINE=0 python -c \"from huggingface_hub "
                      f"import hf_hub_download as d; d('{base}', 'config.json')\"")


@dataclass(frozen=True)
class Step:
    """One memory-relevant step of a stage; sizes in bytes."""

    stage: str
    step: str
    weights: float
    state: float
    working: float

    @property
    def peak(self) -> float:
        return self.weights + self.state + self.working


def _dense(shape: ModelShape, dtype: str) -> float:
    return shape.parameters * DTYPE_BYTES[dtype]


def _nf4(shape: ModelShape, other_bytes: int) -> float:
    quantised = shape.layers * shape.linear_per_layer
    return quantised * NF4_BYTES + (shape.parameters - quantised) * other_bytes


def _layer_bytes(shape: ModelShape, act: int, lora_dropout: bool) -> float:
    """Bytes the backward keeps per token for one layer (``A`` in the module docstring).

    >>> _layer_bytes(KNOWN_BASES["Qwen/Qwen2.5-7B"], 2, lora_dropout=True)  # bf16 QLoRA: about 0.31 MiB
    328704
    """
    h, q, kv, i = shape.hidden, shape.q, shape.kv, shape.intermediate
    values = 2 * h + 3 * q + 3 * kv + 4 * i + ((5 * h + q + i) if lora_dropout else 0)
    return act * values + 16 * h


def train_step(stage: str, shape: ModelShape, cfg: StudyConfig, train: TrainSettings, *, rows_per_example: int,
               ref_adapter: bool) -> Step:
    """Peak of one training step of ``train`` (SFT: one row per example; DPO: chosen + rejected).

    >>> cfg = resolve("qwen2.5-7b-qlora")
    >>> step = train_step("02_sft_training", KNOWN_BASES["Qwen/Qwen2.5-7B"], cfg, cfg.sft, rows_per_example=1,
    ...                   ref_adapter=False)
    >>> step.step, round(step.peak / GIB, 2)
    ('train qlora, 8 x 384 tokens, gradient checkpointing', 11.27)
    """
    dtype = cfg.model.dtype
    act = DTYPE_BYTES[dtype]
    tokens = train.batch_size * rows_per_example * train.max_length
    if train.method == "full":
        weights, state = _dense(shape, dtype), shape.parameters * 3 * act
    else:
        lora = shape.lora_parameters(train.lora_r)
        weights = _nf4(shape, 4) if train.method == "qlora" else _dense(shape, dtype)
        state = lora * 16 + (lora * 4 if ref_adapter else 0)
    residual = 4 if train.method == "qlora" else act  # float32 embeddings put the residual stream in float32
    layer = _layer_bytes(shape, act, lora_dropout=train.method != "full" and train.lora_dropout > 0)
    if train.gradient_checkpointing:
        saved = shape.layers * residual * shape.hidden * tokens + 2 * layer * tokens
    else:
        saved = (shape.layers + 1) * layer * tokens
    head = act * min(shape.vocab, HEAD_TILE_VOCAB) * (min(tokens, HEAD_TILE_TOKENS) + shape.hidden) \
        + 4 * shape.hidden * tokens
    checkpointing = ", gradient checkpointing" if train.gradient_checkpointing else ""
    what = f"train {train.method}, {train.batch_size * rows_per_example} x {train.max_length} tokens{checkpointing}"
    return Step(stage, what, weights, state, saved + head)


def generate_step(stage: str, shape: ModelShape, cfg: StudyConfig, what: str, *, batch: int, prompt: int,
                  new: int, four_bit: bool = False) -> Step:
    """Peak of batched generation: weights, KV cache of the longest batch, prefill working set.

    >>> step = generate_step("06_evaluation", KNOWN_BASES["Qwen/Qwen2.5-7B"], resolve("qwen2.5-7b-qlora"), "base",
    ...                      batch=32, prompt=64, new=128)
    >>> step.step, round(step.weights / GIB, 2), round(step.working / GIB, 3)
    ('base, 32 x (64 + 128) tokens', 14.19, 0.627)
    """
    act = DTYPE_BYTES[cfg.model.dtype]
    weights = _nf4(shape, act) if four_bit else _dense(shape, cfg.model.dtype)
    kv_cache = 2 * shape.layers * shape.kv * act * batch * (prompt + new)
    prefill = act * batch * prompt * (3 * shape.intermediate + 2 * shape.hidden) + 4 * batch * shape.vocab * 3
    label = f"{what}{' (4-bit)' if four_bit else ''}, {batch} x ({prompt} + {new}) tokens"
    return Step(stage, label, weights, 0.0, kv_cache + prefill)


def plan_steps(cfg: StudyConfig, shape: ModelShape) -> list[Step]:
    """Every memory-relevant step of the six stages, in order (stage 06: one step per prompt length and loading).

    >>> [step.stage[:2] for step in plan_steps(resolve("tiny"), model_shape(resolve("tiny"))[0])]
    ['01', '02', '02', '03', '04', '05', '06', '06']
    """
    from alignkit.config import STAGES

    s01, s02, s03, s04, s05, s06 = STAGES
    ev, neg, pairs = cfg.evaluation, cfg.negatives, cfg.pairs
    act = DTYPE_BYTES[cfg.model.dtype]
    sft_adapter = cfg.sft.method == "qlora" or (cfg.sft.method == "lora" and not cfg.sft.merge_adapter)
    logits = pairs.batch_size * pairs.max_length * shape.vocab * (act + 8)
    prefill = act * pairs.batch_size * pairs.max_length * (3 * shape.intermediate + 2 * shape.hidden)
    # Stage 06 loads a QLoRA adapter onto 4-bit weights; base models, merged and LoRA models load dense.
    quantised = {"sft": cfg.sft.method == "qlora", "sft_dpo": cfg.dpo.method == "qlora",
                 "dpo_only": cfg.dpo.method == "qlora"}
    dense_eval = [m for m in ev.models if not quantised.get(m, False)]
    four_bit_eval = [m for m in ev.models if quantised.get(m, False)]
    steps = [
        generate_step(s01, shape, cfg, "generate few-shot (base)", batch=cfg.sft_data.batch_size,
                      prompt=(cfg.sft_data.few_shot + 1) * PROMPT_TOKENS, new=cfg.sft_data.max_new_tokens),
        train_step(s02, shape, cfg, cfg.sft, rows_per_example=1, ref_adapter=False),
        generate_step(s02, shape, cfg, "samples (base, SFT)", batch=ev.batch_size, prompt=PROMPT_TOKENS,
                      new=ev.max_new_tokens),
        generate_step(s03, shape, cfg, "generate (SFT, base)", batch=neg.batch_size, prompt=PROMPT_TOKENS,
                      new=neg.max_new_tokens),
        Step(s04, f"log-probs (SFT), {pairs.batch_size} x {pairs.max_length} tokens, full logits",
             _dense(shape, cfg.model.dtype), 0.0, logits + prefill),
        train_step(s05, shape, cfg, cfg.dpo, rows_per_example=2, ref_adapter=sft_adapter and cfg.dpo.method != "full"),
    ]
    few_shot_prompt = (cfg.sft_data.few_shot + 1) * PROMPT_TOKENS
    for models, four_bit in ((dense_eval, False), (four_bit_eval, True)):
        # A few-shot evaluated base gets stage 01's few-shot prompts; every other model the template prompt.
        for prompt in sorted({few_shot_prompt if "fewshot" in m else PROMPT_TOKENS for m in models}):
            group = [m for m in models if (few_shot_prompt if "fewshot" in m else PROMPT_TOKENS) == prompt]
            steps.append(generate_step(s06, shape, cfg, f"generate ({', '.join(group)})", batch=ev.batch_size,
                                       prompt=prompt, new=ev.max_new_tokens, four_bit=four_bit))
    return steps


def stage_peaks(steps: list[Step]) -> dict[str, Step]:
    """The largest step of each stage, in stage order.

    >>> peaks = stage_peaks([Step("02", "train", 1, 2, 3), Step("02", "samples", 1, 0, 1), Step("03", "gen", 1, 0, 0)])
    >>> {stage: step.step for stage, step in peaks.items()}
    {'02': 'train', '03': 'gen'}
    """
    peaks: dict[str, Step] = {}
    for step in steps:
        if step.stage not in peaks or step.peak > peaks[step.stage].peak:
            peaks[step.stage] = step
    return peaks


def needed_gib(peak_bytes: float) -> float:
    """GPU memory a peak of ``peak_bytes`` needs, with the allocator margin and the CUDA context.

    >>> round(needed_gib(10 * GIB), 2)
    11.75
    """
    return peak_bytes / GIB * (1 + ALLOCATOR_MARGIN) + CUDA_CONTEXT_GIB


def verdict(peak_bytes: float, gpu_gib: float) -> str:
    """``fits``, ``tight`` (only without the fragmentation margin) or ``does not fit``.

    >>> verdict(10 * GIB, 12), verdict(10 * GIB, 11), verdict(10 * GIB, 10)
    ('fits', 'tight', 'does not fit')
    """
    if needed_gib(peak_bytes) <= gpu_gib:
        return "fits"
    if peak_bytes / GIB + CUDA_CONTEXT_GIB <= gpu_gib:
        return "tight"
    return "does not fit"


@dataclass(frozen=True)
class Plan:
    """The memory plan of one resolved config on one GPU size."""

    preset: str
    base: str
    shape: ModelShape
    source: str
    gpu_gib: float
    steps: tuple[Step, ...]

    @property
    def peaks(self) -> dict[str, Step]:
        return stage_peaks(list(self.steps))

    @property
    def peak(self) -> Step:
        return max(self.steps, key=lambda s: s.peak)

    @property
    def fits(self) -> bool:
        return verdict(self.peak.peak, self.gpu_gib) != "does not fit"

    def to_dict(self) -> dict[str, Any]:
        return {"preset": self.preset, "base": self.base, "gpu_gib": self.gpu_gib,
                "shape": dataclasses.asdict(self.shape),
                "stages": {name: {"step": s.step, "peak_gib": round(s.peak / GIB, 3),
                                  "verdict": verdict(s.peak, self.gpu_gib)} for name, s in self.peaks.items()}}

    def lines(self) -> list[str]:
        """The plan as printed: one row per step, then the verdict."""
        width = max(len(s.step) for s in self.steps) + 2
        out = [f"alignkit plan: preset {self.preset} on a {self.gpu_gib:g} GiB GPU",
               f"model {self.base} ({self.source}): {self.shape.describe()}",
               f"{'stage':<21}{'step':<{width}}{'weights':>9}{'state':>8}{'working':>9}{'peak':>8}  verdict  (GiB)"]
        for s in self.steps:
            out.append(f"{s.stage:<21}{s.step:<{width}}{s.weights / GIB:>9.2f}{s.state / GIB:>8.2f}"
                       f"{s.working / GIB:>9.2f}{s.peak / GIB:>8.2f}  {verdict(s.peak, self.gpu_gib)}")
        top = self.peak
        out.append(f"peak: {top.peak / GIB:.2f} GiB in {top.stage} ({top.step.split(',')[0]}); needs "
                   f"{needed_gib(top.peak):.2f} GiB with {ALLOCATOR_MARGIN:.0%} allocator margin + "
                   f"{CUDA_CONTEXT_GIB} GiB CUDA context: {verdict(top.peak, self.gpu_gib)} on {self.gpu_gib:g} GiB")
        return out


def plan(cfg: StudyConfig, gpu_gib: float = 80.0) -> Plan:
    """The memory plan of ``cfg`` on a GPU with ``gpu_gib`` GiB."""
    if not gpu_gib > 0:
        raise ConfigError(f"--gpu-memory: expected a positive size in GiB; got {gpu_gib}")
    shape, source = model_shape(cfg)
    return Plan(cfg.preset, cfg.model.base, shape, source, gpu_gib, tuple(plan_steps(cfg, shape)))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="tiny", help="preset name, or 'all' for every shipped preset")
    parser.add_argument("--gpu-memory", type=float, default=80.0, metavar="GIB",
                        help="GPU memory in GiB as `alignkit doctor` prints it (default 80)")
    parser.add_argument("--config", dest="config_file", help="user YAML config layered over the preset")
    parser.add_argument("-p", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. -p sft.batch_size=4 (repeatable)")


def command(args: argparse.Namespace) -> int:
    """Print the plan of each requested preset; exit 1 when a stage does not fit, 2 on a config error."""
    presets = available_presets() if args.preset == "all" else [args.preset]
    fits = True
    try:
        for index, name in enumerate(presets):
            result = plan(resolve(name, args.config_file, args.overrides), args.gpu_memory)
            print(("\n" if index else "") + "\n".join(result.lines()))
            fits = fits and result.fits
    except ConfigError as error:
        print(f"alignkit plan: config error: {error}", file=sys.stderr)
        return 2
    return 0 if fits else 1
