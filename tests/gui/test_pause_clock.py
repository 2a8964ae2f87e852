"""The job clock stands still while a job is paused, so paused time does not eat a budget."""

from __future__ import annotations

import time

import numpy as np

from napari_medseg.gui.workers import JobRunner, PauseClock

PAUSE_S = 1.2


def test_pause_clock_excludes_paused_seconds():
    now = [100.0]
    clock = PauseClock(lambda: now[0])
    assert clock() == 100.0
    now[0] = 103.0
    clock.exclude(2.0)
    assert clock() == 101.0 and clock.paused_s == 2.0
    clock.exclude(-1.0)  # nothing negative
    now[0] = 104.0
    assert clock() == 102.0


def _ticks(should_stop, clock):
    """A job that reports (wall, clock) every 20 ms until stopped."""
    while not should_stop():
        time.sleep(0.02)
        yield (time.perf_counter(), clock())
    return "stopped"


def _largest_gap(pairs):
    pairs = np.asarray(pairs)
    i = int(np.argmax(np.diff(pairs[:, 0])))
    return float(pairs[i + 1, 0] - pairs[i, 0]), float(pairs[i + 1, 1] - pairs[i, 1])


def test_runner_clock_stands_still_while_paused(qtbot):
    runner = JobRunner("test job")
    seen, done = [], []
    job = runner.start(_ticks, on_event=seen.append, on_done=done.append, warm=False,
                       with_clock=True)
    assert job is not None
    qtbot.waitUntil(lambda: len(seen) >= 5, timeout=10000)
    job.pause()
    qtbot.waitUntil(lambda: job.is_paused, timeout=5000)
    qtbot.wait(int(PAUSE_S * 1000))
    job.resume()
    n = len(seen)
    qtbot.waitUntil(lambda: len(seen) >= n + 5, timeout=10000)
    job.request_stop()
    qtbot.waitUntil(lambda: not runner.busy, timeout=10000)
    assert done == ["stopped"]
    wall_gap, clock_gap = _largest_gap(seen)
    assert wall_gap >= 0.9 * PAUSE_S  # the pause happened between two events (Qt timers
    # may fire up to 5% early)...
    assert clock_gap < 0.3, (wall_gap, clock_gap)  # ...and the clock did not count it
    assert job.clock.paused_s >= 0.9 * PAUSE_S
    wall = seen[-1][0] - seen[0][0]
    assert abs((seen[-1][1] - seen[0][1]) - (wall - job.clock.paused_s)) < 0.05


def test_runner_without_clock_keeps_the_one_argument_factory(qtbot):
    runner = JobRunner("test job")
    done = []

    def factory(should_stop):
        yield 1
        return 2

    assert runner.start(factory, on_done=done.append, warm=False) is not None
    qtbot.waitUntil(lambda: done == [2] and not runner.busy, timeout=10000)


def test_train_widget_passes_the_pause_clock_to_fit(make_napari_viewer, qtbot, monkeypatch):
    """Pause the real training widget: ``fit`` sees a clock that skipped the pause."""
    from napari_medseg.core import engine
    from napari_medseg.core.events import StepDone
    from napari_medseg.core.sample import brain_phantom
    from napari_medseg.gui import workers
    from napari_medseg.gui.train_widget import TrainWidget

    errors: list[str] = []
    monkeypatch.setattr(workers, "show_error", errors.append)
    seen: list[tuple[float, float]] = []
    clocks: list = []

    def fake_fit(*args, should_stop, clock, **kwargs):
        clocks.append(clock)
        t0, step = clock(), 0
        while not should_stop():
            time.sleep(0.02)
            step += 1
            seen.append((time.perf_counter(), clock()))
            yield StepDone(step, 1, 1.0, 1e-3, clock() - t0, None, None)
        raise RuntimeError("fake fit stopped")

    monkeypatch.setattr(engine, "fit", fake_fit)
    ph = brain_phantom(shape=(32, 32, 16), seed=0, n_raters=0)
    viewer = make_napari_viewer()
    viewer.add_image(ph.t1, name="T1")
    viewer.add_labels(ph.labels.astype(np.int32), name="tissue")
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w, name="train")
    w.set_channels(["T1"])
    w.labels_combo.setCurrentText("tissue")
    w.device_combo.setCurrentText("cpu")
    assert w.start_training(), w.status.text()
    qtbot.waitUntil(lambda: len(seen) >= 5, timeout=30000)
    assert clocks and clocks[0] is w.runner.job.clock
    w.toggle_pause()
    qtbot.waitUntil(lambda: w.pause_btn.text() == "Resume", timeout=10000)
    qtbot.wait(int(PAUSE_S * 1000))
    w.toggle_pause()
    n = len(seen)
    qtbot.waitUntil(lambda: len(seen) >= n + 5, timeout=10000)
    w.stop()
    qtbot.waitUntil(lambda: not w.runner.busy and w.train_btn.isEnabled(), timeout=10000)
    assert errors and "fake fit stopped" in errors[-1]
    wall_gap, clock_gap = _largest_gap(seen)
    assert wall_gap >= 0.9 * PAUSE_S and clock_gap < 0.3, (wall_gap, clock_gap)
