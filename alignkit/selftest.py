"""``alignkit selftest --gpu``: the first command to run on a GPU pod; the whole study, tiny, against the plan.

    make gpu-check                                 (= alignkit selftest --gpu)
    alignkit selftest --gpu [--preset qwen2.5-0.5b] [-p KEY=VALUE ...]

Runs all six stages in this process on the ``qwen2.5-0.5b`` preset shrunk by :data:`SHRINK` (14 SFT examples, a
few optimizer steps per training stage, 14 held-out items), in bfloat16 with QLoRA for SFT and DPO, into the run
``selftest-gpu`` (every stage forced, so each one is measured). Around every stage it resets CUDA's peak
statistics, runs the stage, releases the models (:func:`alignkit.modeling.release`) and records the peak allocated
memory and what is still allocated afterwards. The peak is compared with :mod:`alignkit.plan`'s estimate for the
same config. Prints one row per stage and writes ``selftest.json`` into the run folder.

Exit status: 0 when every stage completed, stayed within its planned peak and gave its memory back (at most
:data:`RELEASE_TOLERANCE_MIB` above the baseline afterwards); 1 otherwise; 2 when it cannot start (no CUDA GPU,
no bf16, or the base model's weights are not available offline), with the fix in the message.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from alignkit.config import STAGES, ConfigError, StudyConfig, resolve

log = logging.getLogger(__name__)

MIB = 2**20
#: What is left allocated after a stage (beyond the baseline before it) before we call it a leak, in MiB.
RELEASE_TOLERANCE_MIB = 64
#: The preset shrunk to a few optimizer steps per stage (14 examples / batch 4 = 4 SFT steps, about 6 DPO steps),
#: bf16 with QLoRA and gradient checkpointing as on the large presets.
SHRINK = (
    "model.dtype=bfloat16", "model.device=cuda", "world.n_eval=14",
    "sft_data.n_examples=14", "sft_data.attempts=2",
    "sft.method=qlora", "sft.merge_adapter=false", "sft.epochs=1", "sft.batch_size=4", "sft.gradient_accumulation=1",
    "sft.gradient_checkpointing=true", "sft.save_steps=1000",
    "negatives.per_example=1.5", "negatives.samples=2", "pairs.min_pairs=14",
    "dpo.method=qlora", "dpo.epochs=1", "dpo.batch_size=4", "dpo.gradient_accumulation=1",
    "dpo.gradient_checkpointing=true", "dpo.save_steps=1000",
    "evaluation.max_new_tokens=48", "evaluation.n_bootstrap=200",
)
RUN_ID = "selftest-gpu"


@dataclass(frozen=True)
class StageResult:
    """One stage as measured: CUDA bytes at the peak and after release, against the planned peak."""

    stage: str
    seconds: float
    baseline_bytes: int
    peak_bytes: int
    after_bytes: int
    planned_bytes: float
    planned_step: str
    error: str | None = None

    def problems(self) -> list[str]:
        """What is wrong with this stage, one sentence each (empty when it passed).

        >>> StageResult("02_sft_training", 1.0, 0, 3 * MIB, 0, 2 * MIB, "train").problems()
        ['02_sft_training: peak 3 MiB is above the plan of 2 MiB (train); the plan underestimates this stage']
        """
        if self.error:
            return [f"{self.stage}: failed: {self.error}"]
        found = []
        if self.peak_bytes > self.planned_bytes:
            found.append(f"{self.stage}: peak {self.peak_bytes / MIB:.0f} MiB is above the plan of "
                         f"{self.planned_bytes / MIB:.0f} MiB ({self.planned_step}); the plan underestimates "
                         "this stage")
        leaked = self.after_bytes - self.baseline_bytes
        if leaked > RELEASE_TOLERANCE_MIB * MIB:
            found.append(f"{self.stage}: {leaked / MIB:.0f} MiB still allocated after the stage released its models "
                         f"(tolerance {RELEASE_TOLERANCE_MIB} MiB): something keeps a model or its tensors alive")
        return found

    def row(self) -> str:
        ratio = f"{self.peak_bytes / self.planned_bytes:.2f}" if self.planned_bytes else "-"
        status = "FAILED" if self.error else ("ok" if not self.problems() else "PROBLEM")
        return (f"{self.stage:<21}{self.seconds:>8.1f}{self.peak_bytes / MIB:>12.0f}{self.planned_bytes / MIB:>12.0f}"
                f"{ratio:>8}{(self.after_bytes - self.baseline_bytes) / MIB:>12.0f}  {status}")


HEADER = f"{'stage':<21}{'seconds':>8}{'peak MiB':>12}{'plan MiB':>12}{'ratio':>8}{'left MiB':>12}  status"


def gpu_config(preset: str = "qwen2.5-0.5b", config_file: str | None = None,
               overrides: list[str] | None = None) -> StudyConfig:
    """The preset shrunk by :data:`SHRINK`; ``overrides`` win over it."""
    return resolve(preset, config_file, [*SHRINK, *(overrides or [])])


def cannot_start(cfg: StudyConfig) -> str | None:
    """Why the GPU check cannot run on this machine (with the fix), or None when it can."""
    import torch

    if not torch.cuda.is_available():
        return (f"no CUDA GPU is visible (torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}, "
                "torch.cuda.is_available() is False). Run it on a GPU pod (README: 'Running on a GPU pod'); "
                "on a CPU, `make test` runs the stand-in tests instead")
    if cfg.model.dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        return (f"{torch.cuda.get_device_name(0)} has no bfloat16 support; the check runs QLoRA in bfloat16 "
                "(Ampere or newer: A100, A10, L4, H100, RTX 30xx/40xx)")
    return weights_missing(cfg)


def weights_missing(cfg: StudyConfig) -> str | None:
    """With ``HF_HUB_OFFLINE=1``, why the base model cannot load (not in the HF cache) and how to fetch it."""
    if cfg.embedded_base or os.path.isdir(cfg.model.base) or os.environ.get("HF_HUB_OFFLINE", "0") in ("0", ""):
        return None
    from alignkit.modeling import _checkpoint_json

    if _checkpoint_json(cfg.model.base, "config.json", cfg.model.revision) is None:
        return (f"model.base {cfg.model.base} is not in the Hugging Face cache (HF_HOME="
                f"{os.environ.get('HF_HOME', '~/.cache/huggingface')}) and HF_HUB_OFFLINE=1; download it first: "
                f"HF_HUB_OFFLINE=0 python -c \"from huggingface_hub import snapshot_download as d; "
                f"d('{cfg.model.base}')\", or unset HF_HUB_OFFLINE")
    return None


def measure_stages(cfg: StudyConfig, run_id: str = RUN_ID, stages: tuple[str, ...] = STAGES) -> list[StageResult]:
    """Run ``stages`` forced, in this process, measuring CUDA memory around each; stops at the first failure."""
    import torch

    from alignkit import modeling, plan
    from alignkit.runs import Run
    from alignkit.stages import registry

    planned = plan.stage_peaks(plan.plan_steps(cfg, plan.model_shape(cfg)[0]))
    run = Run(run_id=run_id, config=cfg)
    results: list[StageResult] = []
    for stage in stages:
        modeling.release()
        baseline = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        started, error = time.monotonic(), None
        try:
            registry.run_stage(run, stage, force=True)
        except Exception as failure:  # reported as this stage's result; later stages need its outputs
            log.exception("%s failed", stage)
            error = f"{type(failure).__name__}: {failure}"
        modeling.release()
        step = planned[stage]
        results.append(StageResult(stage, round(time.monotonic() - started, 1), baseline,
                                   torch.cuda.max_memory_allocated(), torch.cuda.memory_allocated(), step.peak,
                                   step.step, error))
        print(results[-1].row(), flush=True)
        if error:
            break
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gpu", action="store_true", help="run the GPU check (the only mode; needs CUDA)")
    parser.add_argument("--preset", default="qwen2.5-0.5b", help="preset to shrink (default: qwen2.5-0.5b)")
    parser.add_argument("--config", dest="config_file", help="user YAML config layered over the preset")
    parser.add_argument("-p", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one key of the shrunk config (repeatable)")
    parser.add_argument("--run-id", default=RUN_ID, help=f"run folder name (default: {RUN_ID})")


def command(args: argparse.Namespace) -> int:
    """Run the GPU check; the exit status is described in the module docstring."""
    if not args.gpu:
        print("alignkit selftest: nothing to do; the check runs on a GPU: alignkit selftest --gpu "
              "(on a CPU, `make test` runs the stand-in tests)", file=sys.stderr)
        return 2
    try:
        cfg = gpu_config(args.preset, args.config_file, args.overrides)
        reason = cannot_start(cfg)
        if reason:
            print(f"alignkit selftest --gpu: cannot start: {reason}", file=sys.stderr)
            return 2
        import torch

        from alignkit import files, plan
        from alignkit.runs import Run

        print(f"GPU check: preset {cfg.preset} shrunk, {cfg.model.base} in {cfg.model.dtype}, SFT {cfg.sft.method}, "
              f"DPO {cfg.dpo.method}, on {torch.cuda.get_device_name(0)}")
        gpu_gib = torch.cuda.get_device_properties(0).total_memory / plan.GIB
        print("\n".join(plan.plan(cfg, gpu_gib).lines()) + "\n\n" + HEADER, flush=True)
        results = measure_stages(cfg, args.run_id)
    except ConfigError as error:
        print(f"alignkit selftest: config error: {error}", file=sys.stderr)
        return 2
    problems = [p for r in results for p in r.problems()]
    missing = [s for s in STAGES if s not in {r.stage for r in results}]
    summary: dict[str, Any] = {"preset": cfg.preset, "overrides": list(SHRINK) + list(args.overrides),
                               "gpu": torch.cuda.get_device_name(0), "gpu_gib": round(gpu_gib, 2),
                               "stages": [asdict(r) for r in results], "problems": problems, "not_run": missing}
    out = Run(run_id=args.run_id, config=cfg).dir / "selftest.json"
    files.write_json(out, summary)
    for problem in problems:
        print(f"PROBLEM {problem}")
    if missing:
        print(f"not run (an earlier stage failed): {', '.join(missing)}")
    ok = not problems and not missing
    print(f"{'GPU check passed' if ok else 'GPU check FAILED'}: {out}")
    return 0 if ok else 1
