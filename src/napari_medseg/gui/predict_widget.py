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
from qtpy.QtWidgets import QWidget

from napari_medseg.gui import layers as L
from napari_medseg.gui.channel_order import describe_order, order_for_model
from napari_medseg.gui.job_controls import ProgressBarOwner
from napari_medseg.gui.model_store import ModelLoading, StoredModel, store_for
from napari_medseg.gui.predict_ui import SLICE, PredictControls
from napari_medseg.gui.widget_base import InputError
from napari_medseg.gui.workers import JobRunner, stop_on_close


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


class PredictWidget(ModelLoading, ProgressBarOwner, PredictControls):
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
        self.load_btn.clicked.connect(lambda: self.load_model())
        self.predict_btn.clicked.connect(lambda: self.predict())
        self.cancel_btn.clicked.connect(self.cancel)
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
