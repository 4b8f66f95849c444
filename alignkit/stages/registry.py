"""The stage registry: stage folder name -> the function that runs it (what notebooks and ``alignkit stage`` call)."""

from __future__ import annotations

import importlib
from typing import Any

from alignkit.config import PER_SEED_STAGES, STAGE_MODULES
from alignkit.lock import run_lock
from alignkit.runs import Run, stage_name, world_size

#: stage -> module whose ``run(run, force)`` executes it (for a per-seed stage: one seed's view of the run).
MODULES = STAGE_MODULES

#: Stages whose work is training and runs under torchrun / accelerate launch (every rank trains, rank 0 writes).
DISTRIBUTED = ("02_sft_training", "05_dpo_training")


def run_stage(run: Run, stage: str, force: bool = False) -> dict[Any, Any]:
    """Run one stage (cached unless ``force``) holding the run's lock (one writer per run; re-entrant, and taken
    over from the ``alignkit run`` that started this notebook's kernel). Returns its manifest, or for a per-seed
    stage ``{seed: manifest}`` over the run's training seeds (each seed's unit is cached on its own). After stage
    06 the report is rendered (``reports/<run_id>/report.html``)."""
    stage = stage_name(stage)
    if world_size() > 1 and stage not in DISTRIBUTED:
        raise RuntimeError(f"{stage} runs in one process; launch only the training stages (02, 05) with "
                           "torchrun/accelerate launch, and the others with `alignkit stage` or `alignkit run`")
    module = importlib.import_module(MODULES[stage])
    with run_lock(run.dir, f"stage {stage}"):
        if stage in PER_SEED_STAGES:
            return {view.training_seed: module.run(view, force=force) for view in run.seed_views()}
        manifest = module.run(run, force=force)
    if stage == "06_evaluation":
        from alignkit import report

        report.build(run)  # a reader: results.json is complete, no lock needed
    return manifest
