"""Benchmark: the stage cache, measured in one run.

    python tests/benchmarks/bench_cache.py [--preset smoke] [--home DIR]

1. a first run of every notebook (base model build included when ``--home`` has none);
2. the same command again: every stage must come from the cache; prints ``cached_ratio`` (target <= 0.05);
3. one DPO parameter changed (``dpo.beta``): only stages 05 and 06 may run again; prints which stages re-ran and
   ``changed_ratio`` against the first run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ("01_sft_data", "02_sft_training", "03_negatives", "04_preference_pairs", "05_dpo_training", "06_evaluation")


def run(preset: str, run_id: str, *overrides: str) -> float:
    command = [sys.executable, "-m", "alignkit", "run", "--preset", preset, "--run-id", run_id, "-q"]
    for override in overrides:
        command += ["-p", override]
    started = time.monotonic()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def finished(home: Path, run_id: str) -> dict[str, str]:
    return {s: json.loads((home / "runs" / run_id / s / "manifest.json").read_text())["finished"] for s in STAGES}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="smoke")
    parser.add_argument("--home", type=Path, help="ALIGNKIT_HOME to use (default: a fresh temporary folder)")
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="alignkit-bench-"))
    os.environ["ALIGNKIT_HOME"] = str(home)
    os.environ.setdefault("ALIGNKIT_REPORTS", str(home / "reports"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    run_id = "bench-cache"

    first = run(args.preset, run_id)
    before = finished(home, run_id)
    cached = run(args.preset, run_id)
    after_cached = finished(home, run_id)
    changed = run(args.preset, run_id, "dpo.beta=0.2")
    after_changed = finished(home, run_id)

    rerun_cached = [s for s in STAGES if after_cached[s] != before[s]]
    rerun_changed = [s for s in STAGES if after_changed[s] != after_cached[s]]
    print(f"first run: {first:.1f} s; unchanged re-run: {cached:.1f} s; after dpo.beta change: {changed:.1f} s")
    print(f"stages re-run when nothing changed: {rerun_cached or 'none'}")
    print(f"stages re-run after dpo.beta change: {rerun_changed}")
    print(f"cached_ratio={cached / first:.3f} (target <= 0.05)")
    print(f"changed_ratio={changed / first:.3f}")
    ok = not rerun_cached and rerun_changed == ["05_dpo_training", "06_evaluation"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
