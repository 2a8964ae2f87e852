"""Qt event-loop latency of a real napari viewer while the widgets train and predict.

A probe re-arms a 10 ms single-shot ``QTimer`` (precise timer) over and over
in the GUI thread; each firing's *latency* is how late it came (actual minus
expected interval). A smooth viewer keeps it at a few ms; a GUI thread starved
by the worker (the GIL held by a long C call, more torch threads than cores,
a flood of signals, big copies when layers are added) shows up as late
firings. Phases, each with its own statistics:

* ``open``: the widgets are created and docked (the training widget warms
  torch up in the background then);
* ``idle``: the viewer with the volume, nothing running (the floor);
* ``train``: the real :class:`~napari_medseg.gui.train_widget.TrainWidget`
  trains on a realistic 3D volume (T1 + FLAIR, labels on every 4th slice,
  the widget's defaults: 2D UNet on whole slices, or ``--dims 3``), pressed
  Stop after ``--train-s`` seconds, until the worker has finished (the final
  validation and the model hand-over count);
* ``predict``: the real :class:`~napari_medseg.gui.predict_widget.PredictWidget`
  segments the whole volume by sliding window with that model, again and
  again for ``--predict-s`` seconds, output layers added each time (removing
  them between rounds is not measured).

A separate process runs the same 10 ms probe as a *control*: how late any
thread is woken on this machine at that time (other processes' load), printed
under each phase. ``--no-fixes`` (or ``--without threads|prewarm``)
measures without the latency measures of ``gui/job_tuning.py`` and
``gui/workers.py`` (prewarm) -- the "before".

The volume is the brain phantom at 96x96x64 (``--shape``), or with
``--brats`` the BraTS 2013 case ``pat0001`` from ``../shared/data`` cropped to
its brain (140x180x136).

``--diagnose`` adds a watchdog thread that, whenever the GUI thread is more
than 40 ms late, records what every thread was executing; the most frequent
places are printed per phase, and for each firing more than 100 ms late
where each thread was.

The last line reads ``gui latency p99_ms=<n> max_ms=<n>`` over the train
and predict phases. Goal: p99 <= 50 ms.

Usage::

    xvfb-run -a python benchmarks/gui_latency.py               # ~1.5 min on 2 cores
    xvfb-run -a python benchmarks/gui_latency.py --no-fixes    # the "before"
    xvfb-run -a python benchmarks/gui_latency.py --brats --dims 3 --diagnose
"""

from __future__ import annotations

import argparse
import collections
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
INTERVAL_MS = 10


class Probe:
    """Re-arms a single-shot timer; records how late each firing is (ms)."""

    def __init__(self) -> None:
        from qtpy.QtCore import Qt, QTimer

        self.timer = QTimer()
        self.timer.setSingleShot(True)
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.timeout.connect(self._fired)
        self.samples: dict[str, list[float]] = collections.defaultdict(list)
        self.phase = "idle"
        self.stalls: list[tuple[str, float, float]] = []
        self.beat = time.perf_counter()
        self._armed_at = 0.0

    def start(self) -> None:
        self._armed_at = time.perf_counter()
        self.timer.start(INTERVAL_MS)

    def _fired(self) -> None:
        now = time.perf_counter()
        late = max(0.0, (now - self._armed_at) * 1000 - INTERVAL_MS)
        self.samples[self.phase].append(late)
        if late > 100:
            self.stalls.append((self.phase, self.beat, late))
        self.beat = now
        self.start()


class Watchdog(threading.Thread):
    """Records all threads' stacks while the GUI thread is more than ``late_ms`` late."""

    def __init__(self, probe: Probe, late_ms: float = 40.0) -> None:
        super().__init__(daemon=True, name="latency-watchdog")
        self.probe, self.late = probe, late_ms / 1000
        self.main_id = threading.main_thread().ident
        self.where: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.running = True
        self.by_beat: dict[float, list[str]] = {}

    def run(self) -> None:
        seen_beat = None
        while self.running:
            time.sleep(0.005)
            beat = self.probe.beat
            if beat == seen_beat or time.perf_counter() - beat < self.late:
                continue
            seen_beat = beat  # one record per late firing
            for tid, frame in sys._current_frames().items():
                if tid == self.ident:
                    continue
                full = traceback.extract_stack(frame)
                who = "GUI" if tid == self.main_id else "worker"
                here = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}"
                                   for f in reversed(full[-3:]))
                self.where[self.probe.phase][f"{who}: {here}"] += 1
                if who == "GUI" or "status_checker" not in here:
                    self.by_beat.setdefault(beat, []).append(
                        f"{who}: " + " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}"
                                                 for f in reversed(full[-9:])))


CONTROL = r"""
import sys, time
end = time.perf_counter() + float(sys.argv[1])
with open(sys.argv[2], "w") as f:
    while time.perf_counter() < end:
        t = time.perf_counter()
        time.sleep(0.010)
        now = time.perf_counter()
        f.write(f"{now:.6f} {max(0.0, (now - t) * 1000 - 10):.3f}\n")
        f.flush()
"""


def start_control(seconds: float, path: str):
    """A separate process running the same kind of 10 ms probe: how late a thread that holds
    no GIL of ours is woken on this machine (other processes' load), for comparison."""
    import subprocess

    return subprocess.Popen([sys.executable, "-c", CONTROL, str(seconds), path])


def stats(vals: list[float]) -> tuple[float, float, float]:
    a = np.asarray(vals, dtype=float) if vals else np.zeros(1)
    return float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.max())


def volume(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple, str]:
    """(t1, flair, sparse labels, spacing, description)."""
    if args.brats:
        from napari_medseg.core import io

        case = DATA / "brats2013" / "pat0001"
        if not case.exists():
            sys.exit(f"--brats: {case} not found (the shared data lives in ../shared/data).")
        t1 = io.read_spatial(case / "t1c.nii.gz")
        flair = io.read_spatial(case / "flair.nii.gz").data.astype(np.float32)
        lab = io.read_spatial(case / "labels.nii.gz").data
        mask = io.read_spatial(case / "brainmask.nii.gz").data > 0
        box = tuple(slice(max(0, int(i.min()) - 2), int(i.max()) + 3) for i in np.nonzero(mask))
        img, flair, lab = t1.data.astype(np.float32)[box], flair[box], lab[box]
        lab = np.where(mask[box], 1, 0) + (lab > 0).astype(np.int32)  # 1 brain, 2 tumour
        sp = tuple(float(s) for s in t1.spacing[:3])
        desc = f"BraTS pat0001 cropped to {img.shape}"
    else:
        from napari_medseg.core.sample import brain_phantom

        ph = brain_phantom(shape=tuple(args.shape), seed=0, n_raters=0)
        img, flair, lab, sp = ph.t1, ph.flair, ph.labels.astype(np.int32), ph.spacing
        desc = f"brain phantom {img.shape}"
    sparse = np.zeros_like(lab, dtype=np.int32)
    sparse[..., ::4] = lab[..., ::4]  # a user labels every 4th axial slice
    return img, flair, sparse, sp, desc


PHASES = ("open", "idle", "train", "predict")
REPORTED = ("train", "predict")  # the last line's statistics


def run(args: argparse.Namespace) -> int:
    import tempfile

    import napari
    import torch
    from qtpy.QtWidgets import QApplication

    from napari_medseg.gui import job_tuning, workers

    off = set(args.without) | ({"threads", "prewarm"} if args.no_fixes else set())
    if "threads" in off:
        job_tuning.TORCH_RESERVED_CORES = 0
    if "prewarm" in off:
        workers.prewarm_torch = lambda: None
    from napari_medseg.gui import train_widget

    train_widget.prewarm_torch = workers.prewarm_torch
    from napari_medseg.gui.predict_widget import PredictWidget
    from napari_medseg.gui.train_widget import TrainWidget

    t1, flair, sparse, sp, desc = volume(args)
    viewer = napari.Viewer(title="gui latency", show=True)
    viewer.window._qt_window.resize(1400, 900)
    viewer.add_image(t1, name="T1", scale=sp)
    viewer.add_image(flair, name="FLAIR", scale=sp, visible=False)
    viewer.add_labels(sparse, name="labels", scale=sp, opacity=0.5)
    viewer.dims.order = (2, 0, 1)
    app = QApplication.instance()

    def pump(seconds: float, until=lambda: False) -> None:
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end and not until():
            app.processEvents()
            time.sleep(0.001)

    pump(1.0)  # first paint
    probe = Probe()
    ctl_path = tempfile.mktemp(suffix=".txt", prefix="gui_latency_control_")
    control = start_control(args.idle_s + args.train_s + args.predict_s + 1200, ctl_path)
    bounds: dict[str, list[float]] = {}
    dog = Watchdog(probe) if args.diagnose else None
    probe.start()
    if dog:
        dog.start()

    def phase(name: str) -> None:
        app.processEvents()  # a firing made late by the old phase counts for the old phase
        now = time.perf_counter()
        if probe.phase in bounds:
            bounds[probe.phase].append(now)
        probe.phase = name
        bounds.setdefault(name, [now])

    # -- open: the widgets are created and docked (and warm torch up in the background)
    phase("open")
    train = TrainWidget(viewer)
    predict = PredictWidget(viewer)
    viewer.window.add_dock_widget(train, area="right", name="train")
    viewer.window.add_dock_widget(predict, area="right", name="predict", tabify=True)
    pump(60, until=lambda: workers._warmed or workers._prewarm_thread is None)
    pump(0.5)
    print(f"volume: {desc}, spacing {sp}; torch {torch.__version__}, "
          f"{job_tuning.usable_cores()} CPU(s), torch threads {torch.get_num_threads()} "
          f"(jobs: {job_tuning.torch_threads_for_jobs() if 'threads' not in off else 'same'}); "
          f"measures off: {sorted(off) or 'none'}", flush=True)
    phase("idle")
    pump(args.idle_s)

    # -- train: the widget's defaults, on whole slices; Stop after train_s seconds
    train.set_channels(["T1", "FLAIR"])
    train.labels_combo.setCurrentText("labels")
    train.axis_combo.setCurrentIndex(2)
    if args.dims == 3:
        train.dims_combo.setCurrentText("3D")
    train.limit_combo.setCurrentText("epochs")
    train.limit_spin.setValue(1000)
    train.steps_spin.setValue(args.steps)
    train.device_combo.setCurrentText(args.device)
    phase("train")
    t0 = time.perf_counter()
    if not train.start_training():
        print(f"training refused: {train.status.text()}", flush=True)
        return 1
    pump(args.train_s, until=lambda: not train.runner.busy)
    train.stop()
    pump(600, until=lambda: not train.runner.busy)
    t_train = time.perf_counter() - t0
    if train.current is None:
        print(f"training produced no model: {train.status.text()}", flush=True)
        return 1
    steps = train.last_result.steps
    print(f"train: {t_train:.1f} s, {steps} steps ({steps / t_train:.2f}/s), patch "
          f"{train.patch_edit.text()}, batch {train.batch_spin.value()}; {train.status.text()}",
          flush=True)

    # -- predict: the whole volume, again and again; the output layers are removed between
    # rounds (not measured: napari's own cost, not the widget's)
    n_pred, busy_s = 0, 0.0
    while n_pred == 0 or busy_s < args.predict_s:
        phase("predict")
        t0 = time.perf_counter()
        if not predict.predict():
            print(f"prediction refused: {predict.status.text()}", flush=True)
            return 1
        pump(600, until=lambda: not predict.runner.busy and not predict.adding)
        busy_s += time.perf_counter() - t0
        n_pred += 1
        phase("cleanup")
        for layer in predict.last_layers:
            viewer.layers.remove(layer)
    print(f"predict: {n_pred} whole-volume prediction(s), {busy_s / n_pred:.1f} s each; "
          f"{predict.status.text()}", flush=True)
    phase("done")
    probe.timer.stop()
    if dog:
        dog.running = False
    control.terminate()
    control.wait()
    lines = [ln.split() for ln in Path(ctl_path).read_text().splitlines()]
    Path(ctl_path).unlink()
    ctl = np.array([[float(a), float(b)] for a, b in (x for x in lines if len(x) == 2)]
                   or np.zeros((0, 2)))

    def in_phase(times: np.ndarray, name: str) -> np.ndarray:
        b = bounds[name]
        m = np.zeros(len(times), bool)
        for lo, hi in zip(b[0::2], b[1::2]):
            m |= (times >= lo) & (times <= hi)
        return m

    for name in PHASES:
        vals = probe.samples[name]
        p50, p99, mx = stats(vals)
        late = sum(v > 50 for v in vals)
        b = bounds[name]
        dur = sum(hi - lo for lo, hi in zip(b[0::2], b[1::2]))
        print(f"{name:8s} n={len(vals):6d} p50_ms={p50:.1f} p99_ms={p99:.1f} max_ms={mx:.1f} "
              f"late>50ms={late} ({dur:.1f} s)", flush=True)
        c = ctl[in_phase(ctl[:, 0], name), 1] if len(ctl) else np.zeros(0)
        if len(c):
            cp50, cp99, cmx = stats(list(c))
            print(f"         control, another process: p50_ms={cp50:.1f} p99_ms={cp99:.1f} "
                  f"max_ms={cmx:.1f}", flush=True)
        if dog and dog.where[name]:
            for where, n in dog.where[name].most_common(args.diagnose_top):
                print(f"    {n:4d}x {where}", flush=True)
    if dog:
        for name, beat, late in probe.stalls:
            if name not in PHASES:
                continue
            print(f"stall in {name} at +{beat - bounds[name][0]:.1f} s: {late:.0f} ms", flush=True)
            for line in dog.by_beat.get(beat, ["(no thread could be sampled: the interpreter "
                                               "or the CPU was not available)"]):
                print(f"    {line}", flush=True)
    both = [v for name in REPORTED for v in probe.samples[name]]
    _, p99, mx = stats(both)
    viewer.close()
    print(f"gui latency p99_ms={p99:.1f} max_ms={mx:.1f}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(96, 96, 64))
    ap.add_argument("--brats", action="store_true", help="BraTS pat0001 cropped, not the phantom")
    ap.add_argument("--dims", type=int, choices=(2, 3), default=2, help="model: 2D or 3D UNet")
    ap.add_argument("--steps", type=int, default=10, help="steps per epoch (validation after each)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--idle-s", type=float, default=3.0)
    ap.add_argument("--train-s", type=float, default=40.0)
    ap.add_argument("--predict-s", type=float, default=15.0)
    ap.add_argument("--no-fixes", action="store_true",
                    help="measure without the latency measures of gui/job_tuning.py and "
                         "gui/workers.py (the 'before')")
    ap.add_argument("--without", action="append", default=[],
                    choices=("threads", "prewarm"),
                    help="leave out one measure: the core reserved for the GUI (torch threads), torch warmed up when the "
                         "training widget opens")
    ap.add_argument("--diagnose", action="store_true",
                    help="record what each thread runs while the GUI thread is late")
    ap.add_argument("--diagnose-top", type=int, default=6)
    args = ap.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
