"""The stage registry: stage folder name -> the function that runs it (what notebooks and ``alignkit stage`` call)."""

from __future__ import annotations

import importlib
from typing import Any

from alignkit.runs import Run, stage_name

#: stage -> module whose ``run(run, force)`` executes it.
MODULES = {
    "01_sft_data": "alignkit.sft_data",
    "02_sft_training": "alignkit.sft",
    "03_negatives": "alignkit.negatives",
    "04_preference_pairs": "alignkit.pairs",
    "05_dpo_training": "alignkit.dpo",
    "06_evaluation": "alignkit.evaluation",
}


def run_stage(run: Run, stage: str, force: bool = False) -> dict[str, Any]:
    """Run one stage (cached unless ``force``) and return its manifest."""
    module = importlib.import_module(MODULES[stage_name(stage)])
    return module.run(run, force=force)
