"""`make lab`: the JupyterLab command line (flags, root handling, overrides), then the server started for real."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
STARTUP_S = 90  # JupyterLab starts in ~5-15 s on the 2-core dev machine; generous for a busy CI machine
AS_ROOT = os.geteuid() == 0

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("make") is None, reason="needs make")]


def lab_command(**overrides: str) -> tuple[dict[str, str], list[str]]:
    """The environment assignments and argv of the JupyterLab line `make -n lab` would run."""
    args = ["make", "-n", "-s", "lab", *(f"{k}={v}" for k, v in overrides.items())]
    env = {k: v for k, v in os.environ.items() if k not in ("LAB_PORT", "LAB_TOKEN", "MAKEFLAGS")}
    out = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=60, check=True, env=env).stdout
    # Recipe lines continued with backslash-newline; setup commands may precede the lab line (stale stamp).
    lines = [line for line in out.replace("\\\n", " ").splitlines() if "bin/jupyter lab" in line]
    assert len(lines) == 1, out
    words = shlex.split(lines[0])
    env = {}
    while "=" in words[0] and not words[0].startswith("-"):
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    return env, words


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_make_lab_flags():
    env, argv = lab_command()
    assert env == {}  # no token given: Jupyter makes a random one (an empty token would disable auth)
    assert argv[0] == ".venv/bin/jupyter" and argv[1] == "lab"
    assert argv[argv.index("--ip") + 1] == "0.0.0.0"
    assert argv[argv.index("--port") + 1] == "8888"
    assert "--no-browser" in argv and "--ServerApp.port_retries=0" in argv
    assert f"--ServerApp.root_dir={REPO / 'notebooks'}" in argv
    assert ("--allow-root" in argv) == AS_ROOT
    assert not any("token" in word.lower() for word in argv)


def test_make_lab_overrides():
    env, argv = lab_command(LAB_PORT="9123", LAB_TOKEN="s3cret-token")
    assert env == {"JUPYTER_TOKEN": "s3cret-token"}  # in the environment, not in argv that `ps` shows
    assert argv[argv.index("--port") + 1] == "9123"
    assert "s3cret-token" not in " ".join(argv)


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, b""


def test_lab_really_starts_serves_notebooks_and_stops(tmp_path):
    port, token = free_port(), "alignkit-lab-test-token"
    env_add, argv = lab_command(LAB_PORT=str(port), LAB_TOKEN=token)
    env = {**os.environ, **env_add, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}  # keep the user's ~/.jupyter out of it
    log = open(tmp_path / "lab.log", "wb")
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status, body = _get(f"{base}/api/status", token)
            except OSError:  # not listening yet
                status = None
            if status == 200:
                break
            time.sleep(0.5)
        assert proc.poll() is None, (tmp_path / "lab.log").read_text(errors="replace")[-3000:]
        assert status == 200, f"no answer on {base} within {STARTUP_S} s"
        assert "started" in json.loads(body)
        # Token authentication is on: without it the API refuses.
        assert _get(f"{base}/api/status")[0] == 403
        # The server's root is notebooks/: its listing holds the stage notebooks themselves.
        status, listing = _get(f"{base}/api/contents", token)
        names = {item["name"] for item in json.loads(listing)["content"]}
        assert status == 200 and "01_sft_data.ipynb" in names and "alignkit" not in names
        # Bound on every interface, the way a pod's port proxy reaches it.
        bound = {c.laddr.ip for c in psutil.Process(proc.pid).net_connections("inet")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
        assert "0.0.0.0" in bound or "::" in bound
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        log.close()
    assert proc.returncode is not None
