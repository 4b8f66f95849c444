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
    assert REPO / "tests" / "conftest.py" in SCRIPTS
    assert REPO / "tests" / "benchmarks" / "bench_generation.py" in SCRIPTS


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_alignkit_is_imported_before_torch(path):
    names = _top_level_imports(path)
    assert names.index("alignkit") < names.index("torch"), \
        f"{path.relative_to(REPO)}: import alignkit before torch, or its threading policy is void in that process"


def _describe_after(first: str, second: str) -> str:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY",
                        "ALIGNKIT_THREAD_POLICY", "ALIGNKIT_THREADS")}
    code = f"import {first}, {second}\nfrom alignkit import threads\nprint(threads.describe())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                          timeout=300).stdout


def test_a_process_that_imported_torch_first_says_the_wait_policy_is_void():
    late = _describe_after("torch", "alignkit")
    assert f"GOMP_SPINCOUNT={threads.SPINCOUNT} (alignkit)" in late and "torch was imported before alignkit" in late
    in_time = _describe_after("alignkit", "torch")
    assert f"GOMP_SPINCOUNT={threads.SPINCOUNT} (alignkit)" in in_time and "before alignkit" not in in_time
