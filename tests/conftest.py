"""Shared pytest setup: never touch the network, keep every run inside a temporary ALIGNKIT_HOME."""

from __future__ import annotations

import os

# Set before transformers / huggingface_hub are imported by any test module.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Two cores are shared by torch's intra-op threads and anything else running; oversubscribed OpenMP threads
# make small models 100x slower. Tests use one thread: results do not depend on it, timings stay stable.
import torch  # noqa: E402

torch.set_num_threads(1)
