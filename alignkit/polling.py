"""A daemon thread that polls while a ``with`` block runs: stage 06's RSS monitor
(:class:`alignkit.eval.memory.RSSMonitor`) and the terminal's run-log relay (:class:`alignkit.terminal.LogRelay`)."""

from __future__ import annotations

import abc
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # typing.Self is Python 3.11+; annotations are not evaluated at run time
    from typing import Self


class Poller(abc.ABC):
    """Call :meth:`poll` every ``interval_s`` seconds in a daemon thread while the ``with`` block runs, and once
    more on exit, so the state at the end is always seen. Subclasses implement :meth:`poll` and may set up state
    in :meth:`on_enter` (called before the thread starts).

    >>> class Count(Poller):
    ...     calls = 0
    ...     def poll(self):
    ...         self.calls += 1
    >>> with Count(interval_s=60) as counter:
    ...     pass
    >>> counter.calls  # the final poll on exit
    1
    """

    thread_name = "poller"

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @abc.abstractmethod
    def poll(self) -> None:
        """One look at whatever the subclass watches (runs in the polling thread)."""

    def on_enter(self) -> None:
        """Set up before the first poll (nothing by default)."""

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()

    def __enter__(self) -> Self:
        self.on_enter()
        self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.poll()
