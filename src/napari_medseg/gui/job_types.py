"""What a job is made of besides its thread: the factory type, the pause clock, the outcomes.

No threads start here (that is :mod:`napari_medseg.gui.workers`'s job)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

#: Factory of the job's generator; receives ``should_stop`` to pass to the engine (and,
#: started with ``with_clock=True``, the job's :class:`PauseClock` as a second argument).
GenFactory = Callable[..., Generator[Any, Any, Any]]


class PauseClock:
    """Seconds (``time.perf_counter``) that stand still while a job is paused.

    The worker pauses between two events, while the job's generator is
    suspended at a ``yield``; :meth:`~napari_medseg.gui.workers.Job._run`
    measures such suspensions and hands them to :meth:`exclude`. Thread-safe:
    read from the worker thread (the engine) and from the GUI thread.
    """

    def __init__(self, base: Callable[[], float] = time.perf_counter) -> None:
        self._base = base
        self._lock = threading.Lock()
        self._paused_total = 0.0

    def __call__(self) -> float:
        with self._lock:
            return self._base() - self._paused_total

    def exclude(self, seconds: float) -> None:
        """Take ``seconds`` (time spent paused) off the clock from now on."""
        if seconds > 0:
            with self._lock:
                self._paused_total += seconds

    @property
    def paused_s(self) -> float:
        """Seconds excluded so far."""
        return self._paused_total


@dataclass(frozen=True)
class JobDone:
    """The generator returned ``value``."""

    value: Any


@dataclass(frozen=True)
class JobFailed:
    """The generator (or its factory) raised ``error``."""

    error: BaseException
    traceback: str


@dataclass(frozen=True)
class JobCancelled:
    """The job was cancelled; its generator was closed."""
