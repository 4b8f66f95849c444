"""Evaluation memory: RSS sampling while a model is loaded and generating, CUDA peaks, and the memory block of
results.json (models are evaluated one at a time; this is how the report shows that they were).
"""

from __future__ import annotations

import resource
from collections.abc import Mapping
from typing import Any

from alignkit.polling import Poller

#: RSS sampling period of the memory monitor, in seconds.
RSS_INTERVAL_S = 0.02
_MB = 1024 * 1024


def current_rss() -> int:
    """This process's resident set size in bytes."""
    import psutil

    return int(psutil.Process().memory_info().rss)


def process_peak_rss() -> int:
    """The process's lifetime peak RSS in bytes (``ru_maxrss``, which Linux reports in KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class RSSMonitor(Poller):
    """Samples RSS every ``interval_s`` in a daemon thread while the ``with`` block runs.

    ``baseline`` is the RSS on entry (interpreter, libraries, anything already resident), ``peak`` the highest
    sample (absolute RSS, baseline included; a spike shorter than one period can be missed, which is why
    :func:`process_peak_rss` is recorded as well). Both in bytes.
    """

    thread_name = "rss-monitor"

    def __init__(self, interval_s: float = RSS_INTERVAL_S) -> None:
        super().__init__(interval_s)
        self.baseline = 0
        self.peak = 0
        self.samples = 0

    def on_enter(self) -> None:
        self.baseline = current_rss()
        self.peak = self.baseline

    def poll(self) -> None:
        self.peak = max(self.peak, current_rss())
        self.samples += 1


def cuda() -> Any:
    """The torch.cuda module when a GPU is in use, else None."""
    import torch

    return torch.cuda if torch.cuda.is_available() else None


def mb(n_bytes: int | None) -> float | None:
    return None if n_bytes is None else round(n_bytes / _MB, 1)


def memory_summary(per_model: Mapping[str, Mapping[str, Any]], device: str, max_resident_now: int,
                   loads_now: int) -> dict[str, Any]:
    """The ``memory`` block of results.json from the per-model records.

    >>> m = memory_summary({"a": {"rss_peak_mb": 900.0, "max_models_resident": 1, "resumed": True},
    ...                     "b": {"rss_peak_mb": 950.5, "max_models_resident": 1, "resumed": False}}, "cpu", 1, 1)
    >>> m["max_models_resident"], m["peak_rss_mb"], m["resumed_models"]
    (1, 950.5, ['a'])
    """
    recorded = [m.get("max_models_resident") or 0 for m in per_model.values()]
    peaks = [m["rss_peak_mb"] for m in per_model.values() if m.get("rss_peak_mb") is not None]
    cuda_peaks = [m["cuda_max_allocated_mb"] for m in per_model.values() if m.get("cuda_max_allocated_mb") is not None]
    return {
        "device": device,
        "max_models_resident": max([max_resident_now, *recorded]),
        "models_loaded_this_process": loads_now,
        "resumed_models": [name for name, m in per_model.items() if m.get("resumed")],
        "peak_rss_mb": max(peaks) if peaks else None,
        "peak_cuda_allocated_mb": max(cuda_peaks) if cuda_peaks else None,
        "process_peak_rss_mb": mb(process_peak_rss()),
        "rss_sample_interval_ms": int(RSS_INTERVAL_S * 1000),
        "method": ("rss_peak_mb: highest process RSS sampled every 20 ms from just before a model loads until it "
                   "is released (absolute, so it includes the interpreter and libraries: rss_baseline_mb); "
                   "cuda_max_allocated_mb: torch.cuda.max_memory_allocated after resetting the peak per model; "
                   "max_models_resident: models alive at once, counted by the loader with weak references."),
        "per_model": {name: dict(m) for name, m in per_model.items()},
    }


