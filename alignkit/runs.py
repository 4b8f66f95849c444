"""Runs, stage folders, manifests and the stage cache.

A run lives in ``$ALIGNKIT_HOME/runs/<run_id>/`` with one folder per stage (``01_sft_data`` ...
``06_evaluation``); its report goes to ``$ALIGNKIT_REPORTS/<run_id>/``. Each stage folder gets a
``manifest.json`` written last and atomically. A later stage finds its inputs through the earlier stage's
manifest, never by globbing for the newest file. A stage whose fingerprint (its config sections, the seed, the
sha256 of every input and the hash of its code) matches a complete manifest whose outputs are intact is skipped.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import logging
import os
import platform
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignkit import files, threads
from alignkit.config import (
    PER_SEED_STAGES,
    STAGE_MODULES,
    STAGE_SECTIONS,
    STAGES,
    ConfigError,
    StudyConfig,
    config_hash,
    resolve,
)

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
#: Libraries whose versions go into every manifest.
TRACKED_LIBRARIES = ("alignkit", "torch", "transformers", "trl", "peft", "datasets", "accelerate", "tokenizers",
                     "bitsandbytes", "numpy")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class StageInputError(RuntimeError):
    """A stage's inputs are missing or incomplete; the message says which stage to run first."""


def _default_base() -> Path:
    """The checkout's root when alignkit runs from one (so notebooks, whose working directory is
    ``notebooks/``, and the CLI agree on ``data/``), else the current directory (an installed package)."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir() else Path.cwd()


def home() -> Path:
    """``$ALIGNKIT_HOME`` (default: ``data/`` of the checkout): runs, built base models, caches."""
    env = os.environ.get("ALIGNKIT_HOME")
    return Path(env).expanduser().resolve() if env else _default_base() / "data"


def reports_root() -> Path:
    """``$ALIGNKIT_REPORTS`` (default: ``reports/`` of the checkout): one folder of rendered report per run."""
    env = os.environ.get("ALIGNKIT_REPORTS")
    return Path(env).expanduser().resolve() if env else _default_base() / "reports"


def check_run_id(run_id: str) -> str:
    """A run id is a folder name: letters, digits, ``.``, ``_``, ``-``; no path separators or ``..``.

    >>> check_run_id("tiny-seed1")
    'tiny-seed1'
    """
    if not _RUN_ID.match(run_id) or ".." in run_id:
        raise ConfigError(f"run_id: {run_id!r} is not a valid folder name; use letters, digits, '.', '_' and '-'")
    return run_id


def stage_name(token: str) -> str:
    """Resolve ``"2"``, ``"02"`` or ``"02_sft_training"`` to the stage folder name.

    >>> stage_name("3")
    '03_negatives'
    """
    for stage in STAGES:
        if token == stage or token.lstrip("0") == stage[:2].lstrip("0"):
            return stage
    raise ConfigError(f"stage {token!r}: expected one of {', '.join(STAGES)} (or its number)")


def stage_range(spec: str) -> list[str]:
    """``"01-03"`` -> the first three stage names; ``"2,5"`` -> those two; ``"all"`` -> every stage.

    >>> stage_range("01-02")
    ['01_sft_data', '02_sft_training']
    """
    if spec in ("all", ""):
        return list(STAGES)
    chosen: list[str] = []
    for part in spec.split(","):
        if "-" in part:
            start, end = (STAGES.index(stage_name(p)) for p in part.split("-", 1))
            if end < start:
                raise ConfigError(f"--stages {spec!r}: range {part!r} runs backwards")
            chosen.extend(STAGES[start : end + 1])
        else:
            chosen.append(stage_name(part))
    return [s for s in STAGES if s in chosen]


@dataclass
class Run:
    """One study run: its id, its resolved config and where its files live.

    A run trains once per training seed (``config.training_seeds``). :meth:`for_seed` gives the view of one seed:
    its ``config.seed`` is that training seed and its per-seed stages (:data:`alignkit.config.PER_SEED_STAGES`)
    live in ``<stage>/seed<N>/``; stage 01 and stage 06 are shared by every seed and live in ``<stage>/``.
    """

    run_id: str
    config: StudyConfig
    root: Path = field(default_factory=home)
    #: The training seed this view belongs to (None: the run as a whole, whose config.seed is the data seed).
    training_seed: int | None = None

    def __post_init__(self) -> None:
        check_run_id(self.run_id)

    def for_seed(self, seed: int) -> Run:
        """This run as seen by training seed ``seed`` (per-seed stage folders, ``config.seed = seed``)."""
        if seed not in self.config.training_seeds:
            raise ConfigError(f"seed {seed}: not one of this run's training seeds {list(self.config.training_seeds)}")
        return Run(self.run_id, self.config.replace(seed=seed), self.root, training_seed=seed)

    def seed_views(self) -> list[Run]:
        """One view per training seed, in the config's order."""
        return [self.for_seed(seed) for seed in self.config.training_seeds]

    @property
    def dir(self) -> Path:
        return self.root / "runs" / self.run_id

    @property
    def report_dir(self) -> Path:
        return reports_root() / self.run_id

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    def stage_dir(self, stage: str) -> Path:
        """``<run>/<stage>/``, or ``<run>/<stage>/seed<N>/`` for a per-seed stage (which needs a seed view)."""
        name = stage_name(stage)
        if name not in PER_SEED_STAGES:
            return self.dir / name
        if self.training_seed is None:
            raise StageInputError(f"{name} runs once per training seed; use run.for_seed(seed) "
                                  f"(seeds {list(self.config.training_seeds)})")
        return self.dir / name / f"seed{self.training_seed}"

    def manifest(self, stage: str) -> dict[str, Any] | None:
        """The stage's complete manifest, or None if it has none (or an incomplete one)."""
        path = self.stage_dir(stage) / MANIFEST
        if not path.is_file():
            return None
        manifest = files.read_json(path)
        return manifest if manifest.get("status") == "complete" else None

    def require(self, stage: str) -> dict[str, Any]:
        """The complete manifest of an earlier stage, or a :class:`StageInputError` saying what to run."""
        manifest = self.manifest(stage)
        if manifest is None:
            raise StageInputError(
                f"{self.stage_dir(stage) / MANIFEST}: missing or incomplete; run that stage first: "
                f"alignkit run --preset {self.config.preset} --run-id {self.run_id} --stages {stage[:2]}")
        return manifest

    def output(self, stage: str, name: str) -> Path:
        """Path of output ``name`` of an earlier stage, taken from its manifest (files are hash-checked)."""
        manifest = self.require(stage)
        outputs = manifest.get("outputs", {})
        if name not in outputs:
            raise StageInputError(f"{self.stage_dir(stage) / MANIFEST}: has no output {name!r} "
                                  f"(has {', '.join(sorted(outputs))})")
        entry = outputs[name]
        path = self.dir / entry["path"]
        if not path.exists():
            raise StageInputError(f"{path}: listed in {stage}/{MANIFEST} but missing; re-run {stage} with --force")
        # Files are hashed on every access (data files are small); folders (model weights, possibly many GB)
        # are hashed when a stage fingerprints its inputs, not on every lookup.
        if path.is_file() and files.sha256_file(path) != entry["sha256"]:
            raise StageInputError(f"{path}: sha256 differs from {stage}/{MANIFEST}; the file changed after the "
                                  f"stage wrote it. Re-run {stage} with --force")
        return path


def open_run(preset: str = "tiny", config_file: str | None = None, overrides: list[str] | str | None = None,
             run_id: str | None = None) -> Run:
    """Resolve the config and return the :class:`Run` (default run id: the preset name)."""
    cfg = resolve(preset, config_file or None, overrides)
    threads.set_threads(cfg.runtime.threads)
    threads.log_once()
    return Run(run_id=run_id or preset, config=cfg)


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries that decide results (None when not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in TRACKED_LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    """The commit of the alignkit checkout (``+dirty`` when it has uncommitted changes), None outside git."""
    repo = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def fingerprint_path(path: Path) -> str:
    """sha256 of a file, or of a folder's tree."""
    return files.sha256_tree(path) if path.is_dir() else files.sha256_file(path)


@dataclass
class StageContext:
    """What a stage body gets: its folder, its run, and a place to record outputs and QC numbers."""

    run: Run
    stage: str
    dir: Path
    force: bool
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> StudyConfig:
        return self.run.config

    def path(self, name: str) -> Path:
        return self.dir / name

    def add_output(self, name: str, path: Path, rows: int | None = None, kind: str | None = None) -> None:
        """Register an output file or folder; its sha256 goes into the manifest.

        ``kind`` (a :mod:`alignkit.schemas` kind) validates a JSONL output with the same checks the next
        stage applies to its inputs, so a stage never completes with data its successor would refuse.
        """
        if not is_main_process():  # rank 0 writes and registers outputs
            return
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: stage {self.stage} registered an output that does not exist")
        if kind is not None:
            from alignkit.schemas import InvalidInputError, validate_file

            _rows, defects = validate_file(path, kind)
            if defects:
                raise InvalidInputError(defects, kind)
        self.outputs[name] = {"path": str(path.relative_to(self.run.dir)), "sha256": fingerprint_path(path),
                              "rows": rows}


def rank() -> int:
    """This process's rank under torchrun / accelerate launch (0 when not distributed)."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """Number of processes under torchrun / accelerate launch (1 when not distributed)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Only rank 0 writes manifests and outputs; other ranks train and wait."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op unless a torch.distributed process group is running)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def stage_fingerprint(config_part: dict[str, Any], input_hashes: dict[str, str], code: str) -> str:
    """What decides a stage's outputs: its config sections, its inputs' sha256, and the hash of its code (the
    stage module and every alignkit module it imports: editing the scorer redoes the stages that use it, editing
    nothing redoes nothing; see :mod:`alignkit.codehash`)."""
    # The number of processes too: data-parallel training (torchrun) splits the batch over the ranks, so it is a
    # different training than one process, and a cached single-process result must not stand in for it.
    return config_hash({"config": config_part, "inputs": input_hashes, "code": code, "processes": world_size()})


def stage_config(run: Run, stage: str) -> dict[str, Any]:
    """The config sections that decide ``stage``'s outputs (its seed and :data:`STAGE_SECTIONS`), as its
    fingerprint and manifest record them."""
    return {name: run.config.section(name) for name in ("seed", *STAGE_SECTIONS[stage_name(stage)])}


def stage_code(stage: str) -> dict[str, Any]:
    """The code identity of ``stage``: its module, the hash of its import closure, and whether the checkout had
    uncommitted changes (recorded in the manifest and shown in the report's provenance)."""
    from alignkit import codehash

    module = STAGE_MODULES[stage_name(stage)]
    return {"module": module, "hash": codehash.code_hash(module), "dirty": codehash.checkout_dirty()}


def is_cached(run: Run, stage: str) -> bool:
    """Whether ``stage`` would be taken from the cache now, judged from its manifest alone: the same config
    sections and input files it recorded still hash to its fingerprint, and its outputs are intact (for a per-seed
    stage, under every training seed). Lets the notebook runner skip a notebook whose stage has nothing to do."""
    if stage_name(stage) in PER_SEED_STAGES and run.training_seed is None:
        return all(is_cached(view, stage) for view in run.seed_views())
    manifest = run.manifest(stage)
    if manifest is None:
        return False
    try:
        config_part = {name: run.config.section(name) for name in manifest["config"]}
        input_hashes = {name: fingerprint_path(Path(entry["path"])) for name, entry in manifest["inputs"].items()}
    except (KeyError, AttributeError, OSError):
        return False
    code = stage_code(stage)["hash"]
    return stage_fingerprint(config_part, input_hashes, code) == manifest.get("fingerprint") and \
        _outputs_intact(run, manifest)


def _outputs_intact(run: Run, manifest: dict[str, Any]) -> bool:
    for entry in manifest.get("outputs", {}).values():
        path = run.dir / entry["path"]
        if not path.exists() or fingerprint_path(path) != entry["sha256"]:
            return False
    return True


def execute_stage(run: Run, stage: str, *, inputs: dict[str, Path], body: Callable[[StageContext], None],
                  force: bool = False) -> dict[str, Any]:
    """Run ``body`` for ``stage`` unless a complete manifest with the same fingerprint exists.

    The stage depends on the seed and its config sections (:data:`alignkit.config.STAGE_SECTIONS`);
    ``inputs`` are the files/folders it reads. The manifest is written last and atomically; a stage that
    fails or is killed leaves ``status: running`` (or ``failed``), never ``complete``. Under torchrun /
    accelerate launch every rank executes ``body`` and rank 0 alone writes the manifest.
    """
    stage = stage_name(stage)
    stage_dir = run.stage_dir(stage)
    config_part = stage_config(run, stage)
    input_entries = {name: {"path": str(path), "sha256": fingerprint_path(Path(path))}
                     for name, path in sorted(inputs.items())}
    code = stage_code(stage)
    fingerprint = stage_fingerprint(config_part, {k: v["sha256"] for k, v in input_entries.items()}, code["hash"])

    label = stage if run.training_seed is None else f"{stage} (seed {run.training_seed})"
    existing = run.manifest(stage)
    if existing and not force:
        if existing.get("fingerprint") == fingerprint and _outputs_intact(run, existing):
            log.info("%s: cached (fingerprint %s); use --force to redo it", label, fingerprint)
            return existing
        log.info("%s: config or inputs changed since the last run; running it again", label)
    if not force and stage in ADOPTABLE_STAGES and is_main_process():
        adopted = adopt(run, stage_dir, fingerprint, input_entries)
        if adopted is not None:
            log.info("%s: taken from run %s (same config, inputs and code)", label, adopted["adopted_from"]["run_id"])
            return adopted

    stage_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = stage_dir / MANIFEST
    main = is_main_process()
    base = {"stage": stage, "run_id": run.run_id, "preset": run.config.preset, "seed": run.config.seed,
            "fingerprint": fingerprint, "config": config_part, "inputs": input_entries, "code": code,
            "experiment": run.config.section("experiment"), "processes": world_size(),
            "versions": library_versions(), "git_commit": git_commit(), "started": _now()}
    # Mark the stage as running before any work: a kill leaves no complete-looking manifest behind.
    if main:
        files.write_json(manifest_path, {**base, "status": "running"})
    ctx = StageContext(run=run, stage=stage, dir=stage_dir, force=force)
    threads_before = threads.follower_summary()
    started = time.monotonic()
    try:
        body(ctx)
    except BaseException as error:
        if main:
            files.write_json(manifest_path, {**base, "status": "failed", "finished": _now(),
                                             "error": f"{type(error).__name__}: {error}",
                                             "seconds": round(time.monotonic() - started, 2)})
        raise
    # How torch's CPU thread count followed the load in this process (None: fixed by the user or the config).
    manifest = {**base, "status": "complete", "outputs": ctx.outputs, "summary": ctx.summary,
                "finished": _now(), "seconds": round(time.monotonic() - started, 2),
                "cpu_threads": threads.follower_summary()}
    if main:
        files.write_json(manifest_path, manifest)
    if threads_before and manifest["cpu_threads"]["changes"] > threads_before["changes"]:
        # Training splits some reductions by thread: its last bits (and so, rarely, a greedy token) depend on it.
        log.warning("%s: other processes were using the CPUs, so the torch thread count changed during this stage "
                    "(lowest %d of %d); its numbers may differ in the last bits from a run on an idle machine. For "
                    "bit-identical reruns beside other jobs, set ALIGNKIT_THREAD_POLICY=fixed.", label,
                    manifest["cpu_threads"]["lowest"], manifest["cpu_threads"]["ceiling"])
    barrier()
    if not main:
        return files.read_json(manifest_path)
    log.info("%s: complete in %.1f s", label, manifest["seconds"])
    return manifest


#: Stages whose complete output another run may share (every stage before evaluation, whose results and report
#: belong to one run).
ADOPTABLE_STAGES = STAGES[:-1]


def adopt(run: Run, stage_dir: Path, fingerprint: str, input_entries: dict[str, Any]) -> dict[str, Any] | None:
    """Share a stage another run of this ``ALIGNKIT_HOME`` already computed with the same fingerprint (config
    sections, seed, input hashes, code): its folder is linked file by file into ``stage_dir`` (hard links, so no
    extra disk; copies across file systems; training checkpoints are left behind) and its manifest rewritten for
    this run. Sweeps share their unchanged upstream stages this way. Returns the new manifest, or None."""
    relative = stage_dir.relative_to(run.dir)
    runs_root = run.root / "runs"
    if not runs_root.is_dir():
        return None
    for other in sorted(p for p in runs_root.iterdir() if p.is_dir() and p.name != run.run_id):
        source = other / relative
        path = source / MANIFEST
        if not path.is_file():
            continue
        try:
            manifest = files.read_json(path)
        except ValueError:
            continue
        if manifest.get("status") != "complete" or manifest.get("fingerprint") != fingerprint:
            continue
        if not all((other / e["path"]).exists() and fingerprint_path(other / e["path"]) == e["sha256"]
                   for e in manifest.get("outputs", {}).values()):
            continue
        with fresh_dir(stage_dir) as tmp:
            for item in source.iterdir():
                if item.name == MANIFEST or item.name.startswith(("checkpoints", ".")) or item.suffix == ".ipynb":
                    continue
                if item.is_dir():
                    shutil.copytree(item, tmp / item.name, copy_function=_link_or_copy)
                else:
                    _link_or_copy(item, tmp / item.name)
        adopted = {**manifest, "run_id": run.run_id, "inputs": input_entries,
                   "experiment": run.config.section("experiment"), "adopted_from":
                   {"run_id": other.name, "path": str(source), "at": _now()}}
        files.write_json(stage_dir / MANIFEST, adopted)
        return adopted
    return None


def _link_or_copy(source: str | Path, target: str | Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


@contextlib.contextmanager
def fresh_dir(path: Path) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``path``; on success it replaces ``path`` (for output folders such as a
    saved model). A write that fails for lack of space or rights, in the block or in the swap, becomes one
    :class:`alignkit.files.WriteFailed` line naming ``path``; the partial folder is removed and ``path`` kept."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except OSError as error:
        if isinstance(error, files.WriteFailed) or error.errno not in files.WRITE_FAILURES:
            raise
        raise files.WriteFailed(path, error.errno) from error
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
