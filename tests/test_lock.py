"""Tests for alignkit.lock: one writer per run folder, with real processes holding and losing the lock."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alignkit import lock
from alignkit.lock import ENV_LOCKS, HOLDER_NAME, LOCK_NAME, RunLockedError, run_lock

# A separate process that takes the lock, then sleeps until it is killed.
HOLDER_SCRIPT = """
import sys, time
from alignkit.lock import run_lock
with run_lock(sys.argv[1], "test holder: stage 02"):
    print("locked", flush=True)
    time.sleep(300)
"""
# A process that tries the lock once and prints how it got it (or the refusal).
TRY_SCRIPT = """
import sys
from alignkit.lock import RunLockedError, run_lock
try:
    with run_lock(sys.argv[1], "test child") as handle:
        print(handle.how)
except RunLockedError as error:
    print("refused:", error)
"""
STARTUP_S = 60  # an interpreter importing alignkit on a busy 2-core machine: ~0.2 s, with a wide margin


@pytest.fixture(autouse=True)
def _no_inherited_locks(monkeypatch):
    """Each test starts without locks advertised by an outer process and with rank 0."""
    monkeypatch.delenv(ENV_LOCKS, raising=False)
    monkeypatch.delenv("RANK", raising=False)
    yield
    assert lock.held_here() == {}, "a test left a lock held"


def _start_holder(run_dir: Path) -> subprocess.Popen:
    """Start a process holding ``run_dir``'s lock; return once its holder record names it."""
    env = {k: v for k, v in os.environ.items() if k != ENV_LOCKS}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER_SCRIPT, str(run_dir)], stdout=subprocess.PIPE,
                            text=True, env=env)
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        holder = lock.read_holder(run_dir)
        if holder is not None and holder.get("pid") == proc.pid:
            assert proc.stdout.readline().strip() == "locked"
            return proc
        if proc.poll() is not None:
            raise AssertionError(f"holder process exited with {proc.returncode}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("holder process did not take the lock in time")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)
    proc.stdout.close()


def test_second_writer_fails_fast_naming_the_holder(tmp_path):
    run_dir = tmp_path / "runs" / "tiny"  # does not exist yet: the holder creates it
    proc = _start_holder(run_dir)
    try:
        started = time.monotonic()
        with pytest.raises(RunLockedError) as info:
            with run_lock(run_dir, "alignkit run"):
                pytest.fail("entered a lock another process holds")
        elapsed = time.monotonic() - started
    finally:
        _stop(proc)
    assert elapsed < 5.0
    message = str(info.value)
    assert "\n" not in message
    assert f"run folder {run_dir.resolve()} is in use" in message
    assert f"pid {proc.pid} on host {socket.gethostname()}" in message
    assert "'test holder: stage 02'" in message
    assert f"kill {proc.pid}" in message and "wait for it to finish" in message
    assert info.value.holder["pid"] == proc.pid
    assert info.value.holder["command"].endswith(str(run_dir))  # argv of `python -c SCRIPT RUN_DIR`


def test_lock_of_a_killed_process_is_taken_over_and_logged(tmp_path, caplog):
    run_dir = tmp_path / "run"
    proc = _start_holder(run_dir)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    _stop(proc)
    # kill -9 leaves its holder record behind (nothing ran to remove it); the kernel dropped the OS lock.
    assert lock.read_holder(run_dir)["pid"] == proc.pid
    assert lock.holder_alive(lock.read_holder(run_dir)) is False
    caplog.set_level(logging.WARNING, logger="alignkit.lock")
    with run_lock(run_dir, "resume") as handle:
        assert handle.how == "acquired"
        assert lock.read_holder(run_dir)["pid"] == os.getpid()
        assert lock.read_holder(run_dir)["purpose"] == "resume"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"taking over the lock left by pid {proc.pid}" in warnings[0].getMessage()
    assert "no longer runs" in warnings[0].getMessage()
    assert not (run_dir / HOLDER_NAME).exists()  # released cleanly: no record left


def test_released_lock_is_free_for_another_process_without_warning(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="alignkit.lock")
    with run_lock(tmp_path / "run", "first"):
        pass
    out = subprocess.run([sys.executable, "-c", TRY_SCRIPT, str(tmp_path / "run")], capture_output=True, text=True,
                         timeout=STARTUP_S, check=True).stdout
    assert out == "acquired\n"
    assert caplog.records == []


def test_reentrant_in_one_process(tmp_path):
    run_dir = tmp_path / "run"
    with run_lock(run_dir, "alignkit run") as outer:
        assert outer.how == "acquired"
        with run_lock(run_dir, "stage 02") as inner:  # must neither deadlock nor fail
            assert inner.how == "reentrant"
            assert lock.held_here() == {run_dir.resolve(): 2}
        # The inner exit does not release: the record (and the lock) stay until the outer block ends.
        assert lock.read_holder(run_dir)["purpose"] == "alignkit run"
        assert lock.held_here() == {run_dir.resolve(): 1}
        refused = subprocess.run([sys.executable, "-c", TRY_SCRIPT, str(run_dir)], capture_output=True, text=True,
                                 timeout=STARTUP_S, env={k: v for k, v in os.environ.items() if k != ENV_LOCKS},
                                 check=True).stdout
        assert refused.startswith("refused: run folder") and f"pid {os.getpid()}" in refused
    assert lock.held_here() == {}
    assert not (run_dir / HOLDER_NAME).exists()


def test_lock_is_released_when_the_block_raises(tmp_path):
    with pytest.raises(KeyError):
        with run_lock(tmp_path / "run", "x"):
            raise KeyError("boom")
    assert lock.held_here() == {}
    with run_lock(tmp_path / "run", "again") as handle:
        assert handle.how == "acquired"


def test_child_process_works_under_its_parents_lock(tmp_path):
    # `alignkit run` holds the lock while its notebook kernels (child processes) run the stages.
    run_dir = tmp_path / "run"
    with run_lock(run_dir, "alignkit run"):
        assert json.loads(os.environ[ENV_LOCKS]) == {str(run_dir.resolve()): os.getpid()}
        out = subprocess.run([sys.executable, "-c", TRY_SCRIPT, str(run_dir)], capture_output=True, text=True,
                             timeout=STARTUP_S, check=True).stdout
    assert out == "inherited\n"
    assert ENV_LOCKS not in os.environ


def test_a_forged_advertisement_from_a_non_ancestor_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    proc = _start_holder(run_dir)
    try:
        # The holder is not an ancestor of the trying process, whatever the environment says.
        env = {**os.environ, ENV_LOCKS: json.dumps({str(run_dir.resolve()): proc.pid})}
        out = subprocess.run([sys.executable, "-c", TRY_SCRIPT, str(run_dir)], capture_output=True, text=True,
                             timeout=STARTUP_S, env=env, check=True).stdout
    finally:
        _stop(proc)
    assert out.startswith("refused:") and f"pid {proc.pid}" in out


def test_rank_other_than_zero_takes_no_lock(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    proc = _start_holder(run_dir)
    try:
        monkeypatch.setenv("RANK", "1")
        with run_lock(run_dir, "ddp rank 1") as handle:  # no refusal although another process holds it
            assert handle.how == "not-rank-0"
            assert lock.held_here() == {}
        assert lock.read_holder(run_dir)["pid"] == proc.pid  # the holder's record untouched
        monkeypatch.setenv("RANK", "0")
        with pytest.raises(RunLockedError):
            with run_lock(run_dir, "ddp rank 0"):
                pass
    finally:
        _stop(proc)
    monkeypatch.setenv("RANK", "3")
    with run_lock(tmp_path / "absent", "rank 3"):
        pass
    assert not (tmp_path / "absent").exists()  # nothing created, not even the folder


def test_refusal_for_a_holder_on_another_host_says_to_remove_the_lock_file(tmp_path):
    holder = {"pid": 4242, "host": "pod-elsewhere", "started": "2026-11-30T10:00:00+00:00", "purpose": "stage 05",
              "command": "alignkit run --preset qwen2.5-7b-qlora\n  --stages 05"}
    message = str(lock._refusal(tmp_path, holder))
    assert message == (
        f"run folder {tmp_path} is in use: pid 4242 on host pod-elsewhere has held it since "
        "2026-11-30T10:00:00+00:00 for 'stage 05' (command: alignkit run --preset qwen2.5-7b-qlora --stages 05); "
        "wait for it to finish, or if that process no longer runs on pod-elsewhere, remove the lock by hand "
        f"(rm {tmp_path / LOCK_NAME} {tmp_path / HOLDER_NAME}) and run again")


def test_refusal_when_the_named_holder_is_gone_but_the_lock_is_held(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True, timeout=STARTUP_S)
    holder = {"pid": int(dead.stdout), "host": socket.gethostname(), "started": "x", "purpose": "p", "command": "c"}
    message = str(lock._refusal(tmp_path, holder))
    assert "a process it started still holds the lock" in message and f"fuser -v {tmp_path / LOCK_NAME}" in message
    assert "\n" not in str(lock._refusal(tmp_path, None))


def test_holder_alive_detects_pid_reuse():
    me = lock.holder_record("x")
    assert lock.holder_alive(me) is True
    assert lock.holder_alive({**me, "pid_started": me["pid_started"] - 3600}) is False  # same pid, other process
    assert lock.holder_alive({**me, "host": "elsewhere"}) is None
