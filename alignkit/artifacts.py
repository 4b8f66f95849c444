"""Where each stage's outputs live, as the later stages, the report and the notebooks load them: the SFT model of a
training seed, the DPO models, and what each DPO run started from. No stage imports another stage; they all ask
here, and here asks the run's manifests (never "the newest file by glob")."""

from __future__ import annotations

from pathlib import Path

from alignkit.runs import Run
from alignkit.tinybase import ensure_base

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
