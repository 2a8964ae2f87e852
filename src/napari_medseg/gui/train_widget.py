"""Training widget: image layers + a labels layer -> a segmentation model, in a worker.

The user checks one or more Image layers as channels, picks the Labels layer
they painted, sees how much is labelled, and presses Train. Training runs in
a thread (:mod:`napari_medseg.gui.workers`); a live plot and a napari
progress bar follow it; Stop keeps the best model; Continue training starts
from the current model after the user corrected labels.
"""

from __future__ import annotations

import dataclasses
import weakref
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_medseg.gui import layers as L
from napari_medseg.gui.model_store import StoredModel, store_for
from napari_medseg.gui.workers import JobRunner, prewarm_torch, stop_on_close
from napari_medseg.gui.widget_base import MedsegWidget

UNLABELLED = -1


class InputError(ValueError):
    """Something the user can fix; shown in the widget, never as a traceback."""


@dataclass(frozen=True)
class LabelStats:
    """What is labelled: slices along ``axis`` and voxels per label value."""

    n_slices: int  # slices along the slice axis (1 for 2D)
    labelled_slices: int
    voxels: dict[int, int]  # label value -> labelled voxels (0: background)
    axis: int | None

    def text(self, names: dict[int, str] | None = None) -> str:
        names = names or {}
        if not self.voxels or not any(v > 0 for k, v in self.voxels.items() if k != 0):
            return "Nothing labelled yet."
        per = ", ".join(f"{names.get(k, k)}: {n:,}" for k, n in sorted(self.voxels.items()))
        head = (f"{self.labelled_slices} of {self.n_slices} slices (axis {self.axis}) labelled"
                if self.axis is not None else "2D image")
        return f"{head}; voxels per label: {per}"


def sparse_target(labels: np.ndarray, *, axis: int | None, background: bool) -> np.ndarray:
    """User labels -> training target: -1 on slices (along ``axis``) with no label at all.

    With ``background`` every 0 voxel is background; 2D images are taken as
    annotated everywhere.
    """
    lab = np.asarray(labels)
    if lab.size and (lab.max() > 32767 or lab.min() < -1):
        raise InputError(f"Label values must lie in 0..32767; found {lab.min()}..{lab.max()}.")
    t = lab.astype(np.int16)
    if background or lab.ndim != 3 or axis is None:
        return t
    other = tuple(a for a in range(lab.ndim) if a != axis)
    has = np.any(lab > 0, axis=other)
    idx: list[Any] = [slice(None)] * lab.ndim
    idx[axis] = ~has
    t[tuple(idx)] = UNLABELLED
    return t


def _value_counts(target: np.ndarray) -> dict[int, int]:
    """Voxels per label value >= 0 (a bincount: linear, unlike np.unique's sort, which
    froze the GUI thread for ~0.4 s when Train was pressed on a loaded machine)."""
    flat = target.reshape(-1)
    if flat.size == 0:
        return {}
    lo, hi = int(flat.min()), int(flat.max())
    if hi < 0:
        return {}
    if hi - lo >= (1 << 20):  # sparse huge values: sorting is the cheaper way
        vals, counts = np.unique(flat[flat >= 0], return_counts=True)
        return {int(v): int(c) for v, c in zip(vals, counts)}
    counts = np.bincount(np.subtract(flat, lo, dtype=np.int32), minlength=hi - lo + 1)
    return {int(i) + lo: int(counts[i]) for i in np.flatnonzero(counts) if int(i) + lo >= 0}


def label_stats(target: np.ndarray, axis: int | None) -> LabelStats:
    lab = target >= 0
    voxels = _value_counts(target)
    if target.ndim == 3 and axis is not None:
        other = tuple(a for a in range(3) if a != axis)
        per_slice = np.any(target > 0, axis=other) if np.any(target == UNLABELLED) \
            else np.any(lab, axis=other)
        n, done = target.shape[axis], int(per_slice.sum())
    else:
        n, done = 1, int(lab.any())
    return LabelStats(n, done, voxels, axis)


def default_patch(shape: tuple[int, ...], dims: int, axis: int | None) -> tuple[int, ...]:
    """Patch: the in-plane size (2D) up to 128, or up to 64 per axis (3D), multiples of 16."""
    if dims == 2:
        sizes = [n for a, n in enumerate(shape) if len(shape) == 2 or a != axis][:2]
        cap = 128
    else:
        sizes, cap = list(shape), 64
    out = []
    for n in sizes:
        p = min(cap, n)
        out.append((p // 16) * 16 if p >= 16 else p)
    return tuple(out)


def default_depth(patch: tuple[int, ...]) -> int:
    m = min(patch)
    return int(max(2, min(4, int(math.log2(max(m, 4) // 4)) + 1)))


@dataclass
class TrainInputs:
    channels: list[L.LayerArray]
    labels: L.LayerArray
    target: np.ndarray
    stats: LabelStats
    axis: int | None


class TrainWidget(MedsegWidget):
    """Dock widget: train a segmentation model from layers."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.store = store_for(napari_viewer)
        self.runner = JobRunner("training")
        stop_on_close(self, self.runner, napari_viewer)
        self.runner.on_shutdown.append(weakref.WeakMethod(self._close_pbar))
        self.current: StoredModel | None = None
        self.plot: Any = None
        self._plot_dock: Any = None
        self._pbar: Any = None
        self._continued = False
        self.last_result: Any = None
        self._build_ui()
        self._stats_timer = QTimer(self)
        self._stats_timer.setSingleShot(True)
        self._stats_timer.setInterval(300)
        self._stats_timer.timeout.connect(self.refresh_stats)
        ev = self.viewer.layers.events
        ev.inserted.connect(self._layers_changed)
        ev.removed.connect(self._layers_changed)
        ev.reordered.connect(self._layers_changed)
        self._watched: Any = None
        self._layers_changed()
        prewarm_torch()  # the first optimiser step's imports, off the GUI thread, ahead of time

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        lay = QVBoxLayout(self)
        data = QGroupBox("Data")
        form = QFormLayout(data)
        self.channel_list = QListWidget()
        self.channel_list.setMaximumHeight(90)
        self.channel_list.setToolTip("Image layers used as input channels, in this order.")
        self.channel_list.itemChanged.connect(lambda *_: self._settings_from_data())
        form.addRow("Channels", self.channel_list)
        self.labels_combo = QComboBox()
        self.labels_combo.currentIndexChanged.connect(lambda *_: self._labels_changed())
        form.addRow("Labels", self.labels_combo)
        self.axis_combo = QComboBox()
        self.axis_combo.addItems(["axis 0", "axis 1", "axis 2"])
        self.axis_combo.setToolTip("3D volumes: slices along this axis; a 2D model trains on them.")
        self.axis_combo.currentIndexChanged.connect(lambda *_: self._settings_from_data())
        form.addRow("Slices along", self.axis_combo)
        self.background_check = QCheckBox("unlabelled voxels are background")
        self.background_check.setToolTip(
            "Off: slices without any label are ignored (sparse annotation). On: every voxel "
            "with label 0 counts as background.")
        self.background_check.toggled.connect(lambda *_: self.refresh_stats())
        form.addRow(self.background_check)
        self.stats_label = QLabel("")
        self.stats_label.setWordWrap(True)
        self.stats_label.setMinimumHeight(5 * self.stats_label.fontMetrics().lineSpacing())
        self.stats_label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        form.addRow(self.stats_label)
        lay.addWidget(data)

        box = QGroupBox("Settings")
        f2 = QFormLayout(box)
        self.dims_combo = QComboBox()
        self.dims_combo.addItems(["2D", "3D"])
        self.dims_combo.currentIndexChanged.connect(lambda *_: self._patch_from_data())
        f2.addRow("Model", self.dims_combo)
        self.patch_edit = QLineEdit()
        self.patch_edit.setToolTip("Patch size in voxels, one value per axis (e.g. 128 128).")
        f2.addRow("Patch", self.patch_edit)
        self.width_spin = QSpinBox()
        self.width_spin.setRange(4, 128)
        self.width_spin.setValue(16)
        f2.addRow("Width", self.width_spin)
        self.loss_combo = QComboBox()
        self.loss_combo.addItems(["dice_ce", "dice", "ce"])
        f2.addRow("Loss", self.loss_combo)
        row = QHBoxLayout()
        self.limit_spin = QSpinBox()
        self.limit_spin.setRange(1, 100000)
        self.limit_spin.setValue(2)
        self.limit_combo = QComboBox()
        self.limit_combo.addItems(["minutes", "epochs"])
        row.addWidget(self.limit_spin)
        row.addWidget(self.limit_combo)
        f2.addRow("Train for", row)
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 10000)
        self.steps_spin.setValue(25)
        f2.addRow("Steps / epoch", self.steps_spin)
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, 256)
        self.batch_spin.setValue(8)
        f2.addRow("Batch", self.batch_spin)
        self.device_combo = QComboBox()
        from napari_medseg.core.engine import available_devices

        self.device_combo.addItems(available_devices())
        f2.addRow("Device", self.device_combo)
        lay.addWidget(box)

        b1 = QHBoxLayout()
        self.train_btn = QPushButton("Train")
        self.continue_btn = QPushButton("Continue training")
        self.continue_btn.setToolTip("Warm start from the current model, e.g. after correcting "
                                     "labels.")
        self.train_btn.clicked.connect(lambda: self.start_training(continue_=False))
        self.continue_btn.clicked.connect(lambda: self.start_training(continue_=True))
        b1.addWidget(self.train_btn)
        b1.addWidget(self.continue_btn)
        lay.addLayout(b1)
        b2 = QHBoxLayout()
        self.pause_btn = QPushButton("Pause")
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.setToolTip("Stop now and keep the best model so far.")
        self.pause_btn.clicked.connect(self.toggle_pause)
        self.stop_btn.clicked.connect(self.stop)
        b2.addWidget(self.pause_btn)
        b2.addWidget(self.stop_btn)
        lay.addLayout(b2)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.status)

        mbox = QGroupBox("Model")
        f3 = QVBoxLayout(mbox)
        self.model_label = QLabel("No model yet: train one or load a file.")
        self.model_label.setWordWrap(True)
        f3.addWidget(self.model_label)
        b3 = QHBoxLayout()
        self.save_btn = QPushButton("Save model…")
        self.load_btn = QPushButton("Load model…")
        self.save_btn.clicked.connect(lambda: self.save_model())
        self.load_btn.clicked.connect(lambda: self.load_model())
        b3.addWidget(self.save_btn)
        b3.addWidget(self.load_btn)
        f3.addLayout(b3)
        lay.addWidget(mbox)
        lay.addStretch(1)
        self._set_running(False)

    def _set_running(self, running: bool) -> None:
        self.train_btn.setEnabled(not running)
        self.continue_btn.setEnabled(not running and self.current is not None)
        self.pause_btn.setEnabled(running)
        self.stop_btn.setEnabled(running)
        self.load_btn.setEnabled(not running)
        self.save_btn.setEnabled(self.current is not None)
        if not running:
            self.pause_btn.setText("Pause")

    # ------------------------------------------------------------ layers
    def _layers_changed(self, *_: Any) -> None:
        checked = set(self.checked_channels())
        first = self.channel_list.count() == 0
        self.channel_list.blockSignals(True)
        self.channel_list.clear()
        for i, layer in enumerate(L.image_layers(self.viewer, inputs_only=True)):
            it = QListWidgetItem(layer.name)
            it.setFlags(it.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            on = layer.name in checked or (first and not checked and i == 0)
            it.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)
            self.channel_list.addItem(it)
        self.channel_list.blockSignals(False)
        current = self.labels_combo.currentText()
        names = [lay.name for lay in L.labels_layers(self.viewer)]
        self.labels_combo.blockSignals(True)
        self.labels_combo.clear()
        self.labels_combo.addItems(names)
        if current in names:
            self.labels_combo.setCurrentText(current)
        self.labels_combo.blockSignals(False)
        self._labels_changed()

    def set_channels(self, names: list[str]) -> None:
        """Check exactly these Image layers as channels (in the list's order)."""
        for i in range(self.channel_list.count()):
            it = self.channel_list.item(i)
            it.setCheckState(Qt.CheckState.Checked if it.text() in names
                             else Qt.CheckState.Unchecked)
        self._settings_from_data()

    def checked_channels(self) -> list[str]:
        out = []
        for i in range(self.channel_list.count()):
            it = self.channel_list.item(i)
            if it.checkState() == Qt.CheckState.Checked:
                out.append(it.text())
        return out

    def _labels_layer(self) -> Any:
        name = self.labels_combo.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def _labels_changed(self) -> None:
        layer = self._labels_layer()
        if self._watched is not None and self._watched is not layer:
            for evname in ("paint", "data", "set_data"):
                emitter = getattr(self._watched.events, evname, None)
                if emitter is not None:
                    emitter.disconnect(self._schedule_stats)
        if layer is not None and self._watched is not layer:
            for evname in ("paint", "set_data"):
                emitter = getattr(layer.events, evname, None)
                if emitter is not None:
                    emitter.connect(self._schedule_stats)
        self._watched = layer
        if layer is not None and layer.ndim == 3:
            ax = L.slider_axis(self.viewer, layer)
            self.axis_combo.blockSignals(True)
            self.axis_combo.setCurrentIndex(2 if ax is None else ax)
            self.axis_combo.blockSignals(False)
        self._settings_from_data()

    def _schedule_stats(self, *_: Any) -> None:
        self._stats_timer.start()

    def _axis(self, ndim: int) -> int | None:
        return self.axis_combo.currentIndex() if ndim == 3 else None

    def _class_names(self) -> dict[int, str]:
        layer = self._labels_layer()
        names = dict((layer.metadata or {}).get("classes", {})) if layer is not None else {}
        return {int(k): str(v) for k, v in names.items()}

    def refresh_stats(self) -> LabelStats | None:
        layer = self._labels_layer()
        if layer is None:
            self.stats_label.setText("Add a Labels layer and paint a few slices.")
            return None
        lab = L.layer_to_array(layer, copy=False).data
        if lab.ndim not in (2, 3):
            self.stats_label.setText(f"'{layer.name}' is {lab.ndim}D; only 2D and 3D layers.")
            return None
        try:
            target = sparse_target(lab, axis=self._axis(lab.ndim),
                                   background=self.background_check.isChecked())
        except InputError as exc:
            self.stats_label.setText(str(exc))
            return None
        st = label_stats(target, self._axis(lab.ndim))
        self.stats_label.setText(st.text(self._class_names()))
        return st

    def _settings_from_data(self) -> None:
        """Defaults derived from the data: 2D/3D, patch, batch."""
        layer = self._labels_layer()
        st = self.refresh_stats()
        if layer is None:
            return
        nd = layer.ndim
        self.axis_combo.setEnabled(nd == 3)
        from napari_medseg.core.engine import available_devices

        gpu = available_devices()[0] != "cpu"
        dense = st is not None and st.labelled_slices >= 0.9 * st.n_slices
        dims = 3 if (nd == 3 and gpu and dense and min(layer.data.shape) >= 32) else 2
        self.dims_combo.blockSignals(True)
        self.dims_combo.setCurrentIndex(dims - 2)
        self.dims_combo.blockSignals(False)
        self._patch_from_data()

    def _patch_from_data(self) -> None:
        layer = self._labels_layer()
        if layer is None:
            return
        dims = 2 + self.dims_combo.currentIndex()
        patch = default_patch(tuple(layer.data.shape), dims, self._axis(layer.ndim))
        self.patch_edit.setText(" ".join(str(p) for p in patch))
        self.batch_spin.setValue(8 if dims == 2 else 2)

    # ------------------------------------------------------------ inputs
    def collect_inputs(self) -> TrainInputs:
        """Read and check the chosen layers; raise :class:`InputError` with a clear reason."""
        names = self.checked_channels()
        if not names:
            raise InputError("Check at least one Image layer as an input channel.")
        lab_layer = self._labels_layer()
        if lab_layer is None:
            raise InputError("No Labels layer: add one (layer list, 'new labels layer') and "
                             "paint a few slices of each structure.")
        chans = [L.layer_to_array(self.viewer.layers[n]) for n in names]
        for c in chans:
            if c.data.ndim not in (2, 3):
                raise InputError(f"'{c.name}' is {c.data.ndim}D {c.shape}; channels must be 2D "
                                 "or 3D single-channel images.")
        for c in chans[1:]:
            if c.shape != chans[0].shape:
                raise InputError(f"Channels '{chans[0].name}' {chans[0].shape} and '{c.name}' "
                                 f"{c.shape} differ in shape; all channels must share one grid "
                                 "(resample them).")
        lab = L.layer_to_array(lab_layer)
        if lab.shape != chans[0].shape:
            raise InputError(f"Image '{chans[0].name}' {chans[0].shape} and labels '{lab.name}' "
                             f"{lab.shape} differ in shape; paint labels on the image's grid.")
        axis = self._axis(lab.data.ndim)
        target = sparse_target(lab.data, axis=axis, background=self.background_check.isChecked())
        st = label_stats(target, axis)
        fg = {k: n for k, n in st.voxels.items() if k != 0 and n > 0}
        if not fg:
            raise InputError(f"'{lab.name}' has no labels: paint at least one structure "
                             "(label 1, 2, ...) on a few slices.")
        present = [k for k, n in st.voxels.items() if n > 0]
        if len(present) < 2:
            raise InputError(f"Only label value {present[0]} is labelled; a model needs at least "
                             "two classes. Leave some background unpainted in the labelled "
                             "slices, or tick 'unlabelled voxels are background'.")
        return TrainInputs(chans, lab, target, st, axis)

    def _configs(self, inp: TrainInputs, *, continue_from: StoredModel | None) -> tuple[Any, Any,
                                                                                       Any]:
        from napari_medseg.core.config import ModelConfig, TrainConfig
        from napari_medseg.core.data import LabelMapping

        nd = inp.target.ndim
        limit = self.limit_spin.value()
        minutes = float(limit) if self.limit_combo.currentText() == "minutes" else None
        epochs = limit if minutes is None else None
        device = self.device_combo.currentText()
        if continue_from is not None:
            ck = continue_from.checkpoint
            mc, mapping = ck.model_config, ck.mapping
            if mc.in_channels != len(inp.channels):
                raise InputError(f"The current model takes {mc.in_channels} channel(s); "
                                 f"{len(inp.channels)} are checked.")
            unknown = sorted(set(inp.stats.voxels) - set(mapping.values))
            if unknown:
                raise InputError(f"Label value(s) {unknown} are new to the current model (it "
                                 f"knows {list(mapping.values)}); press Train for a new model.")
            if mc.spatial_dims == 3 and nd != 3:
                raise InputError("The current model is 3D; these layers are 2D.")
            tc = dataclasses.replace(ck.train_config, epochs=epochs, minutes=minutes, device=device,
                                     steps_per_epoch=self.steps_spin.value(),
                                     seed=ck.train_config.seed + 1,
                                     slice_axis=inp.axis if inp.axis is not None
                                     else ck.train_config.slice_axis)
            return mc, tc, mapping
        dims = 2 + self.dims_combo.currentIndex()
        if dims == 3 and nd != 3:
            raise InputError("A 3D model needs 3D layers; these are 2D. Choose Model: 2D.")
        try:
            patch = tuple(int(v) for v in self.patch_edit.text().replace(",", " ").split())
        except ValueError:
            patch = ()
        if len(patch) == 1:
            patch = patch * dims
        if len(patch) != dims or min(patch) < 4:
            raise InputError(f"Patch '{self.patch_edit.text()}' should be {dims} sizes >= 4, "
                             f"e.g. {' '.join(['64'] * dims)}.")
        mapping = LabelMapping.from_labels([inp.target])
        tc = TrainConfig(patch_size=patch, batch_size=self.batch_spin.value(),
                         loss=self.loss_combo.currentText(), epochs=epochs, minutes=minutes,
                         steps_per_epoch=self.steps_spin.value(), device=device,
                         slice_axis=inp.axis if inp.axis is not None else 2, lr=3e-3)
        mc = ModelConfig(spatial_dims=dims, in_channels=len(inp.channels),
                         out_channels=mapping.num_classes, base_width=self.width_spin.value(),
                         depth=default_depth(patch))
        return mc, tc, mapping

    # ------------------------------------------------------------ training
    def start_training(self, *, continue_: bool = False) -> bool:
        """Check inputs and start training in a worker; False (with a message) when refused."""
        if self.runner.busy:
            self._say("Training is already running: stop it first, or wait for it to finish.")
            self.runner.notify_busy()
            return False
        if continue_ and self.current is None:
            self._say("No current model to continue: train or load one first.", error=True)
            return False
        try:
            inp = self.collect_inputs()
            self.stats_label.setText(inp.stats.text(self._class_names()))
            mc, tc, mapping = self._configs(inp, continue_from=self.current if continue_ else None)
        except (InputError, ValueError) as exc:
            self._say(str(exc), error=True)
            return False
        init = dict(self.current.checkpoint.state_dict) if continue_ and self.current else None
        names = [c.name for c in inp.channels]
        channels = [c.data for c in inp.channels]
        spacing = inp.channels[0].spacing
        target = inp.target

        def factory(should_stop: Any, clock: Any) -> Any:
            return _train_job(channels, target, spacing, names, mc, tc, mapping, init, should_stop,
                              clock)

        self._continued = continue_
        self._ensure_plot()
        self.plot.class_names = self._class_names()
        self.plot.start_run(continued=continue_)
        from napari.utils import progress

        self._pbar = progress(total=1000, desc="training")
        job = self.runner.start(factory, on_event=self._on_event, on_done=self._on_done,
                                on_error=self._on_error, on_finished=self._on_finished,
                                on_paused=self._on_paused, with_clock=True)
        if job is None:
            self._close_pbar()
            return False
        what = "Continuing from the current model" if continue_ else "Training"
        limit = f"{tc.minutes:g} min" if tc.minutes else f"{tc.epochs} epochs"
        self._say(f"{what}: {mc.spatial_dims}D UNet, patch {tuple(tc.patch_size)}, "
                  f"{mapping.num_classes} classes, {limit} on {tc.device}…")
        self._set_running(True)
        return True

    def stop(self) -> None:
        job = self.runner.job
        if job is not None:
            job.request_stop()
            self._say("Stopping after this step; the best model so far is kept…")

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
        self._say("Paused. Resume to continue, Stop to keep the best model." if paused
                  else "Resumed.")

    def _ensure_plot(self) -> None:
        from napari_medseg.gui.plot import CurvePlot

        if self.plot is None:
            self.plot = CurvePlot()
        window = getattr(self.viewer, "window", None)
        if window is not None and self._plot_dock is None:
            try:
                self._plot_dock = window.add_dock_widget(self.plot, area="bottom",
                                                         name="medseg training curves")
            except Exception:  # noqa: BLE001 - a missing dock must not stop training
                self._plot_dock = None
        elif self._plot_dock is not None:
            self._plot_dock.setVisible(True)

    def _on_event(self, ev: Any) -> None:
        from napari_medseg.core.events import EpochDone, Message, Progress, StepDone, Validated

        if isinstance(ev, StepDone):
            if self.plot is not None:
                self.plot.add_loss(ev.step, ev.loss)
            frac = 0.0
            if ev.total_steps:
                frac = ev.step / ev.total_steps
            if ev.eta_s is not None and ev.elapsed_s > 0:
                frac = max(frac, ev.elapsed_s / (ev.elapsed_s + ev.eta_s))
            self._set_progress(frac)
            eta = f", about {_fmt_s(ev.eta_s)} left" if ev.eta_s is not None else ""
            paused = self.runner.job is not None and self.runner.job.is_paused
            if not paused and not (self.runner.job and self.runner.job.stop_requested):
                self._say(f"Epoch {ev.epoch}, step {ev.step}: loss {ev.loss:.3f}{eta}")
            pb = self._pbar
            if pb is not None:
                pb.set_description(f"training: epoch {ev.epoch}, loss {ev.loss:.3f}")
        elif isinstance(ev, Validated):
            if self.plot is not None:
                self.plot.add_dice(ev.step, ev.dice, ev.mean_dice)
            self._last_dice = ev.mean_dice
        elif isinstance(ev, EpochDone):
            pass
        elif isinstance(ev, Message):
            self._say(ev.text[:1].upper() + ev.text[1:])
        elif isinstance(ev, Progress):
            self._say(f"{ev.stage}…")

    def _set_progress(self, frac: float) -> None:
        pb = self._pbar
        if pb is None:
            return
        n = int(round(min(max(frac, 0.0), 1.0) * 1000))
        if n > pb.n:
            pb.update(n - pb.n)

    def _close_pbar(self) -> None:
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None

    def _on_done(self, res: Any) -> None:
        self.last_result = res
        dice = "n/a" if res.best_dice is None else f"{res.best_dice:.3f}"
        ck = res.checkpoint
        name = f"model {len(self.store.models) + 1} (Dice {dice})"
        entry = StoredModel(name, ck, res.model)
        self.store.add(entry)
        self.current = entry
        self._show_model(entry)
        how = "stopped" if res.stopped else "finished"
        self._say(f"Training {how} after {res.steps} steps; best validation Dice {dice}. "
                  f"'{entry.name}' is ready in the prediction widget.")

    def _on_error(self, exc: BaseException) -> None:
        self._say(f"Training failed: {exc}", error=True)

    def _on_finished(self) -> None:
        self._close_pbar()
        self._set_running(False)

    def _show_model(self, entry: StoredModel) -> None:
        ck = entry.checkpoint
        self.model_label.setText(f"{entry.name}: {ck.describe()}")
        self.model_label.setToolTip(f"trained with patch {tuple(ck.train_config.patch_size)}, "
                                    f"loss {ck.train_config.loss}, "
                                    f"{len(ck.history)} validation(s)")
        self._set_running(self.runner.busy)

    # ------------------------------------------------------------ files
    def save_model(self, path: str | None = None) -> str | None:
        from napari_medseg.core.checkpoint import save_checkpoint

        if self.current is None:
            self._say("No model to save: train or load one first.", error=True)
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save model", "model.pt",
                                                  "napari-medseg model (*.pt)")
            if not path:
                return None
        try:
            out = save_checkpoint(path, self.current.checkpoint)
        except OSError as exc:
            self._say(f"Could not save the model: {exc}", error=True)
            return None
        self.current.path = out
        self._say(f"Saved {out}")
        return out

    def load_model(self, path: str | None = None) -> StoredModel | None:
        try:
            entry = self.store.load_file(self, path)
        except (ValueError, FileNotFoundError) as exc:
            self._say(str(exc), error=True)
            return None
        if entry is None:
            return None
        self.current = entry
        self._show_model(entry)
        self._say(f"Loaded {path}. Continue training warm-starts from it.")
        return entry


def _train_job(channels: list[np.ndarray], target: np.ndarray, spacing: tuple[float, ...],
               names: list[str], mc: Any, tc: Any, mapping: Any, init: Any, should_stop: Any,
               clock: Any = None) -> Any:
    """Runs in the worker thread: prepare the case, then the core's fit generator.

    ``clock`` (the job's pause clock) stands still while the user has paused, so the
    ``minutes`` budget and the ETA count training time only.
    """
    from napari_medseg.core.data import fingerprint
    from napari_medseg.core.engine import fit
    from napari_medseg.core.events import Message
    from napari_medseg.core.pipeline import prepare_case

    yield Message("preparing the data")
    case, prep = prepare_case(channels, target, spacing, mapping=mapping, config=tc,
                              name="+".join(names), channel_names=names)
    res = yield from fit([case], model_config=mc, train_config=tc, mapping=mapping,
                         norms=prep.norms, init_state=init, should_stop=should_stop,
                         channel_names=names, fingerprints=[fingerprint(c) for c in channels],
                         **({} if clock is None else {"clock": clock}))
    return res


def _fmt_s(s: float) -> str:
    s = max(0, int(round(s)))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
