"""Latency measures taken while jobs run: fewer torch threads. Called by
:mod:`napari_medseg.gui.workers`; starts no threads."""

from __future__ import annotations

import threading
from typing import Any

# Measured with benchmarks/gui_latency.py (a 10 ms QTimer probe in a real viewer while the
# widgets train and predict, 2 shared cores, software OpenGL): these measures are taken while
# a job runs and undone when the last job ends. Set a switch off to measure without it (the
# benchmark's --no-fixes / --without).

#: torch's intra-op threads default to one per core; a job uses at most
#: ``cores - TORCH_RESERVED_CORES`` so the GUI thread and the renderer keep a core. On the
#: shared 2-core machine this made training and prediction ~3x faster (two OpenMP threads on
#: oversubscribed cores spin and wait for each other); its effect on the probe was within noise.
TORCH_RESERVED_CORES = 1

_tune_lock = threading.Lock()
_tune_depth = 0
_tune_saved: dict[str, Any] = {}


def usable_cores() -> int:
    """CPU cores this process may run on (affinity / container aware)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def torch_threads_for_jobs() -> int:
    """Intra-op threads a job's torch may use: all cores but ``TORCH_RESERVED_CORES``."""
    return max(1, usable_cores() - max(0, TORCH_RESERVED_CORES))


def _enter_job_tuning(uses_torch: bool) -> None:
    """Worker thread, job start: fewer torch threads (see ``TORCH_RESERVED_CORES``)."""
    global _tune_depth
    with _tune_lock:
        _tune_depth += 1
        if uses_torch and TORCH_RESERVED_CORES and "threads" not in _tune_saved:
            import torch

            n = torch.get_num_threads()
            want = min(n, torch_threads_for_jobs())
            if want != n:
                _tune_saved["threads"] = n
                torch.set_num_threads(want)


def _leave_job_tuning() -> None:
    """Worker thread, job end: the last job to end restores what the first one changed."""
    global _tune_depth
    with _tune_lock:
        _tune_depth = max(0, _tune_depth - 1)
        if _tune_depth:
            return
        if "threads" in _tune_saved:
            import torch

            torch.set_num_threads(_tune_saved.pop("threads"))
