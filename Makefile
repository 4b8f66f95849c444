# Two commands for a newcomer:  `make run` (set up + the default study)  and  `make test` (set up + tests).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PRESET ?= tiny
PY := $(VENV)/bin/python
# On a GPU pod torch (CUDA build) is already installed system-wide: reuse it through system site packages
# instead of installing another build. Elsewhere install the pinned CPU build only if none is importable.
SYSTEM_TORCH := $(shell $(PYTHON) -c "import torch" >/dev/null 2>&1 && echo yes)
VENV_FLAGS := $(if $(SYSTEM_TORCH),--system-site-packages,)
STAMP := $(VENV)/.alignkit-installed

.PHONY: setup run test test-fast bench lab clean-runs readme-numbers gpu-check

# pip -qq: setup prints errors only (warnings about this machine's package indexes or the build backend would
# otherwise fill a newcomer's terminal before the study starts).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(PY) -m pip install -qq --upgrade pip
	$(PY) -c "import torch" >/dev/null 2>&1 || $(PY) -m pip install -qq torch==2.13.0
	$(PY) -m pip install -qq -e ".[dev,gpu]"
	$(PY) -c "from alignkit.runner import ensure_kernel; ensure_kernel()"
	touch $(STAMP)

setup: $(STAMP)

## The main job: the full study on the default (embedded tiny) preset -> reports/$(PRESET)/report.html
run: setup
	HF_HUB_OFFLINE=$${HF_HUB_OFFLINE:-1} $(VENV)/bin/alignkit run --preset $(PRESET)

## The test suite (benchmarks excluded; they print ratios instead of asserting timings)
test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m "not benchmark" --doctest-modules alignkit tests

## The edit loop: unit tests and doctests only (no notebooks, no torchrun, no kill -9: no test marked slow)
test-fast: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m "not benchmark and not slow" --doctest-modules alignkit tests

## The GPU check to run first on a pod: qwen2.5-0.5b shrunk to a few steps per stage, bf16 + QLoRA, peak CUDA
## memory of every stage against `alignkit plan`; refuses clearly without a GPU
gpu-check: setup
	$(VENV)/bin/python -m alignkit selftest --gpu

## The README's measured table, printed from the last run's manifests and results.json
readme-numbers: setup
	HF_HUB_OFFLINE=1 $(VENV)/bin/alignkit summary --preset $(PRESET)

## Benchmarks: print measured ratios (generation batching, evaluation memory, cache)
bench: setup
	HF_HUB_OFFLINE=1 $(PY) tests/benchmarks/bench_generation.py
	HF_HUB_OFFLINE=1 $(PY) tests/benchmarks/bench_eval_memory.py
	HF_HUB_OFFLINE=1 $(PY) tests/benchmarks/bench_contention.py
	HF_HUB_OFFLINE=1 $(PY) tests/benchmarks/bench_cache.py --preset smoke

## JupyterLab on all interfaces (a pod's exposed port), opened in notebooks/, with token authentication: Jupyter
## prints a random token in its URL unless LAB_TOKEN is set (passed as JUPYTER_TOKEN, not on the command line
## that `ps` shows). Jupyter refuses to run as root without --allow-root: added only when make runs as root
## (RunPod pods). port_retries=0: fail on a busy port instead of moving to one the pod does not expose.
LAB_PORT ?= 8888
LAB_TOKEN ?=
lab: setup
	$(if $(LAB_TOKEN),JUPYTER_TOKEN='$(LAB_TOKEN)' ,)$(VENV)/bin/jupyter lab --ip 0.0.0.0 --port $(LAB_PORT) \
	    --ServerApp.port_retries=0 --no-browser --ServerApp.root_dir='$(CURDIR)/notebooks' \
	    $(if $(filter 0,$(shell id -u)),--allow-root,)

clean-runs:
	rm -rf data/runs reports/*/
