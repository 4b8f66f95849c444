"""Where each stage's outputs live, as the later stages, the report and the notebooks load them: the SFT model of a
training seed, the DPO models, what each DPO run started from, and the evaluated arms as model specs (which
weights, which adapter, which prompt). No stage imports another stage; they all ask here, and here asks the run's
manifests (never "the newest file by glob")."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from alignkit.config import EVAL_MODELS, UNTRAINED_MODELS
from alignkit.runs import Run, fingerprint_path
from alignkit.world.tinybase import ensure_base

log = logging.getLogger(__name__)

#: How an arm is prompted: the study template, or the base model's own few-shot Q:/A: format.
PromptStyle = Literal["template", "fewshot"]

SFT_STAGE = "02_sft_training"
DPO_STAGE = "05_dpo_training"
#: The two DPO runs of every training seed: from the SFT model, and from the base model (the control).
DPO_RUNS = ("sft_dpo", "dpo_only")


def sft_model(run: Run) -> tuple[Path, Path | None]:
    """``(path, adapter)`` that loads one seed's SFT model: the merged folder, or base + adapter for QLoRA."""
    manifest = run.require(SFT_STAGE)
    path = run.output(SFT_STAGE, "model")
    if manifest["summary"]["saved"] == "adapter":
        return ensure_base(run.config), path
    return path, None


def initial_models(run: Run) -> dict[str, tuple[Path, Path | None]]:
    """``{DPO run: (weights path, adapter or None)}``: the SFT model for sft_dpo, the base for dpo_only."""
    return {"sft_dpo": sft_model(run), "dpo_only": (ensure_base(run.config), None)}


def dpo_model(run: Run, name: str) -> tuple[Path, Path | None]:
    """``(weights, adapter)`` for evaluating ``sft_dpo`` or ``dpo_only`` of one seed's view: an adapter goes on
    exactly the weights its run started from (this run's initial model; evaluation checks its hash against the
    one stage 05 recorded), full weights load on their own."""
    manifest = run.require(DPO_STAGE)
    summary = manifest["summary"]["runs"][name]
    out = run.output(DPO_STAGE, name)
    if summary["saved"] == "adapter":
        # A DPO run that started from an SFT adapter kept training that adapter: the saved adapter holds
        # SFT + DPO and goes on the same base weights.
        return Path(initial_models(run)[name][0]), out
    return out, None


class ModelMismatchError(RuntimeError):
    """A DPO adapter would be applied to weights other than those it was trained on."""


@dataclass(frozen=True)
class ModelSpec:
    """How to load and prompt one evaluated model.

    ``path`` holds the weights (and tokenizer); ``adapter`` is a PEFT adapter applied on top (merged for
    inference); ``prompt_style`` is ``"template"`` (``template.prompt``) or ``"fewshot"`` (the base model's own
    Q:/A: format); ``quantize_4bit`` loads the weights in 4-bit NF4, as QLoRA trained the adapter on them;
    ``sha256`` is the fingerprint of the weights and adapter when known (it goes into the resume key).
    """

    path: Path
    adapter: Path | None = None
    prompt_style: PromptStyle = "template"
    quantize_4bit: bool = False
    sha256: str | None = None

    def __post_init__(self) -> None:
        if self.prompt_style not in ("template", "fewshot"):
            raise ValueError(f"ModelSpec.prompt_style must be 'template' or 'fewshot', got {self.prompt_style!r}")


@dataclass(frozen=True)
class Arm:
    """One evaluated model: an arm of the study under one training seed (None for an untrained arm)."""

    name: str
    seed: int | None
    spec: ModelSpec

    @property
    def key(self) -> str:
        """File-name key: ``sft_seed1``, or ``base`` for an untrained arm.

        >>> Arm("sft", 1, ModelSpec(Path("."))).key, Arm("base", None, ModelSpec(Path("."))).key
        ('sft_seed1', 'base')
        """
        return self.name if self.seed is None else f"{self.name}_seed{self.seed}"



def check_dpo_initial_weights(name: str, weights: Path, recorded: str | None) -> None:
    """Refuse to apply ``name``'s adapter unless ``weights`` still hash to what stage 05 trained on."""
    if recorded is None:
        log.warning("%s: stage 05 recorded no hash for its initial model %s (not a local folder); "
                    "cannot check the adapter is applied to the weights it was trained on", name, weights)
        return
    if not Path(weights).exists():
        raise ModelMismatchError(f"{name}: the adapter was trained on {weights}, which no longer exists; "
                                 "restore it or re-run stage 05 with --force")
    actual = fingerprint_path(Path(weights))
    if actual != recorded:
        raise ModelMismatchError(
            f"{name}: the adapter was trained on {weights} with sha256 {recorded[:16]}…, but those weights now hash "
            f"to {actual[:16]}… (05_dpo_training manifest summary.runs.{name}.initial_model_sha256); the "
            "adapter would be evaluated on different weights. Re-run stage 05 with --force, or restore the weights.")


def arms(run: Run) -> list[Arm]:
    """Every model of ``evaluation.models`` to evaluate, untrained arms once and trained ones per seed, with
    DPO weights verified."""
    cfg = run.config
    out: list[Arm] = []
    for name in cfg.evaluation.models:
        if name in UNTRAINED_MODELS:
            out.append(Arm(name, None, ModelSpec(ensure_base(cfg), None,
                                                 "fewshot" if name == "base_fewshot" else "template")))
            continue
        for view in run.seed_views():
            if name == "sft":
                path, adapter = sft_model(view)
                spec = ModelSpec(Path(path), Path(adapter) if adapter else None,
                                 quantize_4bit=adapter is not None and cfg.sft.method == "qlora")
            elif name in ("sft_dpo", "dpo_only"):
                path, adapter = dpo_model(view, name)
                if adapter is not None:
                    summary = view.require(DPO_STAGE)["summary"]["runs"][name]
                    check_dpo_initial_weights(name, Path(path), summary.get("initial_model_sha256"))
                spec = ModelSpec(Path(path), Path(adapter) if adapter else None,
                                 quantize_4bit=adapter is not None and cfg.dpo.method == "qlora")
            else:  # config validation already refuses unknown names
                raise ValueError(f"evaluation.models: unknown model {name!r}; expected any of {', '.join(EVAL_MODELS)}")
            out.append(Arm(name, view.training_seed, spec))
    return out


def model_inputs(arm_list: Sequence[Arm]) -> dict[str, Path]:
    """The stage inputs for the models: each local weights folder and adapter once (Hub ids cannot be hashed).

    >>> sorted(model_inputs([Arm("base", None, ModelSpec(Path("."))), Arm("base_fewshot", None,
    ...                      ModelSpec(Path("."), None, "fewshot"))]))
    ['base_weights']
    """
    inputs: dict[str, Path] = {}
    seen: set[Path] = set()
    for arm in arm_list:
        for role, path in (("weights", arm.spec.path), ("adapter", arm.spec.adapter)):
            if path is None or not Path(path).exists() or Path(path).resolve() in seen:
                continue
            seen.add(Path(path).resolve())
            inputs[f"{arm.key}_{role}"] = Path(path)
    return inputs
