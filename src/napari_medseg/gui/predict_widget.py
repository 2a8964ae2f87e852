"""Prediction widget: a model + image layers -> labels, probability and uncertainty layers.

Prediction runs in a worker thread with a progress bar and Cancel. The
new layers never replace existing ones and sit exactly on the input (scale,
translate, affine). "Displayed slice" predicts only the slice under the
viewer's slider, for a fast preview: the image is prepared whole (intensity
normalisation, body crop, resampling) so the preview shows what "whole volume"
gives on that slice, and the model runs only on the windows the slice needs.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, replace
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

WHOLE, SLICE, WHOLE_IMAGE = "whole volume", "displayed slice (preview)", "whole image"


@dataclass(frozen=True)
class PredictPlan:
    """What to predict: arrays in the worker, and how to paste the result back."""

    channels: list[np.ndarray]
    spacing: tuple[float, ...]
    like: L.LayerArray
    full_shape: tuple[int, ...]
    axis: int | None = None  # preview: the axis of the displayed slice
    index: int | None = None  # preview: the displayed slice's index
    note: str = ""
    names: tuple[str, ...] = ()  # the layers, in channel order (named in error messages)
    slice_axis: int | None = None  # a 2D model on a 3D volume: the axis it slices along

    @property
    def region(self) -> tuple[int, int, int] | None:
        """What :func:`~napari_medseg.core.pipeline.segment` predicts: the displayed slice."""
        if self.axis is None or self.index is None:
            return None
        return (self.axis, self.index, self.index + 1)


def _keep_largest(job: Any, notes: list[str]) -> Any:
    """Run the prediction generator ``job``, then keep its largest foreground region (in the
    worker: it takes about a second on a brain volume); what it removed goes to ``notes``."""
    from napari_medseg.core.postprocess import keep_largest_component

    seg = yield from job
    pruned = keep_largest_component(seg.labels)
    notes.append(f"Largest region kept: {pruned.regions} other region(s), "
                 f"{pruned.voxels} voxel(s) set to background.")
    return replace(seg, labels=pruned.labels)


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
        self.channel_list.itemChanged.connect(lambda *_: self._refresh())
        self.viewer.dims.events.order.connect(self._refresh)
        self.viewer.dims.events.ndisplay.connect(self._refresh)
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
        self.axis_label = QLabel("Slice axis")
        self.axis_combo = QComboBox()
        self.axis_combo.addItems([f"axis {a}" for a in range(3)])
        self.axis_combo.setToolTip(
            "A 2D model on a 3D layer predicts it slice by slice along this axis: the axis the "
            "model was trained to slice along (for a model trained on volumes), or the axis "
            "the viewer's slider moves along (for a model trained on 2D images).")
        self._axis_chosen = False  # the user picked an axis: stop following the defaults
        self._slicing = False  # a 2D model and a 3D input: the slice axis applies
        self._axis_key: tuple[str, str | None] = ("", None)  # (model, input) of that choice
        self.axis_combo.activated.connect(self._axis_activated)
        form.addRow(self.axis_label, self.axis_combo)
        self.mode_combo = QComboBox()
        self.mode_combo.addItems([WHOLE, SLICE])
        form.addRow("Predict", self.mode_combo)
        self.tta_check = QCheckBox("test-time augmentation (mirroring: 4-8x slower)")
        # On, as in `napari-medseg predict`: one model gives the same labels in both.
        self.tta_check.setChecked(True)
        self.tta_check.setToolTip("The mean of the predictions of every mirroring of the input "
                                  "(4 in 2D, 8 in 3D). Untick for a quick look.")
        form.addRow(self.tta_check)
        self.largest_check = QCheckBox("keep the largest connected region only")
        self.largest_check.setToolTip(
            "Set every foreground region but the largest to background (all labels together; "
            "for one tumour or organ: it deletes all but one of several lesions). Whole "
            "predictions only: a slice of one region can look like several. Probabilities stay "
            "as predicted.")
        form.addRow(self.largest_check)
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
        self._refresh()

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
        self._refresh()

    def checked_channels(self) -> list[str]:
        """The checked Image layers, in the list's order."""
        return self.channel_list.checked()

    def set_channels(self, names: list[str]) -> None:
        """Check these layers as input channels, in the model's channel order."""
        self.channel_list.check_only(names)
        self._order = list(names)
        self._refresh()

    # ------------------------------------------------------------ slice axis / mode
    def _input_layer(self) -> Any | None:
        """The first checked layer (its grid is the input's), or None."""
        names = self.checked_channels()
        if not names:
            return None
        try:
            return L.get_layer(self.viewer, names[0])
        except ValueError:  # gone meanwhile: the list refreshes on the same event
            return None

    def _axis_activated(self, *_: Any) -> None:
        self._axis_chosen = True
        self._refresh_mode()

    def slice_axis(self) -> int | None:
        """The axis a 2D model slices the checked 3D layer along; None for other cases."""
        return self.axis_combo.currentIndex() if self._slicing else None

    def _default_axis(self, m: StoredModel, layer: Any) -> int:
        """The model's training axis if it learnt from volumes, else the viewer's slider's."""
        from napari_medseg.core.pipeline import trained_on_volumes

        tc = m.checkpoint.train_config
        if trained_on_volumes(m.checkpoint) is not False:  # volumes, or it does not say
            return tc.slice_axis
        shown = L.slider_axis(self.viewer, layer)
        return tc.slice_axis if shown is None else shown

    def _refresh(self, *_: Any) -> None:
        """Show the slice axis where it applies, with its default, then the modes (on a new
        model, input or view)."""
        m, layer = self.selected_model(), self._input_layer()
        key = (self.model_combo.currentText(), None if layer is None else layer.name)
        if key != self._axis_key:  # another model or input: the slice axis's default again
            self._axis_key, self._axis_chosen = key, False
        slicing = (m is not None and layer is not None
                   and m.checkpoint.model_config.spatial_dims == 2 and layer.ndim == 3)
        self._slicing = slicing
        self.axis_label.setVisible(slicing)
        self.axis_combo.setVisible(slicing)
        if slicing and not self._axis_chosen:
            assert m is not None
            self.axis_combo.setCurrentIndex(self._default_axis(m, layer))
        self._refresh_mode()

    def preview_problem(self, m: StoredModel | None = None) -> str | None:
        """Why "displayed slice (preview)" cannot predict the slice the viewer shows, or None."""
        m = m or self.selected_model()
        layer = self._input_layer()
        if m is None or layer is None or layer.ndim != 3:
            return None
        if self.viewer.dims.ndisplay != 2:
            return ("The viewer shows 3D: there is no displayed slice to preview. Switch to 2D "
                    "display, or predict the whole volume.")
        shown = L.slider_axis(self.viewer, layer)
        if shown is None:
            return f"The viewer shows no slice of '{layer.name}'; predict the whole volume."
        axis = self.slice_axis()
        if m.checkpoint.model_config.spatial_dims == 2 and axis is not None and axis != shown:
            return (f"The model slices along axis {axis}; the viewer's slider moves along axis "
                    f"{shown}: choose slice axis {shown}, or roll the viewer's dims so that the "
                    f"slider moves along axis {axis}.")
        return None

    def _refresh_mode(self) -> None:
        """The prediction modes that mean something for this input, model and view."""
        layer = self._input_layer()
        flat = layer is not None and layer.ndim == 2
        items = [WHOLE_IMAGE] if flat else [WHOLE, SLICE]
        current = self.mode_combo.currentText()
        self.mode_combo.blockSignals(True)
        if [self.mode_combo.itemText(i) for i in range(self.mode_combo.count())] != items:
            self.mode_combo.clear()
            self.mode_combo.addItems(items)
        self.mode_combo.setEnabled(not flat)
        problem = None if flat else self.preview_problem()
        if not flat:
            item = self.mode_combo.model().item(1)
            item.setEnabled(problem is None)
            item.setToolTip(problem or "Predict only the slice the viewer shows; the image is "
                            "normalised whole, as for the whole volume.")
        keep = current in items and not (current == SLICE and problem is not None)
        self.mode_combo.setCurrentText(current if keep else items[0])
        self.mode_combo.setToolTip("A 2D image is predicted whole." if flat else (problem or ""))
        self.mode_combo.blockSignals(False)

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
        axis_2d = None
        if dims == 2 and nd == 3:
            axis_2d = self.slice_axis()
            axis_2d = ck.train_config.slice_axis if axis_2d is None else axis_2d
            note += (f"{' ' if note else ''}2D model on a 3D volume: slice by slice along axis "
                     f"{axis_2d}.")
        if mode != SLICE or nd == 2:
            return PredictPlan(arrays, like.spacing, like, like.shape, note=note,
                               names=tuple(names), slice_axis=axis_2d)
        layer = L.get_layer(self.viewer, names[0])
        problem = self.preview_problem(m)
        if problem:
            raise InputError(problem)
        axis = L.slider_axis(self.viewer, layer)
        assert axis is not None  # preview_problem says why otherwise
        idx = L.displayed_index(self.viewer, layer, axis)
        note = f"{note} Preview of slice {idx} along axis {axis}.".lstrip()
        return PredictPlan(arrays, like.spacing, like, like.shape, axis, idx, note,
                           tuple(names), axis_2d)

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
        largest = self.largest_check.isChecked() and plan.region is None
        if self.largest_check.isChecked() and not largest:
            plan = replace(plan, note=f"{plan.note} The largest-region clean-up applies to "
                           "whole predictions, not to a preview.".lstrip())
        notes: list[str] = []  # filled in the worker, read when it is done

        def factory(should_stop: Any) -> Any:
            from napari_medseg.core.pipeline import segment

            job = segment(ck, plan.channels, plan.spacing, model=m.network(), device=device,
                          tta=tta, channel_names=list(plan.names) or None,
                          slice_axis=plan.slice_axis, region=plan.region)
            return _keep_largest(job, notes) if largest else job

        self._open_pbar("predicting")
        job = self.runner.start(factory, on_event=self._on_event,
                                on_done=lambda seg: self._on_done(
                                    seg, replace(plan, note=" ".join([plan.note, *notes]).strip()),
                                    m),
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
        # What the decision thresholds: P(not background), or a sigmoid's own output.
        p_fg = 1.0 - probs[0] if probs.shape[0] > 1 else probs[0]
        if plan.axis is not None:
            labels, p_fg, ent = (self._embed(a, plan) for a in (labels, p_fg, ent))
        suffix = "" if plan.axis is None else f" preview (axis {plan.axis}, slice {plan.index})"
        base = plan.like.name
        classes = {int(v): f"label {v}" for v in m.checkpoint.mapping.values}
        meta = {"model": m.name, "classes": classes}
        ncls = probs.shape[0]
        makers = [
            lambda: L.add_array(self.viewer, labels, plan.like, f"{base} prediction{suffix}",
                                kind="labels", opacity=0.5, metadata=meta),
            lambda: L.add_array(self.viewer, p_fg.astype(np.float32), plan.like,
                                f"{base} foreground probability{suffix}", colormap="viridis",
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
        self._add_layers(makers, [], labels, plan.note)

    def _shutting_down(self) -> None:
        self._shut = True

    def _add_layers(self, makers: list[Any], done: list[Any], labels: np.ndarray,
                    note: str = "") -> None:
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
            QTimer.singleShot(0, lambda: self._add_layers(makers, done, labels, note))
            return
        self.adding = False
        self.last_layers = done
        vals = sorted(int(v) for v in np.unique(labels))
        # The note (channel order, slice axis, previewed slice) stays: it says what was done.
        self._say((note + " " if note else "") + f"Added '{done[0].name}' (label values "
                  f"{vals}), its foreground probability and uncertainty (entropy) layers.")
        self.viewer.layers.selection.active = done[0]

    @staticmethod
    def _embed(arr: np.ndarray, plan: PredictPlan) -> np.ndarray:
        """Paste the predicted slice (the region, one slice thick) into a full-size volume."""
        arr = np.take(arr, 0, axis=plan.axis)
        full = np.zeros(plan.full_shape, arr.dtype)
        idx: list[Any] = [slice(None)] * len(plan.full_shape)
        idx[plan.axis] = plan.index  # type: ignore[index]
        full[tuple(idx)] = arr
        return full
