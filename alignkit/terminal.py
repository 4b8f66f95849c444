"""What ``alignkit run`` prints in a terminal: one line per stage start and end with its key numbers, training
progress lines as the kernels log them, warnings, and at the end a time table, the headline and the report path.
Everything else the kernels print goes to ``runs/<run_id>/run.log``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alignkit.config import PER_SEED_STAGES
from alignkit.polling import Poller
from alignkit.runs import Run

log = logging.getLogger(__name__)

#: Logger whose records are relayed from the kernels to the terminal (training progress).
PROGRESS_LOGGER = "alignkit.progress"
#: A run.log line the terminal shows: progress, and alignkit's own warnings and errors.
_RELAY = re.compile(rf"^\S+ (?:INFO {re.escape(PROGRESS_LOGGER)}|(?:WARNING|ERROR|CRITICAL) alignkit[.\w]*): (.*)$")


def relay_line(line: str) -> str | None:
    """The part of a run.log line the terminal shows, or None.

    >>> relay_line("12:00:01 INFO alignkit.progress: SFT seed 0: step 10/39, loss 1.20")
    'SFT seed 0: step 10/39, loss 1.20'
    >>> relay_line("12:00:01 WARNING alignkit.stages.sft_data: only 27 of 42 SFT examples were accepted")
    'warning: only 27 of 42 SFT examples were accepted'
    >>> relay_line("12:00:01 INFO alignkit.generation: 20 prompts") is None
    True
    """
    match = _RELAY.match(line.rstrip("\n"))
    if match is None:
        return None
    text = match.group(1)
    return text if f"INFO {PROGRESS_LOGGER}" in line else f"warning: {text}"


class LogRelay(Poller):
    """While the ``with`` block runs, follow ``path`` from its current end and pass relayed lines to ``emit``."""

    thread_name = "log-relay"

    def __init__(self, path: Path, emit: Callable[[str], None], interval_s: float = 0.5) -> None:
        super().__init__(interval_s)
        self.path, self.emit = Path(path), emit
        self._offset = 0

    def on_enter(self) -> None:
        self._offset = self.path.stat().st_size if self.path.is_file() else 0

    def poll(self) -> None:
        if not self.path.is_file():
            return
        with self.path.open("r", encoding="utf-8", errors="replace") as handle:
            handle.seek(self._offset)
            while True:
                line = handle.readline()
                if not line.endswith("\n"):
                    break  # a partial line: read it whole next time
                self._offset = handle.tell()
                shown = relay_line(line)
                if shown is not None:
                    self.emit(f"      {shown}")


def _pct(x: Any) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def stage_summary(run: Run, stage: str) -> str:
    """The key numbers of a finished stage, in a few words (empty when it has no complete manifest)."""
    views = run.seed_views() if stage in PER_SEED_STAGES else [run]
    manifests = [view.manifest(stage) for view in views]
    if any(m is None for m in manifests):
        return ""
    summaries = [m.get("summary") or {} for m in manifests]
    first = summaries[0]
    seeds = f" x {len(views)} seeds" if len(views) > 1 else ""
    if stage == "01_sft_data":
        return (f"{first.get('kept')} SFT examples (acceptance {_pct(first.get('acceptance_rate'))}), "
                f"{(first.get('dev') or {}).get('kept')} dev examples")
    if stage == "02_sft_training":
        losses = ", ".join(f"{s.get('loss_first', 0):.2f}→{s.get('loss_last', 0):.2f}" for s in summaries)
        return f"SFT loss {losses}{seeds}"
    if stage == "03_negatives":
        share = [v for s in summaries for v in (s.get("on_policy_share") or {}).values() if v is not None]
        mean = sum(share) / len(share) if share else None
        return f"{first.get('total')} negatives{seeds}, on-policy share {_pct(mean)} (mean over types)"
    if stage == "04_preference_pairs":
        end_less = sum(sum(d.get("rejected_without_end", 0) for d in (s.get("defects") or {}).values())
                       for s in summaries)
        return f"{first.get('pairs')} pairs{seeds}, {end_less} with an END-less rejected in all"
    if stage == "05_dpo_training":
        acc = [r.get("train_reward_accuracy") for s in summaries for r in (s.get("runs") or {}).values()]
        acc = [a for a in acc if a is not None]
        return f"2 DPO runs{seeds}, final train reward accuracy {_pct(min(acc) if acc else None)}–" \
               f"{_pct(max(acc) if acc else None)}"
    if stage == "06_evaluation":
        return f"{first.get('n_items')} {first.get('split', 'test')} items, every arm"
    return ""


def seconds_table(rows: list[tuple[str, float, str]]) -> str:
    """A small fixed-width table of stage timings.

    >>> print(seconds_table([("01_sft_data", 12.3, "ran"), ("02_sft_training", 0.0, "cached")]))
      stage                 seconds  how
      01_sft_data              12.3  ran
      02_sft_training           0.0  cached
    """
    lines = [f"  {'stage':20s} {'seconds':>8s}  how"]
    lines += [f"  {stage:20s} {seconds:8.1f}  {how}" for stage, seconds, how in rows]
    return "\n".join(lines)


class _TerminalFilter(logging.Filter):
    """What an in-process command shows in the terminal: progress lines, alignkit's warnings, and any error (the
    libraries' own warnings, e.g. about optional CPU kernels, go to the log file only)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == PROGRESS_LOGGER or record.levelno >= logging.ERROR:
            return True
        return record.levelno >= logging.WARNING and record.name.startswith("alignkit")


def quiet_process(log_path: Path, verbose: bool = False) -> None:
    """For a long in-process command (``alignkit sweep``): every log record goes to ``log_path``; the terminal
    gets progress lines and warnings only (everything with ``verbose``); progress bars and library deprecation
    warnings are off."""
    import os
    import warnings

    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        import datasets
        import transformers

        datasets.disable_progress_bars()
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except ImportError:
        pass
    root = logging.getLogger()
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(log_path, encoding="utf-8")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    for handler in root.handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler) \
                and not verbose:
            handler.addFilter(_TerminalFilter())
    root.addHandler(to_file)
