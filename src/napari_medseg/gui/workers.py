"""The one place that starts threads: core generators in napari thread workers.

A :class:`JobRunner` (one per widget) runs a core engine generator (training,
segmentation) in a napari ``thread_worker`` and calls the widget back in the
GUI thread. Rules it enforces:

- One job at a time per runner; a second start is refused with a notification.
- Every exception raised inside the generator -- ``RuntimeError`` (a torch
  out-of-memory) included -- reaches the widget as a napari error
  notification and through ``on_error``; the runner is ready again afterwards.
  The generator is wrapped so that it never raises: superqt's GeneratorWorker
  treats a ``RuntimeError`` as "the worker was deleted", warns and never
  emits ``errored`` nor ``finished``, which would leave a widget stuck.
- Stop is a flag the engine polls (``should_stop``: training keeps the best
  model); cancel closes the generator between events; pause / resume use the
  worker's own pause between events. Each job has a :class:`PauseClock` that
  stands still while the job is paused; a factory started with
  ``with_clock=True`` receives it, so that a time budget (``fit(clock=...)``)
  and its ETAs do not count the minutes the user kept the job paused.
- High-rate events (``StepDone``, ``Progress``) are thinned to at most one per
  ``min_interval_s`` so a fast GPU cannot flood the GUI thread with signals.
- Closing the viewer, the widget, or the widget's dock panel (napari's X only takes
  the widget out of its dock: it is not deleted) stops the job and waits for the
  thread; a paused job is resumed into its cancel, so its generators are closed
  and their ``finally`` blocks run.
- The first ``torch.optim`` step imports ``torch._dynamo`` (~1 s holding the
  interpreter); it is done once, inside the worker thread, before the job.
- While jobs run, the latency measures of :mod:`napari_medseg.gui.job_tuning`
  are in effect (fewer torch threads, a still activity indicator).
"""

from __future__ import annotations

import threading
import time
import traceback
import weakref
from collections.abc import Callable, Generator
from typing import Any

from napari.utils.notifications import show_error, show_info

from napari_medseg.gui.job_tuning import _enter_job_tuning, _leave_job_tuning
from napari_medseg.gui.job_types import GenFactory, JobCancelled, JobDone, JobFailed, PauseClock

_warm_lock = threading.Lock()
_warmed = False


def warm_torch() -> None:
    """Import what the first optimiser step imports (``torch._dynamo``), once per process.

    Called from the worker thread so the import does not happen on the GUI thread.
    """
    global _warmed
    with _warm_lock:
        if _warmed:
            return
        import torch

        p = torch.zeros(1, requires_grad=True)
        opt = torch.optim.AdamW([p], lr=0.0)
        p.grad = torch.zeros(1)
        opt.step()
        _warmed = True


_prewarm_thread: threading.Thread | None = None


def prewarm_torch() -> None:
    """Start :func:`warm_torch` in a background thread now (e.g. when a widget opens).

    The import holds the interpreter for ~1 s in bursts; done while the user is still
    choosing layers, it no longer stalls the viewer when Train is pressed (the job then
    finds it done, or waits for it in its own thread).
    """
    global _prewarm_thread
    if _warmed or _prewarm_thread is not None:
        return
    _prewarm_thread = threading.Thread(target=warm_torch, name="medseg-warm-torch", daemon=True)
    _prewarm_thread.start()


def _is_high_rate(ev: Any) -> bool:
    from napari_medseg.core.events import Progress, StepDone

    if isinstance(ev, Progress):
        return ev.done < ev.total
    return isinstance(ev, StepDone)


class Job:
    """A core generator running in a napari thread worker (see :class:`JobRunner`)."""

    def __init__(self, name: str, factory: GenFactory, *, warm: bool, min_interval_s: float,
                 with_clock: bool = False) -> None:
        self.name = name
        self._factory = factory
        self._warm = warm
        self._min_interval = min_interval_s
        self._with_clock = with_clock
        #: Stands still while the job is paused (see :class:`PauseClock`).
        self.clock = PauseClock()
        self._pausing = False  # GUI thread: a pause was asked for and not resumed yet
        self._pause_epoch = 0  # GUI thread: counts pause requests
        self._stop = threading.Event()
        self._cancel = threading.Event()
        self._done = threading.Event()
        self.worker: Any = None
        self.started_at = time.perf_counter()

    # -- called from the worker thread
    def should_stop(self) -> bool:
        return self._stop.is_set() or self._cancel.is_set()

    def _run(self) -> Generator[Any, Any, Any]:
        import sys

        try:
            _enter_job_tuning(self._warm or "torch" in sys.modules)
            if self._warm:
                warm_torch()
            gen = (self._factory(self.should_stop, self.clock) if self._with_clock
                   else self._factory(self.should_stop))
            last = 0.0
            try:
                while True:
                    ev = next(gen)
                    if self._cancel.is_set():
                        gen.close()
                        return JobCancelled()
                    now = time.perf_counter()
                    if _is_high_rate(ev) and now - last < self._min_interval and \
                            not self._pausing:  # a pause waits for the next yield: no thinning
                        continue
                    last = now
                    # The worker pauses here, between two events, while this generator is
                    # suspended: a suspension during which a pause was in effect (or was
                    # asked for) is paused time, taken off the job's clock.
                    pausing, epoch = self._pausing, self._pause_epoch
                    yield ev
                    if pausing or epoch != self._pause_epoch:
                        self.clock.exclude(time.perf_counter() - now)
                    if self._cancel.is_set():
                        gen.close()
                        return JobCancelled()
            except StopIteration as stop:
                return JobDone(stop.value)
        except Exception as exc:  # noqa: BLE001 - every failure must reach the widget
            return JobFailed(exc, traceback.format_exc())
        finally:
            _leave_job_tuning()
            self._done.set()

    # -- called from the GUI thread
    def request_stop(self) -> None:
        """Ask the engine to stop at its next check (training keeps the best model)."""
        self._stop.set()
        self.resume()

    def cancel(self) -> None:
        """Abandon the job: its generator is closed between two events."""
        self._cancel.set()
        self.resume()

    def pause(self) -> None:
        if self.worker is not None:
            self._pause_epoch += 1
            self._pausing = True
            self.worker.pause()

    def resume(self) -> None:
        self._pausing = False
        w = self.worker
        if w is None:
            return
        if getattr(w, "_pause_requested", False):  # a pause not yet taken effect
            w._pause_requested = False
        if w.is_paused:
            w.resume()

    @property
    def is_paused(self) -> bool:
        return self.worker is not None and bool(self.worker.is_paused)

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the generator has finished (True) or ``timeout`` passed (False)."""
        return self._done.wait(timeout)


class JobRunner:
    """Runs one job at a time for a widget and reports back in the GUI thread.

    Parameters
    ----------
    what : str
        Noun for messages ("training", "prediction").
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self.job: Job | None = None
        self._closed = False
        #: Weak references to callables run (GUI thread) by :meth:`shutdown`, e.g. to close
        #: progress bars; weak so the runner never keeps its widget alive.
        self.on_shutdown: list[Any] = []

    @property
    def busy(self) -> bool:
        return self.job is not None

    def start(self, factory: GenFactory, *, on_event: Callable[[Any], None] | None = None,
              on_done: Callable[[Any], None] | None = None,
              on_error: Callable[[BaseException], None] | None = None,
              on_cancelled: Callable[[], None] | None = None,
              on_finished: Callable[[], None] | None = None,
              on_paused: Callable[[bool], None] | None = None,
              warm: bool = True, min_interval_s: float = 0.05,
              with_clock: bool = False) -> Job | None:
        """Start ``factory(should_stop)`` in a worker thread; None (and a notice) when busy.

        With ``with_clock`` the factory is called as ``factory(should_stop, clock)``, the
        clock being the job's :class:`PauseClock` (stands still while paused).
        """
        from napari.qt.threading import create_worker

        if self._closed:
            return None
        if self.job is not None:
            self.notify_busy()
            return None
        job = Job(self.what, factory, warm=warm, min_interval_s=min_interval_s,
                  with_clock=with_clock)
        worker = create_worker(job._run, _start_thread=False)
        job.worker = worker
        self.job = job

        def returned(result: Any) -> None:
            if self._closed:  # the widget is going away: nothing to show
                return
            if isinstance(result, JobFailed):
                _report(self.what, result.error, on_error)
            elif isinstance(result, JobCancelled):
                if on_cancelled:
                    on_cancelled()
            elif isinstance(result, JobDone) and on_done:
                on_done(result.value)

        def errored(exc: BaseException) -> None:  # only a bug in the wrapper gets here
            if self._closed:
                return
            _report(self.what, exc, on_error)

        def finished() -> None:
            if self.job is job:
                self.job = None
            # Break the cycle worker -> signal connections (held in C++, invisible to the
            # garbage collector) -> these closures -> job -> worker, which would keep the
            # widget and its viewer alive forever.
            w, job.worker = job.worker, None
            if w is not None:
                for sig in (w.yielded, w.returned, w.errored, w.finished, w.aborted, w.paused,
                            w.resumed):
                    try:
                        sig.disconnect()
                    except (TypeError, RuntimeError):
                        pass
            if on_finished and not self._closed:
                on_finished()

        if on_event:
            worker.yielded.connect(lambda ev: None if self._closed else on_event(ev))
        worker.returned.connect(returned)
        worker.errored.connect(errored)
        worker.finished.connect(finished)
        worker.aborted.connect(finished)
        if on_paused:
            worker.paused.connect(lambda: None if self._closed else on_paused(True))
            worker.resumed.connect(lambda: None if self._closed else on_paused(False))
        worker.start()
        return job

    def notify_busy(self) -> None:
        """The polite refusal of a second job, as a napari notification."""
        show_info(f"A {self.what} job is already running; stop it or wait for it to finish "
                  "before starting another.")

    def cancel_job(self) -> None:
        """Cancel the running job, if any, without waiting; the runner stays usable.

        For a widget taken out of its dock: no one can see or stop that job any more.
        """
        if self.job is not None:
            self.job.cancel()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the running job (viewer or panel closing) and wait up to ``timeout`` seconds.

        Once only: a second call (the viewer's Close, then the widget's ``destroyed``)
        returns at once. The job is cancelled and, if paused, resumed: the worker sends
        it on, :meth:`Job._run` sees the cancel after its ``yield`` and closes the
        engine's generator (its ``finally`` blocks run). The worker's own ``quit`` is not
        used: superqt checks it before a pending resume, so a paused generator would
        stay suspended, never closed, and the wait would last the whole timeout.
        """
        if self._closed:
            return
        self._closed = True
        for ref in self.on_shutdown:
            cb = ref()
            if cb is None:
                continue
            try:
                cb()
            except Exception:  # noqa: BLE001 - shutting down: nothing more to show
                pass
        job = self.job
        if job is None:
            return
        job.cancel()  # sets the flag Job._run checks after each event, and resumes
        job.wait(timeout)


def _report(what: str, exc: BaseException, callback: Callable[[BaseException], None] | None
            ) -> None:
    msg = str(exc) or type(exc).__name__
    if isinstance(exc, RuntimeError) and "out of memory" in msg.lower():
        msg += " -- try a smaller patch or batch size, or the CPU."
    show_error(f"{what.capitalize()} failed: {msg}")
    if callback:
        callback(exc)


def stop_on_close(widget: Any, runner: JobRunner, viewer: Any = None) -> None:
    """Stop ``runner``'s job when the viewer's window closes, ``widget`` is taken out of
    its dock panel (the panel's X button), or ``widget`` is destroyed.

    The viewer's main window gets an event filter (its Close event arrives
    before the widgets are deleted); the widget's top-level window too, once
    it is shown (a widget docked in a viewer created elsewhere). The widget
    itself is watched for the parent change napari's dock close button makes
    (``setParent(None)``, the widget is not deleted: the running job's
    callbacks would keep it alive and training would run on unseen).
    """
    from qtpy.QtCore import QEvent, QObject
    from qtpy.QtWidgets import QApplication

    wref = weakref.ref(widget)  # no widget -> closure -> widget cycle: it would keep the viewer
    docked = [widget.parent() is not None]

    class _Watcher(QObject):
        def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 - Qt API
            kind = event.type()
            if kind == QEvent.Type.ParentChange and obj is wref():
                if obj.parent() is not None:
                    docked[0] = True
                elif docked[0]:  # taken out of its dock (napari's remove_dock_widget)
                    runner.cancel_job()  # not shutdown: docked again, the widget still works
            elif kind == QEvent.Type.Close:
                runner.shutdown()
            return False

    watcher = _Watcher(widget)
    widget.installEventFilter(watcher)
    installed: list[Any] = []  # weak references: a strong one would keep the viewer alive

    def install(win: Any) -> None:
        if win is not None and win is not wref() and all(r() is not win for r in installed):
            win.installEventFilter(watcher)
            installed.append(weakref.ref(win))

    qt_window = getattr(getattr(viewer, "window", None), "_qt_window", None)
    install(qt_window)

    def install_on_window() -> None:  # called from the widget's showEvent
        w = wref()
        if w is not None:
            install(w.window())

    widget._medseg_install_close_watcher = install_on_window
    widget.destroyed.connect(lambda *_: runner.shutdown())
    app = QApplication.instance()
    if app is not None:  # weakly: the application outlives viewers and must not keep them
        ref = weakref.ref(runner)
        app.aboutToQuit.connect(lambda: ref() is not None and ref().shutdown())
