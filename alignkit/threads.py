"""CPU threading policy: a second job on the same cores must not collapse both, and an idle machine must stay fast.

Importing :mod:`alignkit` applies it (the CLI, a notebook kernel's first ``import alignkit`` and every test
subprocess do that before anything imports torch). With all of a machine's cores in use, libgomp's OpenMP threads
(the runtime torch ships) spin at every barrier for a thread that another process has descheduled: batched
generation measured 4-40x slower beside one other CPU-bound torch process on 2 cores. The policy:

- ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` = the CPUs this process may really use, :func:`available_cpus` (CPU
  affinity, further capped by a cgroup CPU quota), instead of every core the machine has; set only where the user
  has not set them;
- by default the thread count then **follows the load** (:class:`LoadFollower`): each generation step, training
  step and scoring batch calls :func:`follow_load`, which every 0.25 s measures how much CPU time other processes
  took on this process's CPUs and uses that many fewer threads (at least one), going back up when they stop. The
  OpenMP spin stays libgomp's own (the fastest when the machine is idle): the follower, not a shorter spin, is what
  keeps a neighbour from stalling the team;
- with a fixed count (``OMP_NUM_THREADS`` set by the user, or ``ALIGNKIT_THREAD_POLICY=fixed``) nothing follows the
  load, so the spin is bounded instead: ``GOMP_SPINCOUNT`` = :data:`SPINCOUNT`.

Measured with ``python tests/benchmarks/bench_contention.py --rounds 4 [--env KEY=VALUE]`` on the 2-core
development machine (batched tokens/s beside a CPU-bound competitor / idle, and idle / torch's defaults idle,
measured in the same run; torch's defaults kept 0.02-0.25 beside the competitor). The VM is noisy (one setting's
idle rate drifts by up to 25% between runs), so each run interleaves the setting with torch's defaults:

=========================================== ================ ====================
setting                                     contended / idle idle / defaults idle
=========================================== ================ ====================
follow the load, libgomp's spin (default)   0.55, 0.52, 0.50 1.09, 1.04, 0.95
follow the load, ``GOMP_SPINCOUNT=3000``    0.58             0.80
follow the load, ``GOMP_SPINCOUNT=10000``   0.63             0.84
fixed count, ``GOMP_SPINCOUNT=1000``        0.69, 0.69       0.89, 0.85
fixed count, ``GOMP_SPINCOUNT=3000``        0.49, 0.53       0.96, 0.82
fixed count, ``GOMP_SPINCOUNT=10000``       0.35             1.05
fixed count, ``OMP_WAIT_POLICY=PASSIVE``    0.72, 0.73       0.81, 0.75
fixed count, ``OMP_NUM_THREADS=1``          0.56             0.77
=========================================== ================ ====================

The bounded spins that kept at least 0.4 beside a competitor (1000, 3000) and passive waiting cost 4-25% of the idle
speed, more than 10% in most runs; following the load keeps libgomp's spin and so the idle speed, and more than
half the speed beside a competitor. :data:`SPINCOUNT` (3000) is the fixed-count setting with at least 0.4 beside a competitor and the least idle cost.

Overrides: any of the variables above set in the environment wins; ``ALIGNKIT_THREADS=N`` sets the most threads
used (still followed); ``ALIGNKIT_THREAD_POLICY=fixed`` keeps the count fixed, ``=off`` leaves everything to torch;
the config key ``runtime.threads`` (0 = automatic) sets the most threads when a run opens (:func:`set_threads`).
The spin can only be chosen before torch loads, i.e. through the environment.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Collection
from pathlib import Path

log = logging.getLogger(__name__)

#: Spins before an idle GNU OpenMP thread sleeps (libgomp's default is 300,000). See the module docstring.
SPINCOUNT = "3000"
SWITCH = "ALIGNKIT_THREAD_POLICY"
THREADS = "ALIGNKIT_THREADS"
#: The variables alignkit itself set, as ``KEY=VALUE`` pairs: a child process (a notebook kernel, a stage process)
#: inherits them, and must not take them for the user's own choice (which would fix its thread count).
CHOSEN = "ALIGNKIT_THREADS_CHOSEN"
#: What :func:`apply` decided, for :func:`describe` (variable -> (value, "alignkit" or "environment")).
_APPLIED: dict[str, tuple[str, str]] = {}
_LOGGED = False
#: Whether torch was already loaded when :func:`apply` ran, so the OpenMP runtime kept its default wait policy.
_TOO_LATE = False
#: The process's :class:`LoadFollower` (None: the thread count is fixed, by the user or by the config).
_FOLLOWER: LoadFollower | None = None


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


def _mode(environ: dict[str, str] | os._Environ) -> str:
    """``off`` (torch's defaults), ``fixed`` (a set thread count and a bounded spin) or ``follow`` (the default)."""
    value = environ.get(SWITCH, "").lower()
    return "off" if value in ("off", "0", "false", "no") else "fixed" if value == "fixed" else "follow"


def follows_load(environ: dict[str, str] | os._Environ) -> bool:
    """Whether the thread count may follow the load: the policy is on, not ``fixed``, and the user did not set
    ``OMP_NUM_THREADS`` (``ALIGNKIT_THREADS`` only sets the most threads used) (pure).

    >>> follows_load({}), follows_load({"ALIGNKIT_THREADS": "4"})
    (True, True)
    >>> follows_load({"OMP_NUM_THREADS": "2"}), follows_load({"ALIGNKIT_THREAD_POLICY": "fixed"})
    (False, False)
    """
    return _mode(environ) == "follow" and "OMP_NUM_THREADS" not in environ


def policy_env(environ: dict[str, str] | os._Environ, cpus: int, *, following: bool) -> dict[str, str]:
    """The variables to set: the policy's values for those ``environ`` does not set yet (pure).

    ``following``: a :class:`LoadFollower` will move the thread count, which is what keeps two jobs from
    collapsing, so libgomp keeps its default spin (the fastest on an idle machine). With a fixed count, the
    bounded spin :data:`SPINCOUNT` is the only protection.

    >>> policy_env({}, 2, following=True)
    {'OMP_NUM_THREADS': '2', 'MKL_NUM_THREADS': '2'}
    >>> policy_env({}, 2, following=False)
    {'OMP_NUM_THREADS': '2', 'MKL_NUM_THREADS': '2', 'GOMP_SPINCOUNT': '3000'}
    >>> policy_env({"OMP_NUM_THREADS": "1", "ALIGNKIT_THREADS": "3"}, 2, following=False)
    {'MKL_NUM_THREADS': '3', 'GOMP_SPINCOUNT': '3000'}
    >>> policy_env({"ALIGNKIT_THREAD_POLICY": "off"}, 2, following=False)
    {}
    """
    if _mode(environ) == "off":
        return {}
    threads = str(environ.get(THREADS) or cpus)
    wanted = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    if not following and "OMP_WAIT_POLICY" not in environ:  # a user's explicit wait policy replaces the spin
        wanted["GOMP_SPINCOUNT"] = SPINCOUNT
    return {key: value for key, value in wanted.items() if key not in environ}


def inherited(environ: dict[str, str] | os._Environ) -> list[str]:
    """The variables of ``environ`` that a parent alignkit process chose (those still holding its value), and its
    record of them (pure).

    >>> inherited({"OMP_NUM_THREADS": "2", "GOMP_SPINCOUNT": "1", CHOSEN: "OMP_NUM_THREADS=2"})
    ['OMP_NUM_THREADS', 'ALIGNKIT_THREADS_CHOSEN']
    >>> inherited({"OMP_NUM_THREADS": "1", CHOSEN: "OMP_NUM_THREADS=2"})  # changed since: the user's
    ['ALIGNKIT_THREADS_CHOSEN']
    """
    if CHOSEN not in environ:
        return []
    chosen = dict(pair.split("=", 1) for pair in environ[CHOSEN].split() if "=" in pair)
    return [key for key, value in chosen.items() if environ.get(key) == value] + [CHOSEN]


def apply() -> dict[str, str]:
    """Set the policy's environment variables (before torch loads) and start following the load; returns what
    was set."""
    global _FOLLOWER, _TOO_LATE
    for key in inherited(os.environ):
        del os.environ[key]  # chosen by a parent alignkit process: choose again here
    cpus = available_cpus()
    if follows_load(os.environ):
        _FOLLOWER = LoadFollower.for_this_process(int(os.environ.get(THREADS) or cpus))
    chosen = policy_env(os.environ, cpus, following=_FOLLOWER is not None)
    os.environ.update(chosen)
    if chosen:
        os.environ[CHOSEN] = " ".join(f"{key}={value}" for key, value in chosen.items())
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY"):
        if key in os.environ:
            _APPLIED[key] = (os.environ[key], "alignkit" if key in chosen else "environment")
    if "torch" in sys.modules:
        # Imported too late to bound the spin (libgomp reads it when torch loads): say so in the log line, since a
        # process with a fixed thread count in that state collapses beside another CPU-bound job. The thread
        # count can still be set, and followed.
        _TOO_LATE = "GOMP_SPINCOUNT" in chosen
        if "OMP_NUM_THREADS" in chosen:
            sys.modules["torch"].set_num_threads(int(chosen["OMP_NUM_THREADS"]))
    return chosen


def set_threads(n: int) -> int:
    """``runtime.threads``: the most intra-op threads torch uses (0 = the policy's choice); returns the count in
    use. While the load is followed, ``n`` becomes the count on free CPUs; otherwise it is the count."""
    import torch

    if n > 0:
        if _FOLLOWER is not None:
            _FOLLOWER.set_ceiling(n)
        elif torch.get_num_threads() != n:
            torch.set_num_threads(n)
        _APPLIED["torch.set_num_threads"] = (str(n), "config runtime.threads")
    return torch.get_num_threads()


def describe() -> str:
    """One line: which threading settings are in force and who chose each."""
    if _mode(os.environ) == "off":
        return f"threading: {SWITCH}=off, torch defaults"
    parts = [f"{key}={value} ({who})" for key, (value, who) in _APPLIED.items()]
    following = (f"; torch threads follow the load ({_FOLLOWER.ceiling} when the CPUs are free, fewer while other "
                 f"processes use them)") if _FOLLOWER is not None else ""
    late = ("; torch was imported before alignkit, so the bounded OpenMP spin cannot take effect in this process "
            "(import alignkit first)") if _TOO_LATE else ""
    return f"threading: {available_cpus()} CPU(s) available; " + ", ".join(parts) + following + late


def log_once() -> None:
    """Log :func:`describe` once per process."""
    global _LOGGED
    if not _LOGGED:
        _LOGGED = True
        (log.warning if _TOO_LATE else log.info)(describe())


def busy_seconds(stat_text: str, cpus: Collection[int], ticks_per_s: float) -> float:
    r"""CPU seconds the ``cpus`` spent busy (user, nice, system, irq, softirq) in ``/proc/stat`` text (pure).

    Idle, I/O wait and time stolen by the hypervisor are not busy: none of them is another process on our CPUs.

    >>> busy_seconds("cpu  1 1 1 1\ncpu0 100 0 50 900 7 0 0 9\ncpu1 10 0 0 990 0 0 0 0\n", {0}, 100)
    1.5
    >>> busy_seconds("cpu0 100 0 50 900 7 0 0 9\ncpu1 10 0 0 990 0 0 0 0\n", {0, 1}, 100)
    1.6
    """
    ticks = 0
    for line in stat_text.splitlines():
        name, _, rest = line.partition(" ")
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in rest.split()[:7])
            ticks += user + nice + system + irq + softirq
    return ticks / ticks_per_s


def threads_for_load(ceiling: int, cpus: int, others_busy: float) -> int:
    """Threads that leave other processes the CPUs they used: ``cpus - others_busy`` rounded, within 1..ceiling.

    >>> threads_for_load(2, 2, 0.1), threads_for_load(2, 2, 0.7), threads_for_load(2, 2, 1.9)
    (2, 1, 1)
    >>> threads_for_load(8, 8, 3.2), threads_for_load(4, 64, 40.0)
    (5, 4)
    """
    return max(1, min(ceiling, int(cpus - others_busy + 0.5)))


class LoadFollower:
    """Keeps torch's intra-op thread count at the CPUs that other processes leave free.

    With every core in use, one descheduled OpenMP thread stalls the whole team at each barrier, and a second
    CPU-bound job on the same cores is exactly that: so while others use CPU time on this process's CPUs, use that
    many fewer threads; when they stop, go back to ``ceiling``. :meth:`update` is cheap enough to call every
    generation step or training step: it measures only when ``interval`` seconds have passed, from ``/proc/stat``
    (busy time of this process's CPUs) minus this process's own CPU time over the same wall time. A drop in
    threads takes effect at once; a rise only after two measurements agree, so a neighbour that pauses for a
    moment does not make the count flap. Written here because no library measures the load other processes put
    on one's own CPUs (psutil's system-wide percentages include this process).

    Thread count and numerics: on the tiny model, 1 and 2 threads give identical logits and generations, but a
    backward pass differs in the last bits (torch splits some reductions by thread; tested). So a run beside other
    jobs can differ from an idle-machine run in its last bits, and a stage whose count changed logs a warning and
    records it in its manifest. ``ALIGNKIT_THREAD_POLICY=fixed`` keeps the count fixed where bit-identical reruns
    beside other jobs matter more than their speed.
    """

    def __init__(self, ceiling: int, cpus: Collection[int], *, read_stat: Callable[[], str],
                 set_threads: Callable[[int], None], ticks_per_s: float = 100.0, interval: float = 0.25,
                 clock: Callable[[], float] = time.monotonic, cpu_time: Callable[[], float] = time.process_time):
        self.ceiling, self.cpus, self.interval, self.ticks_per_s = ceiling, frozenset(cpus), interval, ticks_per_s
        self._read_stat, self._set_threads, self._clock, self._cpu_time = read_stat, set_threads, clock, cpu_time
        self.threads = ceiling
        self.lowest = ceiling
        self.changes = 0
        self._rise_votes = 0
        self._mark = self._snapshot()

    @classmethod
    def for_this_process(cls, ceiling: int) -> LoadFollower | None:
        """A follower over this process's CPUs; None where ``/proc/stat`` cannot be read (not Linux)."""
        def read_stat() -> str:
            with open("/proc/stat", encoding="ascii") as handle:
                return handle.read()

        def set_torch_threads(n: int) -> None:
            if "torch" in sys.modules:  # before torch loads, OMP_NUM_THREADS already says ceiling
                sys.modules["torch"].set_num_threads(n)

        try:  # the first snapshot reads /proc/stat: where that fails, nothing can be followed
            return cls(ceiling, os.sched_getaffinity(0), read_stat=read_stat, set_threads=set_torch_threads,
                       ticks_per_s=float(os.sysconf("SC_CLK_TCK")))
        except (AttributeError, OSError, ValueError):
            return None

    def set_ceiling(self, n: int) -> None:
        """Use ``n`` threads from now on when the CPUs are free (``runtime.threads``); lower only under load."""
        self.ceiling = self.threads = self.lowest = n
        self._set_threads(n)

    def _snapshot(self) -> tuple[float, float, float]:
        return self._clock(), busy_seconds(self._read_stat(), self.cpus, self.ticks_per_s), self._cpu_time()

    def update(self) -> int:
        """Re-measure if ``interval`` has passed and set the thread count; returns the count in use."""
        if self._clock() - self._mark[0] < self.interval:
            return self.threads
        now = self._snapshot()
        wall = now[0] - self._mark[0]
        others = max(0.0, (now[1] - self._mark[1]) - (now[2] - self._mark[2])) / wall
        self._mark = now
        target = threads_for_load(self.ceiling, len(self.cpus), others)
        if target > self.threads:
            self._rise_votes += 1
            if self._rise_votes < 2:
                return self.threads
        self._rise_votes = 0
        if target != self.threads:
            # The first change in a process is worth a line in the terminal; later ones (a neighbour that comes
            # and goes) are debug lines, and their count goes to the stage manifest.
            (log.info if self.changes == 0 else log.debug)(
                "threading: other processes used %.1f of %d CPU(s); torch threads %d -> %d%s", others,
                len(self.cpus), self.threads, target, " (later changes: debug log)" if self.changes == 0 else "")
            self._set_threads(target)
            self.threads, self.changes, self.lowest = target, self.changes + 1, min(self.lowest, target)
        return self.threads


def follow_load() -> None:
    """Let this process's :class:`LoadFollower` re-measure (no-op when the thread count is fixed); called per
    generation step, per training step and per scoring batch."""
    if _FOLLOWER is not None:
        _FOLLOWER.update()


def follower_summary() -> dict[str, int] | None:
    """How the thread count moved in this process (for the stage manifest); None when it was fixed."""
    if _FOLLOWER is None:
        return None
    return {"ceiling": _FOLLOWER.ceiling, "lowest": _FOLLOWER.lowest, "changes": _FOLLOWER.changes,
            "now": _FOLLOWER.threads}
