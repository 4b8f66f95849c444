"""CPU threading policy: set before torch is imported, so a second job on the same cores does not collapse both.

Importing :mod:`alignkit` applies it (the CLI, a notebook kernel's first ``import alignkit`` and every test
subprocess do that before anything imports torch). It sets, only where the user has not set them already:

- ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``: the CPUs this process may really use, :func:`available_cpus` (CPU
  affinity, further capped by a cgroup CPU quota), instead of every core the machine has;
- ``GOMP_SPINCOUNT`` = :data:`SPINCOUNT`: how long an idle OpenMP thread of the GNU runtime torch ships spins before
  it sleeps. The default (300,000 spins) made batched generation about 40x slower beside one other CPU-bound
  torch process on 2 cores: both processes' threads spin at barriers waiting for a thread that is descheduled.

Measured with ``python tests/benchmarks/bench_contention.py --rounds 4 --env GOMP_SPINCOUNT=N`` on the 2-core
development machine, one run per value (the VM is noisy: the same setting's idle rate drifts by up to 25% between
runs, so each run interleaves the two settings). Batched tokens/s beside a CPU-bound competitor / idle, and idle /
torch's defaults idle in the same run; the defaults themselves kept 0.02-0.25 beside the competitor:

====== ================ ==========================
spins  contended / idle idle / defaults idle
====== ================ ==========================
1000   0.69, 0.69       0.89, 0.85 (2 runs; the second over 6 rounds)
3000   0.49, 0.53       0.96, 0.82 (2 runs)
10000  0.35             1.05
50000  0.09             1.03
====== ================ ==========================

3000 is the smallest spin count tried that keeps at least 0.4 beside a competitor with the least idle cost: at
1000 the idle cost was 11-15%; at 3000 it was 4% and 18% in two runs (the 10% target is not met reliably);
``OMP_WAIT_POLICY=PASSIVE`` kept 0.72-0.73 and lost 19-25% idle.

Overrides: any of the variables above set in the environment wins; ``ALIGNKIT_THREADS=N`` sets the thread count;
``ALIGNKIT_THREAD_POLICY=off`` leaves everything to torch; the config key ``runtime.threads`` (0 = automatic)
sets torch's intra-op threads when a run opens (:func:`set_threads`), after import. The wait policy can only be
chosen before torch loads, i.e. through the environment.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

#: Spins before an idle GNU OpenMP thread sleeps (libgomp's default is 300,000). See the module docstring.
SPINCOUNT = "3000"
SWITCH = "ALIGNKIT_THREAD_POLICY"
THREADS = "ALIGNKIT_THREADS"
#: What :func:`apply` decided, for :func:`describe` (variable -> (value, "alignkit" or "environment")).
_APPLIED: dict[str, tuple[str, str]] = {}
_LOGGED = False
#: Whether torch was already loaded when :func:`apply` ran, so the OpenMP runtime kept its default wait policy.
_TOO_LATE = False


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by a cgroup CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), None when unlimited.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "cpu.max").write_text("150000 100000\\n")
    >>> cgroup_cpu_limit(folder)
    1.5
    >>> _ = (folder / "cpu.max").write_text("max 100000\\n")
    >>> cgroup_cpu_limit(folder) is None
    True
    """
    v2 = root / "cpu.max"
    try:
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        quota_file, period_file = root / "cpu" / "cpu.cfs_quota_us", root / "cpu" / "cpu.cfs_period_us"
        if quota_file.is_file() and period_file.is_file():
            quota_us = int(quota_file.read_text())
            return None if quota_us <= 0 else quota_us / int(period_file.read_text())
    except (OSError, ValueError):
        return None
    return None


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup quota (rounded down, at least 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cpus = min(cpus, max(1, int(limit)))
    return max(1, cpus)


def policy_env(environ: dict[str, str] | os._Environ, cpus: int) -> dict[str, str]:
    """The variables to set: the policy's values for those ``environ`` does not set yet (pure).

    >>> policy_env({}, 2)
    {'OMP_NUM_THREADS': '2', 'MKL_NUM_THREADS': '2', 'GOMP_SPINCOUNT': '3000'}
    >>> policy_env({"OMP_NUM_THREADS": "1", "ALIGNKIT_THREADS": "3"}, 2)
    {'MKL_NUM_THREADS': '3', 'GOMP_SPINCOUNT': '3000'}
    >>> policy_env({"ALIGNKIT_THREAD_POLICY": "off"}, 2)
    {}
    """
    if environ.get(SWITCH, "").lower() in ("off", "0", "false", "no"):
        return {}
    threads = str(environ.get(THREADS) or cpus)
    wanted = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    if "OMP_WAIT_POLICY" not in environ:  # a user's explicit wait policy replaces the bounded spin
        wanted["GOMP_SPINCOUNT"] = SPINCOUNT
    return {key: value for key, value in wanted.items() if key not in environ}


def apply() -> dict[str, str]:
    """Set the policy's environment variables (before torch loads); returns what was set."""
    chosen = policy_env(os.environ, available_cpus())
    os.environ.update(chosen)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY"):
        if key in os.environ:
            _APPLIED[key] = (os.environ[key], "alignkit" if key in chosen else "environment")
    if "torch" in sys.modules:
        # Imported too late to choose the wait policy (libgomp reads it when torch loads): say so in the log line,
        # since a process in that state collapses beside another CPU-bound job. The thread count can still follow.
        global _TOO_LATE
        _TOO_LATE = "GOMP_SPINCOUNT" in chosen
        if "OMP_NUM_THREADS" in chosen:
            sys.modules["torch"].set_num_threads(int(chosen["OMP_NUM_THREADS"]))
    return chosen


def set_threads(n: int) -> int:
    """``runtime.threads``: torch's intra-op threads (0 = leave the policy's choice); returns the count in use."""
    import torch

    if n > 0 and torch.get_num_threads() != n:
        torch.set_num_threads(n)
        _APPLIED["torch.set_num_threads"] = (str(n), "config runtime.threads")
    return torch.get_num_threads()


def describe() -> str:
    """One line: which threading settings are in force and who chose each."""
    if os.environ.get(SWITCH, "").lower() in ("off", "0", "false", "no"):
        return f"threading: {SWITCH}=off, torch defaults"
    parts = [f"{key}={value} ({who})" for key, (value, who) in _APPLIED.items()]
    late = ("; torch was imported before alignkit, so the OpenMP wait policy cannot take effect in this process "
            "(import alignkit first)") if _TOO_LATE else ""
    return f"threading: {available_cpus()} CPU(s) available; " + ", ".join(parts) + late


def log_once() -> None:
    """Log :func:`describe` once per process."""
    global _LOGGED
    if not _LOGGED:
        _LOGGED = True
        (log.warning if _TOO_LATE else log.info)(describe())
