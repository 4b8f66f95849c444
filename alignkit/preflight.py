"""Checks ``alignkit run`` makes before any notebook starts: the config, the base model, the disk, the run lock.

A run that fails preflight leaves no folder behind: the checks only read, and the lock (which creates the run
folder) is taken last, by the caller, once everything else passed.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alignkit import disk
from alignkit.config import StudyConfig
from alignkit.runs import Run

log = logging.getLogger(__name__)

#: Disk the embedded base models need for a whole run (models, checkpoints, data, notebooks), in bytes: the tiny
#: study writes about 60 MB per training seed; this leaves room for several runs.
EMBEDDED_RUN_BYTES = 500 * 1024 * 1024


def check_model(cfg: StudyConfig) -> None:
    """The base model exists and is a causal LM base (an embedded one is built by stage 01 if needed)."""
    if cfg.embedded_base:
        return
    from alignkit.world.tinybase import external_base

    external_base(cfg)  # ConfigError naming model.base and the fix


def needed_bytes(cfg: StudyConfig) -> int | None:
    """An estimate of the disk a whole run needs under ``ALIGNKIT_HOME``: training checkpoints and models of
    stages 02 and 05 for every training seed (None when the base is a Hub id whose size is not known here)."""
    if cfg.embedded_base:
        return EMBEDDED_RUN_BYTES
    base = Path(cfg.model.base).expanduser()
    if not base.is_dir():
        return None
    seeds = len(cfg.training_seeds)
    sft = disk.estimate_training_bytes(base, method=cfg.sft.method, save_total_limit=cfg.sft.save_total_limit,
                                       dtype=cfg.model.dtype, lora_r=cfg.sft.lora_r,
                                       merge_adapter=cfg.sft.merge_adapter)
    dpo = disk.estimate_training_bytes(base, method=cfg.dpo.method, save_total_limit=cfg.dpo.save_total_limit,
                                       dtype=cfg.model.dtype, lora_r=cfg.dpo.lora_r)
    return seeds * (sft + 2 * dpo)


def check_disk(run: Run) -> None:
    needed = needed_bytes(run.config)
    if needed is None:
        log.info("preflight: the size of %s is not known here; disk space is checked again before training",
                 run.config.model.base)
        return
    disk.check_free_space(run.root, needed, f"run {run.run_id!r}")


def preflight(run: Run) -> None:
    """Every check, cheapest first; raises the first problem found (ConfigError, DiskSpaceError). The caller then
    takes the run lock, which fails at once when another process writes this run."""
    check_model(run.config)
    check_disk(run)
