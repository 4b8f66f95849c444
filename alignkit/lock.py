"""One writer per run folder: :func:`run_lock`, the holder record beside the lock, :class:`RunLockedError`.

Every command that writes into ``runs/<run_id>/`` takes ``runs/<run_id>/.lock`` first; a second writer fails at
once with a one-line :class:`RunLockedError` naming the holder (pid, host, since when, for what) and what to
do. Readers (report rendering, ``alignkit validate``, ``is_cached``) take no lock.

The lock itself is :class:`filelock.FileLock`: an OS lock (``flock``) that the kernel drops when its process
dies, even on ``kill -9``, with filelock's own fallback to a marker file on file systems without ``flock``
(it breaks markers of dead processes on the same host itself). What filelock does not record is *who* holds
the lock and why, so this module writes ``.lock.json`` beside it (pid, host, start time, purpose, command
line) while the lock is held, and reads it to explain a refusal. A holder record still present when the lock
is free was left by a process that died holding it: the lock is taken over and that is logged at WARNING.

Three cases take no OS lock of their own:

- **re-entry in one process**: a stage called inside a command that already holds the lock (held locks are
  counted per folder in this process; a second ``flock`` on the same file would conflict with the first);
- **a child of the holder**: ``alignkit run`` executes notebooks in Jupyter kernels, child processes that run
  the stages. The holder advertises its locks in ``$ALIGNKIT_RUN_LOCKS`` (inherited by children), and a
  process whose ancestor holds the lock (checked with psutil, same host) works under it;
- **ranks other than 0** under torchrun / accelerate launch (``$RANK``): only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import shlex
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import filelock
import psutil

from alignkit import files

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
HOLDER_NAME = ".lock.json"
#: Environment variable through which a holder passes its locks to child processes: JSON {folder: pid}.
ENV_LOCKS = "ALIGNKIT_RUN_LOCKS"
#: How long a refused writer waits for the holder record to appear (the holder writes it right after taking
#: the lock), in seconds: enough for one atomic JSON write, far under the 5 s a refusal may take.
HOLDER_WAIT_S = 1.0
#: Two readings of one process's start time differ by clock-tick rounding (10 ms); more means another process
#: reused the pid. In seconds.
START_TOLERANCE_S = 1.0
#: Longest command line quoted in a refusal, in characters (the message stays one readable line).
_COMMAND_CHARS = 200


class RunLockedError(RuntimeError):
    """Another process holds the run folder's lock; the one-line message names it and what to do."""

    def __init__(self, message: str, run_dir: Path, holder: dict[str, Any] | None) -> None:
        super().__init__(message)
        self.run_dir = run_dir
        self.holder = holder


@dataclass
class RunLock:
    """What :func:`run_lock` yields: the folder, and how this process may write into it.

    ``how`` is ``"acquired"`` (this call took the OS lock), ``"reentrant"`` (this process already held it),
    ``"inherited"`` (an ancestor process holds it) or ``"not-rank-0"`` (no lock: rank 0 writes).
    """

    run_dir: Path
    how: str
    holder: dict[str, Any] | None = None

    @property
    def lock_path(self) -> Path:
        return self.run_dir / LOCK_NAME

    @property
    def holder_path(self) -> Path:
        return self.run_dir / HOLDER_NAME


@dataclass
class _Held:
    lock: filelock.FileLock
    holder: dict[str, Any]
    count: int = 1
    purposes: list[str] = field(default_factory=list)


_held: dict[Path, _Held] = {}
_held_guard = threading.Lock()


def _rank() -> int:
    """``$RANK`` (0 when absent). Read here, not from :mod:`alignkit.runs`, which will import this module."""
    return int(os.environ.get("RANK", "0"))


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def one_line(text: str, limit: int | None = None) -> str:
    """``text`` with every run of whitespace (newlines included) as one space, cut to ``limit`` characters.

    >>> one_line("alignkit run\\n  -p a=1")
    'alignkit run -p a=1'
    >>> one_line("x" * 10, limit=5)
    'xxxxx...'
    """
    text = " ".join(str(text).split())
    return text if limit is None or len(text) <= limit else text[:limit] + "..."


def _process_start(pid: int) -> float | None:
    """Start time of ``pid`` in seconds since the epoch, None when no such process exists."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, ValueError):
        return None


def holder_record(purpose: str) -> dict[str, Any]:
    """The record this process writes beside a lock it takes."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": _now_iso(),
            "pid_started": _process_start(os.getpid()), "purpose": one_line(purpose),
            "command": one_line(shlex.join(sys.argv) if sys.argv and sys.argv[0] else sys.executable)}


def read_holder(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The holder record of ``run_dir``'s lock (None when there is none or it is unreadable).

    A record present while nobody holds the lock is stale: the process that wrote it died holding the lock.
    """
    try:
        record = files.read_json(Path(run_dir) / HOLDER_NAME)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def holder_alive(holder: dict[str, Any]) -> bool | None:
    """Whether the process a holder record names still runs: None when it ran on another host (unknowable
    from here), False when its pid is gone or now belongs to a process started later (pid reuse)."""
    if holder.get("host") != socket.gethostname():
        return None
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return False
    started = _process_start(pid)
    if started is None:
        return False
    recorded = holder.get("pid_started")
    return not isinstance(recorded, (int, float)) or abs(started - recorded) <= START_TOLERANCE_S


def _env_locks() -> dict[str, int]:
    try:
        value = json.loads(os.environ.get(ENV_LOCKS, "{}"))
    except ValueError:
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, int)} if isinstance(value, dict) else {}


def _set_env_lock(run_dir: Path, pid: int | None) -> None:
    """Advertise (``pid``) or withdraw (None) this process's lock on ``run_dir`` to future child processes."""
    locks = _env_locks()
    if pid is None:
        locks.pop(str(run_dir), None)
    else:
        locks[str(run_dir)] = pid
    if locks:
        os.environ[ENV_LOCKS] = json.dumps(locks, sort_keys=True)
    else:
        os.environ.pop(ENV_LOCKS, None)


def _held_by_ancestor(run_dir: Path, holder: dict[str, Any] | None) -> bool:
    """Whether the lock's holder is an ancestor of this process that passed the lock down to it."""
    pid = _env_locks().get(str(run_dir))
    if pid is None or holder is None or holder.get("pid") != pid or holder.get("host") != socket.gethostname():
        return False
    try:
        return pid in {parent.pid for parent in psutil.Process().parents()}
    except psutil.Error:
        return False


def _refusal(run_dir: Path, holder: dict[str, Any] | None) -> RunLockedError:
    """The one-line error for a lock held by another process, with what to do about it."""
    lock = run_dir / LOCK_NAME
    if holder is None:
        return RunLockedError(
            f"run folder {run_dir} is locked by another process that has not written {run_dir / HOLDER_NAME}; "
            f"wait for it to finish, or if no alignkit process uses this run folder any more, remove {lock} by "
            "hand and run again", run_dir, None)
    pid, host = holder.get("pid"), holder.get("host")
    who = (f"pid {pid} on host {host} has held it since {holder.get('started')} for "
           f"{holder.get('purpose')!r} (command: {one_line(holder.get('command', '?'), _COMMAND_CHARS)})")
    alive = holder_alive(holder)
    if alive is None:
        advice = (f"wait for it to finish, or if that process no longer runs on {host}, remove the lock by hand "
                  f"(rm {lock} {run_dir / HOLDER_NAME}) and run again")
    elif alive:
        advice = f"wait for it to finish (or stop it: kill {pid}) and run again"
    else:
        # The named process is gone yet the OS lock is held: a process it forked (a data loader or map worker)
        # inherited the lock. Breaking the lock under a live process could let two writers in, so refuse.
        advice = (f"that process has exited but a process it started still holds the lock; find it with "
                  f"`fuser -v {lock}`, stop it, and run again")
    return RunLockedError(f"run folder {run_dir} is in use: {who}; {advice}", run_dir, holder)


def _read_holder_of_held_lock(run_dir: Path) -> dict[str, Any] | None:
    """The holder record of a lock another process holds, waiting up to :data:`HOLDER_WAIT_S` for a record
    that describes a live process (the holder writes it just after taking the lock, so the first reading may
    find nothing, or the stale record of a previous holder)."""
    deadline = time.monotonic() + HOLDER_WAIT_S
    while True:
        holder = read_holder(run_dir)
        if (holder is not None and holder_alive(holder) is not False) or time.monotonic() >= deadline:
            return holder
        time.sleep(0.05)


def _acquire(run_dir: Path, purpose: str) -> RunLock:
    """Take ``run_dir``'s lock for this process (or count one more use of it); see :func:`run_lock`."""
    with _held_guard:
        held = _held.get(run_dir)
        if held is not None:
            held.count += 1
            held.purposes.append(purpose)
            log.debug("run folder %s: lock already held by this process; re-entered for %r", run_dir, purpose)
            return RunLock(run_dir, "reentrant", held.holder)
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(run_dir / LOCK_NAME), thread_local=False)
        try:
            lock.acquire(blocking=False)
        except filelock.Timeout:
            holder = _read_holder_of_held_lock(run_dir)
            if _held_by_ancestor(run_dir, holder):
                log.info("run folder %s: working under the lock of parent process %s (%s)", run_dir,
                         holder["pid"], holder.get("purpose"))
                return RunLock(run_dir, "inherited", holder)
            raise _refusal(run_dir, holder) from None
        try:
            stale = read_holder(run_dir)
            if stale is not None:
                state = {False: "no longer runs", None: "ran on another host and did not release it cleanly",
                         True: "still runs but no longer holds the lock"}[holder_alive(stale)]
                log.warning("run folder %s: taking over the lock left by pid %s on host %s (held since %s for %r); "
                            "that process %s", run_dir, stale.get("pid"), stale.get("host"), stale.get("started"),
                            stale.get("purpose"), state)
            record = holder_record(purpose)
            files.write_json(run_dir / HOLDER_NAME, record)
        except BaseException:
            lock.release()
            raise
        _held[run_dir] = _Held(lock=lock, holder=record, purposes=[purpose])
        _set_env_lock(run_dir, os.getpid())
        log.debug("run folder %s: lock taken for %r", run_dir, purpose)
        return RunLock(run_dir, "acquired", record)


def _release(run_dir: Path) -> None:
    with _held_guard:
        held = _held[run_dir]
        held.count -= 1
        if held.count > 0:
            return
        del _held[run_dir]
        _set_env_lock(run_dir, None)
        try:
            # Remove the record first: a record without a lock means "died holding it" to the next writer.
            if (read_holder(run_dir) or {}).get("pid") == os.getpid():
                with contextlib.suppress(FileNotFoundError):
                    (run_dir / HOLDER_NAME).unlink()
        finally:
            held.lock.release()


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike, purpose: str) -> Iterator[RunLock]:
    """Hold ``run_dir``'s writer lock for the ``with`` block; raise :class:`RunLockedError` at once if another
    process holds it. ``purpose`` says what the holder does (shown to a refused writer), e.g.
    ``"alignkit run --stages 01-06"``.

    The folder is created if missing. Re-entrant in one process; a child of the holder and ranks other than 0
    proceed without a lock of their own (see the module docstring). Never waits for the holder.
    """
    run_dir = Path(run_dir).expanduser().resolve()
    if _rank() != 0:
        yield RunLock(run_dir, "not-rank-0")
        return
    handle = _acquire(run_dir, purpose)
    if handle.how not in ("acquired", "reentrant"):
        yield handle
        return
    try:
        yield handle
    finally:
        _release(run_dir)


def held_here() -> dict[Path, int]:
    """Run folders whose lock this process holds, with how many nested :func:`run_lock` blocks hold each."""
    with _held_guard:
        return {path: held.count for path, held in _held.items()}


__all__ = ["ENV_LOCKS", "HOLDER_NAME", "LOCK_NAME", "RunLock", "RunLockedError", "held_here", "holder_alive",
           "holder_record", "read_holder", "run_lock"]
