"""Closing a widget's dock panel, or the viewer while a job is paused, ends the job promptly
(pytest-qt, Xvfb). Kept small for two shared CPU cores: a 32x32x16 phantom, a width-4 UNet."""

from __future__ import annotations

import time

import numpy as np
import pytest
from qtpy.QtWidgets import QDockWidget, QWidget

from napari_medseg.core.sample import brain_phantom
from napari_medseg.gui.workers import JobRunner, stop_on_close

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def small():
    return brain_phantom(shape=(32, 32, 16), seed=0, n_raters=0)


def _dock_of(viewer, widget) -> QDockWidget:
    return next(d for d in viewer.window._qt_window.findChildren(QDockWidget)
                if d.widget() is widget)


def test_closing_the_dock_panel_stops_its_training(make_napari_viewer, qtbot, small):
    """napari's panel X only takes the widget out of its dock (``setParent(None)``): the
    widget is not deleted, yet its training must stop rather than run its whole budget."""
    from napari_medseg.gui.train_widget import TrainWidget

    viewer = make_napari_viewer()
    viewer.add_image(small.t1, name="T1", scale=small.spacing)
    viewer.add_labels(small.labels.astype(np.int32), name="tissue", scale=small.spacing)
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w, name="train")
    w.set_channels(["T1"])
    w.labels_combo.setCurrentText("tissue")
    w.axis_combo.setCurrentIndex(2)
    w.width_spin.setValue(4)
    w.limit_combo.setCurrentText("minutes")
    w.limit_spin.setValue(5)
    w.steps_spin.setValue(3)
    w.batch_spin.setValue(2)
    w.device_combo.setCurrentText("cpu")
    assert w.start_training(), w.status.text()
    job, runner = w.runner.job, w.runner
    qtbot.waitUntil(lambda: len(w.plot.loss) > 0, timeout=40000)

    dock = _dock_of(viewer, w)
    t0 = time.perf_counter()
    dock.title.close_button.click()  # the panel's X: QtViewerDockWidget.destroyOnClose
    assert w.parent() is None  # what napari's close does: the widget is only unparented
    assert job.wait(5), "the training went on after its panel was closed"
    qtbot.waitUntil(lambda: not runner.busy, timeout=5000)
    assert time.perf_counter() - t0 < 5

    # docked again (the same widget), it trains again: closing the panel cancelled the job,
    # it did not shut the widget down for good
    viewer.window.add_dock_widget(w, name="train again")
    w.limit_combo.setCurrentText("epochs")
    w.limit_spin.setValue(1)
    first = w.last_result
    assert w.start_training(), w.status.text()
    qtbot.waitUntil(lambda: w.last_result is not first and not runner.busy, timeout=60000)
    w.deleteLater()


def test_closing_the_viewer_while_paused_closes_the_job_promptly(make_napari_viewer, qtbot):
    """A paused job is resumed into its cancel: the viewer closes at once and the job's
    generator is closed (its ``finally`` runs); a second shutdown returns at once."""
    events: list[str] = []

    def factory(should_stop):
        try:
            while not should_stop():
                time.sleep(0.02)
                yield "tick"
        finally:
            events.append("finally")

    viewer = make_napari_viewer()
    holder = QWidget()
    runner = JobRunner("test job")
    stop_on_close(holder, runner, viewer)
    viewer.window.add_dock_widget(holder, name="holder")
    seen: list[str] = []
    job = runner.start(factory, on_event=seen.append, warm=False)
    assert job is not None
    qtbot.waitUntil(lambda: len(seen) >= 3, timeout=10000)
    job.pause()
    qtbot.waitUntil(lambda: job.is_paused, timeout=5000)

    t0 = time.perf_counter()
    viewer.close()
    dt = time.perf_counter() - t0
    assert dt < 3, f"closing the viewer blocked {dt:.1f} s"
    assert job.wait(0), "the paused job never finished"
    assert events == ["finally"]
    t0 = time.perf_counter()
    runner.shutdown()  # e.g. the widget's destroyed, after the viewer's Close
    assert time.perf_counter() - t0 < 0.1
