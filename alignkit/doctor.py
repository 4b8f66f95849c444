"""``alignkit doctor``: what this machine can run, with one clear line per problem found.

    alignkit doctor

Checks torch and CUDA versions, GPU name and memory, bf16 support, bitsandbytes 4-bit usability, free disk
under ``$ALIGNKIT_HOME``, where ``HF_HOME`` points and whether the Hub is set offline.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
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


def checks() -> list[Check]:
    """Every check, in the order printed."""
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


def main() -> int:
    results = checks()
    for check in results:
        print(check.line())
    problems = [c for c in results if not c.ok]
    print(f"{len(problems)} problem(s) found" if problems else "no problems found")
    return 1 if problems else 0
