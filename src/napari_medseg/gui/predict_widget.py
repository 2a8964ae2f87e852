"""Prediction widget: a model + image layers -> labels, probability and uncertainty layers.

Prediction runs in a worker thread with a progress bar and Cancel. The
new layers never replace existing ones and sit exactly on the input (scale,
translate, affine). "Displayed slice" predicts only the slice under the
viewer's slider, for a fast preview.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_medseg.gui import layers as L
from napari_medseg.gui.channel_order import describe_order, order_for_model
from napari_medseg.gui.job_controls import ProgressBarOwner
from napari_medseg.gui.layer_list import CheckableLayerList
from napari_medseg.gui.model_store import ModelLoading, StoredModel, store_for
from napari_medseg.gui.workers import JobRunner, stop_on_close
from napari_medseg.gui.widget_base import InputError, MedsegWidget, device_combo

WHOLE, SLICE = "whole volume", "displayed slice (preview)"


@dataclass(frozen=True)
class PredictPlan:
    """What to predict: arrays in the worker, and how to paste the result back."""

    channels: list[np.ndarray]
    spacing: tuple[float, ...]
    like: L.LayerArray
    full_shape: tuple[int, ...]
    axis: int | None = None  # preview: slice axis in the full volume
    index: int | None = None  # preview: slice index
    take: int | None = None  # preview on a slab: which slab slice is the displayed one
    note: str = ""
    names: tuple[str, ...] = ()  # the layers, in channel order (named in error messages)


class PredictWidget(ModelLoading, ProgressBarOwner, MedsegWidget):
    """Dock widget: segment image layers with a trained or loaded model."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.store = store_for(napari_viewer)
        self.runner = JobRunner("prediction")
        stop_on_close(self, self.runner, napari_viewer)
        self.runner.on_shutdown.append(weakref.WeakMethod(self._close_pbar))
        self.runner.on_shutdown.append(weakref.WeakMethod(self._shutting_down))
        self._shut = False  # the viewer or widget is closing: add no more result layers
        self._pbar: Any = None
        self.last_layers: list[Any] = []
        #: True while result layers are being added (one per event-loop turn).
        self.adding = False
        self._build_ui()
        self.store.changed.connect(self._models_changed)
        ev = self.viewer.layers.events
        ev.inserted.connect(self._layers_changed)
        ev.removed.connect(self._layers_changed)
        ev.reordered.connect(self._layers_changed)  # the list order is the channel order
        self._rename_watch = L.LayerNameWatch(self.viewer, self._layer_renamed)
        self._models_changed()
        self._layers_changed()

    def _build_ui(self) -> None:
        lay = QVBoxLayout(self)
        form = QFormLayout()
        row = QHBoxLayout()
        self.model_combo = QComboBox()
        self.model_combo.currentIndexChanged.connect(lambda *_: self._model_selected())
        self.load_btn = QPushButton("Load…")
        self.load_btn.clicked.connect(lambda: self.load_model())
        row.addWidget(self.model_combo, 1)
        row.addWidget(self.load_btn)
        form.addRow("Model", row)
        self.model_label = QLabel("")
        self.model_label.setWordWrap(True)
        form.addRow(self.model_label)
        self.channel_list = CheckableLayerList(max_height=90)
        form.addRow("Channels", self.channel_list)
        self.mode_combo = QComboBox()
        self.mode_combo.addItems([WHOLE, SLICE])
        form.addRow("Predict", self.mode_combo)
        self.tta_check = QCheckBox("test-time augmentation (mirroring: 4-8x slower)")
        # On, as in `napari-medseg predict`: one model gives the same labels in both.
        self.tta_check.setChecked(True)
        self.tta_check.setToolTip("The mean of the predictions of every mirroring of the input "
                                  "(4 in 2D, 8 in 3D). Untick for a quick look.")
        form.addRow(self.tta_check)
        self.device_combo = device_combo()
        form.addRow("Device", self.device_combo)
        lay.addLayout(form)
        b = QHBoxLayout()
        self.predict_btn = QPushButton("Predict")
        self.cancel_btn = QPushButton("Cancel")
        self.predict_btn.clicked.connect(lambda: self.predict())
        self.cancel_btn.clicked.connect(self.cancel)
        b.addWidget(self.predict_btn)
        b.addWidget(self.cancel_btn)
        lay.addLayout(b)
        self.add_status(lay)
        lay.addStretch(1)
        self._set_running(False)

    def _set_running(self, running: bool) -> None:
        self.predict_btn.setEnabled(not running)
        self.cancel_btn.setEnabled(running)
        self.load_btn.setEnabled(not running)

    # ------------------------------------------------------------ models / layers
    def _models_changed(self) -> None:
        names = list(self.store.models)
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        self.model_combo.addItems(names)
        if names:
            self.model_combo.setCurrentIndex(len(names) - 1)  # the newest
        self.model_combo.blockSignals(False)
        self._model_selected()

    def selected_model(self) -> StoredModel | None:
        return self.store.models.get(self.model_combo.currentText())

    def _model_selected(self) -> None:
        m = self.selected_model()
        self.model_label.setText(m.checkpoint.describe() if m else
                                 "No model: train one in the training widget, or Load… a file.")
        if m is not None:
            self._check_defaults(m)

    def _check_defaults(self, m: StoredModel) -> None:
        """Check the layers named like the model's channels, else the first ones."""
        want = list(m.checkpoint.channel_names)
        n = m.checkpoint.model_config.in_channels
        names = self.channel_list.names()
        pick = want if want and all(w in names for w in want) else names[:n]
        self.channel_list.check_only(pick)

    def _layer_renamed(self, old: str, new: str) -> None:
        L.rename_in_pickers([self.channel_list], old, new)
        order = getattr(self, "_order", None)
        if order:
            self._order = [new if n == old else n for n in order]
        self._layers_changed()

    def _layers_changed(self, *_: Any) -> None:
        checked = set(self.checked_channels())
        names = [lay.name for lay in L.image_layers(self.viewer, inputs_only=True)]
        self.channel_list.refill(names, checked)
        m = self.selected_model()
        if m is not None and not checked:
            self._check_defaults(m)

    def checked_channels(self) -> list[str]:
        """The checked Image layers, in the list's order."""
        return self.channel_list.checked()

    def set_channels(self, names: list[str]) -> None:
        """Check these layers as input channels, in the model's channel order."""
        self.channel_list.check_only(names)
        self._order = list(names)

    # ------------------------------------------------------------ predict
    def plan(self, m: StoredModel, mode: str) -> PredictPlan:
        """Check the inputs against the model; raise :class:`InputError` with the reason."""
        ck = m.checkpoint
        names = self.checked_channels()
        names, _ = order_for_model(ck.channel_names, names, getattr(self, "_order", None))
        n = ck.model_config.in_channels
        if len(names) != n:
            want = f" ({', '.join(ck.channel_names)})" if ck.channel_names else ""
            raise InputError(f"The model expects {n} channel(s){want}; {len(names)} checked."
                             + (L.rgb_note(self.viewer) if not names else ""))
        chans = [L.layer_to_array(L.get_layer(self.viewer, x)) for x in names]
        for c in chans[1:]:
            problem = L.grid_problem(chans[0], c, "Channels")
            if problem:
                raise InputError(problem)
        nd = chans[0].data.ndim
        if nd not in (2, 3):
            raise InputError(f"'{chans[0].name}' is {nd}D; only 2D and 3D images.")
        dims = ck.model_config.spatial_dims
        if dims == 3 and nd == 2:
            raise InputError(f"'{m.name}' is a 3D model; '{chans[0].name}' is a 2D image. Use "
                             "a 2D model for 2D images.")
        like = chans[0]
        arrays = [c.data for c in chans]
        note = ""
        if n > 1 or (ck.channel_names and names != list(ck.channel_names)):
            # the order, or a stand-in for the channel the model learnt, is easy to miss
            note = describe_order(ck.channel_names, names)
        if dims == 2 and nd == 3:
            note += (f"{' ' if note else ''}2D model on a 3D volume: slice by slice along axis "
                     f"{ck.train_config.slice_axis}.")
        if mode != SLICE or nd == 2:
            return PredictPlan(arrays, like.spacing, like, like.shape, note=note,
                               names=tuple(names))
        layer = L.get_layer(self.viewer, names[0])
        if dims == 2:
            axis = ck.train_config.slice_axis
            idx = L.displayed_index(self.viewer, layer, axis)
            sl = [a.take(idx, axis=axis) for a in arrays]
            sp = tuple(s for i, s in enumerate(like.spacing) if i != axis)
            shown = L.slider_axis(self.viewer, layer)
            note = (f"Preview of slice {idx} along axis {axis}"
                    + ("" if shown in (axis, None) else
                       f" (the model's slice axis; the viewer shows axis {shown})") + ".")
            return PredictPlan(sl, sp, like, like.shape, axis, idx, None, note, tuple(names))
        axis = L.slider_axis(self.viewer, layer)
        axis = 2 if axis is None else axis
        idx = L.displayed_index(self.viewer, layer, axis)
        half = max(1, ck.train_config.patch_size[axis] // 2)
        lo, hi = max(0, idx - half), min(like.shape[axis], idx + half + 1)
        sl = [np.take(a, np.arange(lo, hi), axis=axis) for a in arrays]
        return PredictPlan(sl, like.spacing, like, like.shape, axis, idx, idx - lo,
                           f"{note} Preview of slice {idx} along axis {axis}.".lstrip(),
                           tuple(names))

    def predict(self, mode: str | None = None) -> bool:
        """Start a prediction in a worker; False (with a message in the widget) when refused."""
        if self.runner.busy:
            self._say("A prediction is already running: cancel it or wait.")
            self.runner.notify_busy()
            return False
        m = self.selected_model()
        if m is None:
            self._say("No model: train one in the training widget, or Load… a model file.",
                      error=True)
            return False
        mode = mode or self.mode_combo.currentText()
        try:
            plan = self.plan(m, mode)
        except InputError as exc:
            self._say(str(exc), error=True)
            return False
        ck = m.checkpoint
        device = self.device_combo.currentText()
        tta = self.tta_check.isChecked()

        def factory(should_stop: Any) -> Any:
            from napari_medseg.core.pipeline import segment

            return segment(ck, plan.channels, plan.spacing, model=m.network(), device=device,
                           tta=tta, channel_names=list(plan.names) or None)

        self._open_pbar("predicting")
        job = self.runner.start(factory, on_event=self._on_event,
                                on_done=lambda seg: self._on_done(seg, plan, m),
                                on_error=lambda e: self._say(f"Prediction failed: {e}",
                                                             error=True),
                                on_cancelled=lambda: self._say("Prediction cancelled."),
                                on_finished=self._on_finished, warm=False)
        if job is None:
            self._close_pbar()
            return False
        self._set_running(True)
        self._say(((plan.note + " ") if plan.note else "") + "Predicting…")
        return True

    def cancel(self) -> None:
        if self.runner.job is not None:
            self.runner.job.cancel()
            self._say("Cancelling…")

    def _on_event(self, ev: Any) -> None:
        from napari_medseg.core.events import Progress

        pb = self._pbar
        if isinstance(ev, Progress) and pb is not None:
            eta = f", about {ev.eta_s:.0f}s left" if ev.eta_s is not None else ""
            self._pbar_text(f"predicting {ev.done}/{ev.total}{eta}")
            self._set_progress(ev.fraction)

    def _on_finished(self) -> None:
        self._close_pbar()
        self._set_running(False)

    def _on_done(self, seg: Any, plan: PredictPlan, m: StoredModel) -> None:
        labels, probs, ent = seg.labels, seg.probabilities, seg.entropy
        pmax = probs.max(axis=0) if probs.shape[0] > 1 else np.maximum(probs[0], 1 - probs[0])
        if plan.axis is not None:
            labels, pmax, ent = (self._embed(a, plan) for a in (labels, pmax, ent))
        suffix = "" if plan.axis is None else f" preview (axis {plan.axis}, slice {plan.index})"
        base = plan.like.name
        classes = {int(v): f"label {v}" for v in m.checkpoint.mapping.values}
        meta = {"model": m.name, "classes": classes}
        ncls = probs.shape[0]
        makers = [
            lambda: L.add_array(self.viewer, labels, plan.like, f"{base} prediction{suffix}",
                                kind="labels", opacity=0.5, metadata=meta),
            lambda: L.add_array(self.viewer, pmax.astype(np.float32), plan.like,
                                f"{base} probability{suffix}", colormap="viridis",
                                contrast_limits=(0.0, 1.0), visible=False,
                                metadata={"model": m.name}),
            lambda: L.add_array(self.viewer, ent.astype(np.float32), plan.like,
                                f"{base} uncertainty{suffix}", colormap="magma",
                                contrast_limits=(0.0, max(float(np.log(max(ncls, 2))), 1e-3)),
                                visible=False, opacity=0.7, metadata={"model": m.name}),
        ]
        # One layer per event-loop turn: adding a layer costs napari 0.3-0.9 s on software GL,
        # three at once froze the viewer for up to ~1 s (benchmarks/gui_latency.py).
        self.adding = True
        self._add_layers(makers, [], labels)

    def _shutting_down(self) -> None:
        self._shut = True

    def _add_layers(self, makers: list[Any], done: list[Any], labels: np.ndarray) -> None:
        from qtpy.QtCore import QTimer

        if self._shut:  # the viewer closed between two layers: nothing to add them to
            self.adding = False
            return
        try:
            done.append(makers.pop(0)())
        except Exception as exc:  # noqa: BLE001 - e.g. the viewer closed meanwhile: say so
            self.adding = False
            self._say(f"Could not add the result layers: {exc}", error=True)
            return
        if makers:
            QTimer.singleShot(0, lambda: self._add_layers(makers, done, labels))
            return
        self.adding = False
        self.last_layers = done
        vals = sorted(int(v) for v in np.unique(labels))
        self._say(f"Added '{done[0].name}' (label values {vals}), its probability and "
                  "uncertainty (entropy) layers.")
        self.viewer.layers.selection.active = done[0]

    @staticmethod
    def _embed(arr: np.ndarray, plan: PredictPlan) -> np.ndarray:
        """Paste a predicted slice (or the displayed slice of a slab) into a full-size volume."""
        if plan.take is not None:
            arr = np.take(arr, plan.take, axis=plan.axis)
        full = np.zeros(plan.full_shape, arr.dtype)
        idx: list[Any] = [slice(None)] * len(plan.full_shape)
        idx[plan.axis] = plan.index  # type: ignore[index]
        full[tuple(idx)] = arr
        return full
