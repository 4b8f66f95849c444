"""Shared pytest setup: never touch the network, keep every run inside a temporary ALIGNKIT_HOME."""

from __future__ import annotations

import os

# Set before transformers / huggingface_hub are imported by any test module.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Importing alignkit sets the threading policy (alignkit.threads), which must precede torch's import to take
# effect in this process (test_threads checks the order); subprocesses choose their own.
import pytest  # noqa: E402

from alignkit import threads  # noqa: E402

# In-process tests use one thread: results do not depend on it and timings stay stable beside the notebook
# kernels and CLI subprocesses the tests start (those run with alignkit's policy). Set through the policy, so that
# following the load never raises it again. This imports torch, after alignkit.
threads.set_threads(1)


@pytest.fixture(scope="session")
def smoke_env(tmp_path_factory):
    """A temporary ALIGNKIT_HOME / ALIGNKIT_REPORTS for the whole session (the smoke base model is built once)."""
    root = tmp_path_factory.mktemp("alignkit-smoke")
    env = {"ALIGNKIT_HOME": str(root / "data"), "ALIGNKIT_REPORTS": str(root / "reports")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield root
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def smoke_run(smoke_env):
    """Run every notebook once on the smoke preset; returns (run dir, report dir, notebook results)."""
    from alignkit.runner import run_notebooks

    results = run_notebooks("smoke", run_id="smoke", progress=False)
    return smoke_env / "data" / "runs" / "smoke", smoke_env / "reports" / "smoke", results
