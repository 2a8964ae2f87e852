"""Pause / Resume and the progress bar of a widget's job.

Shared by the training and restoration widgets (the prediction widget uses the
progress-bar part, :class:`ProgressBarOwner`). The widget provides
``runner`` (a :class:`~napari_medseg.gui.workers.JobRunner`), ``pause_btn``,
``progress_bar`` (its own ``QProgressBar``, made by
:meth:`~napari_medseg.gui.widget_base.MedsegWidget.add_status`) and ``_say`` (its
status line).

The bar is the widget's own, above its status line, rather than napari's ``progress``:
napari's sits in the Activity panel, collapsed by default, so users never saw it, and each
of its updates calls ``QApplication.processEvents()`` -- a whole-window repaint per
training step, which took a third of the GUI thread's time on fast steps
(``benchmarks/gui_latency.py``).
"""

from __future__ import annotations

from typing import Any

PBAR_TOTAL = 1000


def step_fraction(ev: Any) -> float:
    """Fraction of a training run done at a ``StepDone`` event: by steps of an epoch budget,
    or by time of a minutes budget (elapsed over elapsed + ETA), whichever is further."""
    frac = ev.step / ev.total_steps if ev.total_steps else 0.0
    if ev.eta_s is not None and ev.elapsed_s > 0:
        frac = max(frac, ev.elapsed_s / (ev.elapsed_s + ev.eta_s))
    return frac


class ProgressBarOwner:
    """A widget whose job shows in its progress bar: ``self._pbar`` is that bar while a
    job runs (range 0..:data:`PBAR_TOTAL`), None otherwise."""

    _pbar: Any
    progress_bar: Any

    def _open_pbar(self, desc: str) -> None:
        """Show the bar at 0, labelled ``desc``."""
        bar = self.progress_bar
        bar.setRange(0, PBAR_TOTAL)
        bar.setValue(0)
        bar.setFormat(f"{desc} %p%")
        bar.show()
        self._pbar = bar

    def _pbar_text(self, desc: str) -> None:
        if self._pbar is not None:
            self._pbar.setFormat(f"{desc} %p%")

    def _set_progress(self, frac: float) -> None:
        pb = self._pbar
        if pb is None:
            return
        n = int(round(min(max(frac, 0.0), 1.0) * PBAR_TOTAL))
        if n > pb.value():
            # QProgressBar.setValue repaints synchronously: with napari's OpenGL canvas in
            # the window that took ~20 ms of the GUI thread per call (software rendering).
            # With updates off it only records the value; turning them on again schedules
            # one ordinary repaint, merged with the status line's.
            pb.setUpdatesEnabled(False)
            pb.setValue(n)
            pb.setUpdatesEnabled(True)

    def _close_pbar(self) -> None:
        pb, self._pbar = self._pbar, None
        if pb is not None:
            try:
                pb.hide()
            except RuntimeError:  # the widget is already deleted (viewer closing)
                pass


class JobControls(ProgressBarOwner):
    """Pause / Resume button and progress-bar handling of a widget's training job."""

    runner: Any
    pause_btn: Any

    def toggle_pause(self) -> None:
        job = self.runner.job
        if job is None:
            return
        if job.is_paused:
            job.resume()
        else:
            job.pause()
            self.pause_btn.setText("Pausing…")

    def _on_paused(self, paused: bool) -> None:
        self.pause_btn.setText("Resume" if paused else "Pause")
        self._say("Paused. Resume to continue, Stop to keep the best model."  # type: ignore
                  if paused else "Resumed.")
