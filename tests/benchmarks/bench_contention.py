"""Benchmark: batched generation on an idle machine and beside a CPU-bound competitor.

    python tests/benchmarks/bench_contention.py [--rounds 4] [--sequential] [--seconds-cap 600] [--env KEY=VALUE ...]

Runs the generation benchmark (``bench_generation.py --batched-only``: 130 template prompts, 48 new tokens,
batch 32, a random ~3M Llama built locally) in a fresh subprocess twice: once on the idle machine, once while a
synthetic competitor runs (a torch process doing matrix products with torch's default thread count, which is what
another alignkit job, a notebook or ``make test`` looks like to the scheduler). The competitor is started and
stopped by this script and killed after ``--seconds-cap`` at the latest. Both subprocesses get the environment
alignkit sets up for itself (:mod:`alignkit.threads`) unless ``--no-policy`` is given, so the same script measures
torch's defaults (``--no-policy``) and alignkit's policy side by side. Prints, measured in this one run::

    idle_tokens_per_s=...  contended_tokens_per_s=...  contended_over_idle=0.xx

``--sequential`` also times one-at-a-time generation (batch size 1) in every measurement and ends with a table of
both wall times and the batched speed-up per setting, idle and beside the competitor.

Never run it while another heavy job runs: the "idle" number would not be idle.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

#: The competitor: matrix products on all the threads torch gives it by default, until killed.
COMPETITOR = """
import os, sys, time
for key in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS", "ALIGNKIT_THREADS"):
    os.environ.pop(key, None)
import torch
a = torch.randn(int(os.environ.get("COMPETITOR_SIZE", "64")), int(os.environ.get("COMPETITOR_SIZE", "64")))
deadline = time.monotonic() + float(sys.argv[1])
print("competitor threads", torch.get_num_threads(), flush=True)
while time.monotonic() < deadline:
    a = torch.tanh(a @ a)
"""


def bench(env: dict[str, str], sequential: bool = False) -> dict[str, float]:
    """One ``bench_generation.py`` subprocess: batched tokens/s, batched wall seconds and (``sequential``) the
    one-at-a-time wall seconds."""
    command = [sys.executable, str(HERE / "bench_generation.py")] + ([] if sequential else ["--batched-only"])
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True, timeout=1800).stdout
    print("  " + out.strip().replace("\n", "\n  "), flush=True)
    found = {}
    for label in ("batched", "sequential") if sequential else ("batched",):
        match = re.search(rf"{label}: .*wall_s=([\d.]+) .*tokens_per_s=(\d+)", out)
        if match is None:
            raise RuntimeError(f"no {label} wall_s / tokens_per_s in the benchmark output:\n{out}")
        found[f"{label}_wall_s"] = float(match.group(1))
        if label == "batched":
            found["tokens_per_s"] = float(match.group(2))
    return found


@contextlib.contextmanager
def competitor(seconds_cap: float) -> Iterator[None]:
    """A CPU-bound torch process for the duration of the block (killed after ``seconds_cap`` at the latest)."""
    process = subprocess.Popen([sys.executable, "-c", COMPETITOR, str(seconds_cap)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(3.0)  # let it import torch and start computing
        yield
    finally:
        process.kill()
        process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds-cap", type=float, default=600.0, help="the competitor is killed after this long")
    parser.add_argument("--rounds", type=int, default=2, help="idle measurements per setting, interleaved")
    parser.add_argument("--sequential", action="store_true",
                        help="also time one-at-a-time generation and print the wall-time table")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for the policy side (e.g. OMP_WAIT_POLICY=PASSIVE)")
    args = parser.parse_args(argv)
    base = dict(os.environ, PYTHONPATH=str(ROOT))
    settings = {"defaults": dict(base, ALIGNKIT_THREAD_POLICY="off"), "policy": dict(base)}
    for item in args.env:
        key, _, value = item.partition("=")
        settings["policy"][key] = value
    idle: dict[str, list[dict[str, float]]] = {name: [] for name in settings}
    contended: dict[str, dict[str, float]] = {}
    # Idle runs alternate between the settings, so a drift of the machine's speed affects both alike.
    for round_index in range(args.rounds):
        for name, env in settings.items():
            print(f"idle, {name} (round {round_index + 1}):", flush=True)
            idle[name].append(bench(env, args.sequential))
    for name, env in settings.items():
        print(f"beside a competitor, {name}:", flush=True)
        with competitor(args.seconds_cap):
            contended[name] = bench(env, args.sequential)

    def median(name: str, key: str) -> float:
        return statistics.median(m[key] for m in idle[name])

    for name in settings:
        rate = median(name, "tokens_per_s")
        print(f"{name}: idle_tokens_per_s={rate:.0f} contended_tokens_per_s={contended[name]['tokens_per_s']:.0f} "
              f"contended_over_idle={contended[name]['tokens_per_s'] / rate:.2f}")
    if args.sequential:
        print("| setting | batched wall (s) | one-at-a-time wall (s) | batched speed-up |\n|---|---|---|---|")
        for name in settings:
            rows = (("idle", median(name, "batched_wall_s"), median(name, "sequential_wall_s")),
                    ("beside a competitor", contended[name]["batched_wall_s"], contended[name]["sequential_wall_s"]))
            for where, batched, one_at_a_time in rows:
                print(f"| {where}, {name} | {batched:.2f} | {one_at_a_time:.1f} | {one_at_a_time / batched:.1f}x |")
    ratio = median("policy", "tokens_per_s") / median("defaults", "tokens_per_s")
    print(f"policy_idle_over_default_idle={ratio:.2f}")
    print(f"contended_over_idle={contended['policy']['tokens_per_s'] / median('policy', 'tokens_per_s'):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
