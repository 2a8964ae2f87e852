"""Pause / Resume and the napari progress bar of a widget's training job.

Shared by the training and restoration widgets (the prediction widget uses the
progress-bar part, :class:`ProgressBarOwner`). The widget provides
``runner`` (a :class:`~napari_medseg.gui.workers.JobRunner`), ``pause_btn``,
``_pbar`` (a napari ``progress`` bar with ``total=``:data:`PBAR_TOTAL`, or None) and
``_say`` (its status line).
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
    """A widget whose job shows in a napari ``progress`` bar (``self._pbar``, total
    :data:`PBAR_TOTAL`, or None when no job runs)."""

    _pbar: Any

    def _set_progress(self, frac: float) -> None:
        pb = self._pbar
        if pb is None:
            return
        n = int(round(min(max(frac, 0.0), 1.0) * PBAR_TOTAL))
        if n > pb.n:
            pb.update(n - pb.n)

    def _close_pbar(self) -> None:
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None


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
