"""The CPU threading policy only works if alignkit is imported before torch: check that every script of the repo
that imports both does so, and that a process where torch came first says so instead of failing silently."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alignkit import threads

REPO = Path(__file__).resolve().parent.parent


def _top_level_imports(path: Path) -> list[str]:
    """Top-level package names in import order (module level only; imports inside functions are lazy)."""
    names = []
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            names += [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module.split(".")[0])
    return names


def _starts_a_process(path: Path) -> bool:
    """conftest.py (pytest's process) and scripts run as programs; test modules load after conftest.py."""
    return path.name == "conftest.py" or 'if __name__ == "__main__"' in path.read_text(encoding="utf-8")


SCRIPTS = sorted(p for p in REPO.glob("tests/**/*.py")
                 if _starts_a_process(p) and {"alignkit", "torch"} <= set(_top_level_imports(p)))


def test_scripts_that_import_both_exist():
    # conftest.py imports only alignkit at module level (torch comes through it); if it ever imports torch too, it
    # joins SCRIPTS and the order is checked.
    assert REPO / "tests" / "benchmarks" / "bench_generation.py" in SCRIPTS


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_alignkit_is_imported_before_torch(path):
    names = _top_level_imports(path)
    assert names.index("alignkit") < names.index("torch"), \
        f"{path.relative_to(REPO)}: import alignkit before torch, or its threading policy is void in that process"


POLICY_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY",
                    threads.SWITCH, threads.THREADS, threads.CHOSEN)


def _env_without_policy(**extra: str) -> dict[str, str]:
    """This environment less every threading variable (as a user's fresh shell has it), plus ``extra``."""
    return {**{k: v for k, v in os.environ.items() if k not in POLICY_VARIABLES}, **extra}


def _describe_after(first: str, second: str, **extra_env: str) -> str:
    code = f"import {first}, {second}\nfrom alignkit import threads\nprint(threads.describe())"
    return subprocess.run([sys.executable, "-c", code], env=_env_without_policy(**extra_env), capture_output=True,
                          text=True, check=True, timeout=300).stdout


def test_a_fixed_count_process_that_imported_torch_first_says_the_bounded_spin_is_void():
    late = _describe_after("torch", "alignkit", ALIGNKIT_THREAD_POLICY="fixed")
    assert f"GOMP_SPINCOUNT={threads.SPINCOUNT} (alignkit)" in late and "torch was imported before alignkit" in late
    in_time = _describe_after("alignkit", "torch", ALIGNKIT_THREAD_POLICY="fixed")
    assert f"GOMP_SPINCOUNT={threads.SPINCOUNT} (alignkit)" in in_time and "before alignkit" not in in_time
    assert "follow the load" not in in_time


def test_by_default_the_thread_count_follows_the_load_with_libgomps_own_spin_even_after_torch():
    for order in (("alignkit", "torch"), ("torch", "alignkit")):
        line = _describe_after(*order)
        assert "follow the load" in line and "GOMP_SPINCOUNT" not in line and "before alignkit" not in line, line
    # A count the user sets through OpenMP's own variable is kept, with the bounded spin.
    fixed = _describe_after("alignkit", "torch", OMP_NUM_THREADS="1")
    assert "OMP_NUM_THREADS=1 (environment)" in fixed and f"GOMP_SPINCOUNT={threads.SPINCOUNT}" in fixed
    assert "follow the load" not in fixed
    # ALIGNKIT_THREADS sets the most threads used, still followed.
    assert "follow the load (3 when" in _describe_after("alignkit", "torch", ALIGNKIT_THREADS="3")


def test_a_child_of_an_alignkit_process_chooses_again_and_follows_the_load():
    # A notebook kernel or stage process inherits the variables its parent set; they are not the user's choice.
    child = "import alignkit, torch\nfrom alignkit import threads\nprint(threads.describe())"
    parent = (f"import alignkit, subprocess, sys\nprint(subprocess.run([sys.executable, '-c', {child!r}], "
              "capture_output=True, text=True, check=True).stdout)")
    line = _describe_after("alignkit", "os", ALIGNKIT_THREADS="3")  # the parent alone, for comparison
    assert "follow the load (3 when" in line
    out = subprocess.run([sys.executable, "-c", parent], env=_env_without_policy(), capture_output=True, text=True, check=True,
                         timeout=300).stdout
    assert "follow the load" in out and "(environment)" not in out and "GOMP_SPINCOUNT" not in out, out


class FakeMachine:
    """A clock, /proc/stat with two CPUs and this process's CPU time, all moved by hand."""

    def __init__(self) -> None:
        self.now, self.busy_ticks, self.own_seconds, self.reads, self.set_to = 0.0, [0, 0], 0.0, 0, []

    def stat(self) -> str:
        self.reads += 1
        return "".join(f"cpu{i} {ticks} 0 0 500 0 0 0 0\n" for i, ticks in enumerate(self.busy_ticks))

    def follower(self, ceiling: int = 2) -> threads.LoadFollower:
        return threads.LoadFollower(ceiling, {0, 1}, read_stat=self.stat, set_threads=self.set_to.append,
                                    ticks_per_s=100, interval=0.25, clock=lambda: self.now,
                                    cpu_time=lambda: self.own_seconds)

    def advance(self, wall: float, busy: tuple[float, float], own: float) -> None:
        """``wall`` seconds in which the CPUs were busy ``busy`` seconds each, ``own`` of them this process's."""
        self.now += wall
        self.busy_ticks = [t + round(b * 100) for t, b in zip(self.busy_ticks, busy)]
        self.own_seconds += own


def test_the_follower_drops_at_once_and_rises_after_two_agreeing_measurements():
    machine = FakeMachine()
    follower = machine.follower()
    # 0.5 s: CPUs busy 0.5 + 0.4 s, 0.3 s of it ours -> others used 0.6 s / 0.5 s = 1.2 CPUs -> 2 - 1.2 -> 1.
    machine.advance(0.5, (0.5, 0.4), 0.3)
    assert follower.update() == 1 and machine.set_to == [1]
    # Within the interval nothing is read or changed.
    reads = machine.reads
    machine.advance(0.1, (0.1, 0.1), 0.0)
    assert follower.update() == 1 and machine.reads == reads
    # 0.4 s more (0.5 s since the last measurement): busy 0.3 + 0.25, ours 0.3 -> others 0.35 / 0.5 = 0.5 CPU ->
    # 2 - 0.5 = 1.5 rounds to 2: one vote to rise, not yet.
    machine.advance(0.4, (0.2, 0.15), 0.3)
    assert follower.update() == 1 and machine.set_to == [1]
    # The second agreeing measurement: others 0.1 / 0.5 = 0.2 CPU -> 2 threads.
    machine.advance(0.5, (0.3, 0.3), 0.5)
    assert follower.update() == 2 and machine.set_to == [1, 2]
    assert (follower.lowest, follower.changes) == (1, 2)


def test_a_rise_vote_is_forgotten_when_the_load_comes_back():
    machine = FakeMachine()
    follower = machine.follower()
    machine.advance(0.5, (0.5, 0.5), 0.0)  # others 2 CPUs -> 1 thread
    assert follower.update() == 1
    machine.advance(0.5, (0.0, 0.0), 0.0)  # free: first vote
    assert follower.update() == 1
    machine.advance(0.5, (0.5, 0.5), 0.0)  # busy again: the vote is dropped
    assert follower.update() == 1
    machine.advance(0.5, (0.0, 0.0), 0.0)  # free once: one vote again, not two
    assert follower.update() == 1 and machine.set_to == [1]


def test_own_time_above_the_cpus_busy_time_counts_as_no_load():
    # /proc/stat counts in 10 ms ticks, process time precisely: a process can seem to have used more than the CPUs.
    machine = FakeMachine()
    follower = machine.follower()
    machine.advance(0.5, (0.2, 0.2), 0.45)
    assert follower.update() == 2 and machine.set_to == []


def test_runtime_threads_sets_the_count_on_free_cpus(monkeypatch):
    import torch

    machine = FakeMachine()
    follower = machine.follower(ceiling=2)
    monkeypatch.setattr(threads, "_FOLLOWER", follower)
    before = torch.get_num_threads()
    try:
        assert threads.set_threads(1) == 1 and (follower.ceiling, follower.threads) == (1, 1)
        machine.advance(0.5, (0.0, 0.0), 0.0)
        assert follower.update() == 1  # free CPUs: still at most the configured count
    finally:
        torch.set_num_threads(before)


def test_busy_seconds_reads_this_machines_proc_stat():
    stat = Path("/proc/stat")
    if not stat.is_file():
        pytest.skip("no /proc/stat (not Linux)")
    cpus = os.sched_getaffinity(0)
    first = threads.busy_seconds(stat.read_text(), cpus, os.sysconf("SC_CLK_TCK"))
    sum(i * i for i in range(300_000))  # keep one CPU busy for a moment
    assert threads.busy_seconds(stat.read_text(), cpus, os.sysconf("SC_CLK_TCK")) >= first > 0


BURNER = "import time\nend = time.monotonic() + 20\nwhile time.monotonic() < end: pass\n"
FOLLOW_BESIDE_BURNER = """
import time
import alignkit, torch
from alignkit import threads
end = time.monotonic() + 2.0
while time.monotonic() < end:
    threads.follow_load()
    time.sleep(0.05)
print(threads.follower_summary())
"""


@pytest.mark.skipif(threads.available_cpus() < 2 or not Path("/proc/stat").is_file(),
                    reason="needs /proc/stat and at least 2 CPUs to leave one to the other process")
def test_a_real_process_uses_fewer_threads_while_another_process_burns_a_cpu():
    burner = subprocess.Popen([sys.executable, "-c", BURNER])
    try:
        out = subprocess.run([sys.executable, "-c", FOLLOW_BESIDE_BURNER], env=_env_without_policy(),
                             capture_output=True, text=True, check=True, timeout=300).stdout
    finally:
        burner.kill()
        burner.wait()
    summary = ast.literal_eval(out.strip().splitlines()[-1])
    # The burner takes a whole CPU: the follower leaves it one (however many the machine has).
    assert summary["lowest"] <= summary["ceiling"] - 1 and summary["changes"] >= 1, summary


def test_what_a_change_of_thread_count_changes_on_the_tiny_model(monkeypatch):
    """The load follower may change the thread count mid-run. On the tiny preset's model, inference does not change
    by a bit (logits, greedy generations); a backward pass changes gradients in the last bits only (torch splits
    some reductions by thread), which is why a stage that changed its count says so (see execute_stage)."""
    import torch

    from alignkit import template, world
    from alignkit.config import resolve
    from alignkit.generation import GenerationSettings, generate
    from alignkit.world import tinybase

    monkeypatch.setattr(threads, "_FOLLOWER", None)  # the counts below are set by hand
    build = resolve("tiny").base_build
    tokenizer = tinybase.train_tokenizer(world.corpus(0, 80), build.vocab_size)
    torch.manual_seed(0)
    model = tinybase.make_model(build, tokenizer)
    prompts = [template.prompt(text) for text in ("Add 2 and 3.", "What is the capital of France?",
                                                  "Reverse the word 'planet'.", "List three kinds of apple.")]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)

    def measure() -> tuple[torch.Tensor, list[str], torch.Tensor]:
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            logits = model(**batch).logits
        texts = [g.raw_output for g in generate(model, tokenizer, prompts, GenerationSettings(max_new_tokens=16),
                                                progress=False)]
        model.train()
        model(**batch, labels=batch["input_ids"]).loss.backward()
        model.eval()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        return logits, texts, grads

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = measure()
        torch.set_num_threads(1)
        one = measure()
    finally:
        torch.set_num_threads(before)
    assert one[1] == two[1] and torch.equal(one[0], two[0])
    assert torch.allclose(one[2], two[2], rtol=1e-5, atol=1e-6)


def test_only_the_first_change_is_an_info_line(caplog):
    import logging

    machine = FakeMachine()
    follower = machine.follower()
    with caplog.at_level(logging.DEBUG, logger="alignkit.threads"):
        for busy in ((0.5, 0.5), (0.0, 0.0), (0.0, 0.0), (0.5, 0.5)):  # down, (vote), up, down
            machine.advance(0.5, busy, 0.0)
            follower.update()
    assert machine.set_to == [1, 2, 1]
    levels = [record.levelname for record in caplog.records if "torch threads" in record.getMessage()]
    assert levels == ["INFO", "DEBUG", "DEBUG"]
    assert "other processes used 2.0 of 2 CPU(s); torch threads 2 -> 1" in caplog.records[0].getMessage()
