"""``alignkit doctor``: what this machine can run, with one clear line per problem found.

    alignkit doctor
    python -m alignkit.doctor --preset qwen2.5-7b-qlora

Checks torch and CUDA versions, GPU name and memory, bf16 support, bitsandbytes 4-bit usability, free disk
under ``$ALIGNKIT_HOME``, where ``HF_HOME`` points and whether the Hub is set offline. On a GPU it also runs the
memory plan (:mod:`alignkit.plan`) on the memory of GPU 0: for the selected preset (a problem when a stage does
not fit), or, with none selected, for every preset that runs on CUDA (which of them fit).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from alignkit.runs import home

#: Free disk below which a run is likely to fail (checkpoints + models), in GiB.
MIN_FREE_GIB = 5.0
#: Where RunPod mounts a pod's persistent network volume (``$ALIGNKIT_VOLUME`` overrides it).
RUNPOD_VOLUME = os.sep + "workspace"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"[{'ok' if self.ok else 'PROBLEM'}] {self.name}: {self.detail}"


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def checks(preset: str | None = None) -> list[Check]:
    """Every check, in the order printed; ``preset`` selects the preset whose memory plan is checked."""
    import torch

    found: list[Check] = [Check("torch", True, f"{torch.__version__} (CUDA build: {torch.version.cuda or 'none'})")]
    for name in ("transformers", "trl", "peft", "datasets", "accelerate"):
        version = _version(name)
        found.append(Check(name, version is not None, version or "not installed: run `make setup`"))
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            found.append(Check(f"gpu {index}", True, f"{props.name}, {props.total_memory / 2**30:.1f} GiB"))
        bf16 = torch.cuda.is_bf16_supported()
        found.append(Check("bf16", bf16, "supported" if bf16 else "not supported on this GPU: use model.dtype=float16 "
                           "(LoRA) or float32"))
    else:
        found.append(Check("gpu", True, "none: CPU only (fine for the smoke and tiny presets; GPU presets need CUDA)"))
    gpu_gib = torch.cuda.get_device_properties(0).total_memory / 2**30 if torch.cuda.is_available() else None
    found.extend(plan_checks(preset, gpu_gib))
    found.append(_bitsandbytes())
    root = home()
    probe = root if root.exists() else Path.cwd()
    free = shutil.disk_usage(probe).free / 2**30
    found.append(Check("disk", free >= MIN_FREE_GIB, f"{free:.1f} GiB free under {root}"
                       + ("" if free >= MIN_FREE_GIB else f"; need at least {MIN_FREE_GIB:.0f} GiB")))
    hf_home = os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))
    found.append(Check("HF_HOME", True, f"{hf_home} (HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')})"))
    volume = os.environ.get("ALIGNKIT_VOLUME", RUNPOD_VOLUME)
    if os.environ.get("RUNPOD_POD_ID") and os.path.isdir(volume) and not hf_home.startswith(volume):
        found.append(Check("HF_HOME on the volume", False, f"a RunPod volume is mounted at {volume} but HF_HOME is "
                           f"elsewhere: downloaded models are lost when the pod stops; export HF_HOME={volume}/hf"))
    return found


def _bitsandbytes() -> Check:
    """Quantise a small linear layer to 4-bit NF4 and run it: the QLoRA path works only if this does."""
    if _version("bitsandbytes") is None:
        return Check("bitsandbytes", False, "not installed: QLoRA presets need `pip install -e .[gpu]`")
    try:
        import bitsandbytes as bnb
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        layer = bnb.nn.Linear4bit(64, 64, compute_dtype=torch.float32, quant_type="nf4").to(device)
        out = layer(torch.randn(2, 64, device=device))
        ok = bool(torch.isfinite(out).all())
        return Check("bitsandbytes", ok, f"{bnb.__version__}: 4-bit NF4 forward on {device} "
                     + ("works" if ok else "gave non-finite values"))
    except Exception as error:  # any failure here means QLoRA will not work on this machine
        return Check("bitsandbytes", False, f"4-bit NF4 forward failed: {type(error).__name__}: {error}")


def plan_checks(preset: str | None, gpu_gib: float | None) -> list[Check]:
    """The memory plan on a GPU of ``gpu_gib`` GiB (None: no GPU): of ``preset``, or of every CUDA preset."""
    from alignkit import plan
    from alignkit.config import ConfigError, available_presets, resolve

    if gpu_gib is None:
        return [Check("memory plan", True, "no GPU to plan for; `alignkit plan --preset P --gpu-memory GIB` sizes "
                      "a pod before you rent it")]
    try:
        if preset is not None:
            result = plan.plan(resolve(preset), gpu_gib)
            over = [f"{name} ({step.peak / plan.GIB:.1f} GiB: {step.step.split(',')[0]})"
                    for name, step in result.peaks.items() if plan.verdict(step.peak, gpu_gib) == "does not fit"]
            top = result.peak
            detail = (f"{preset} peaks at {top.peak / plan.GIB:.1f} GiB in {top.stage}, needs "
                      f"{plan.needed_gib(top.peak):.1f} of {gpu_gib:.1f} GiB: {plan.verdict(top.peak, gpu_gib)}")
            if over:
                detail += (f"; does not fit: {', '.join(over)}. Lower that stage's batch size "
                           f"(-p <section>.batch_size=N), use a larger GPU, or see `alignkit plan --preset {preset}`")
            return [Check(f"memory plan {preset}", not over, detail)]
        fits, not_fit = [], []
        for name in available_presets():
            cfg = resolve(name)
            if cfg.model.device != "cuda":
                continue
            result = plan.plan(cfg, gpu_gib)
            (fits if result.fits else not_fit).append(f"{name} (needs {plan.needed_gib(result.peak.peak):.1f} GiB)")
        detail = f"on {gpu_gib:.1f} GiB: fits {', '.join(fits) or 'none'}"
        return [Check("memory plan", bool(fits), detail + (f"; does not fit {', '.join(not_fit)}" if not_fit else "")
                      + ("" if fits else "; no GPU preset fits this GPU: use a larger one"))]
    except ConfigError as error:
        return [Check("memory plan", False, str(error))]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default=None,
                        help="preset whose memory plan is checked on this GPU (default: every CUDA preset)")


def main(argv: list[str] | None = None) -> int:
    """Print every check; exit 1 when any is a problem. ``argv`` defaults to no arguments (``alignkit doctor``)."""
    parser = argparse.ArgumentParser(prog="alignkit doctor", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    results = checks(parser.parse_args(argv or []).preset)
    for check in results:
        print(check.line())
    problems = [c for c in results if not c.ok]
    print(f"{len(problems)} problem(s) found" if problems else "no problems found")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
