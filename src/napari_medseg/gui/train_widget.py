"""Training widget: image layers + a labels layer -> a segmentation model, in a worker.

The user checks one or more Image layers as channels, picks the Labels layer
they painted, sees how much is labelled, and presses Train. Training runs in
a thread (:mod:`napari_medseg.gui.workers`); a live plot and a
progress bar follow it; Stop keeps the best model; Continue training starts
from the current model after the user corrected labels.

The form (controls, channel list, label statistics, data-derived defaults) is built in
:mod:`napari_medseg.gui.train_ui`; what is read from the layers and the defaults in
:mod:`napari_medseg.gui.train_inputs`.
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import Any

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QWidget

from napari_medseg.core.data import training_classes_problem
from napari_medseg.gui import layers as L
from napari_medseg.gui.channel_order import describe_order, order_for_model
from napari_medseg.gui.job_controls import JobControls, step_fraction
from napari_medseg.gui.model_store import ModelFiles, StoredModel, store_for
from napari_medseg.gui.train_inputs import (
    TrainInputs,
    default_depth,
    label_stats,
    parse_patch,
    parse_spacing,
    sparse_target,
)
from napari_medseg.gui.train_ui import TrainControls
from napari_medseg.gui.widget_base import InputError, read_limit
from napari_medseg.gui.workers import JobRunner, prewarm_torch, stop_on_close


class TrainWidget(ModelFiles, JobControls, TrainControls):
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
        self._connect_actions()
        self._stats_timer = QTimer(self)
        self._stats_timer.setSingleShot(True)
        self._stats_timer.setInterval(300)
        self._stats_timer.timeout.connect(self.refresh_stats)
        ev = self.viewer.layers.events
        ev.inserted.connect(self._layers_changed)
        ev.removed.connect(self._layers_changed)
        ev.reordered.connect(self._layers_changed)
        self._rename_watch = L.LayerNameWatch(self.viewer, self._layer_renamed)
        self._watched: Any = None
        self._layers_changed()
        self.viewer.dims.events.order.connect(self._follow_view_axis)
        prewarm_torch()  # the first optimiser step's imports, off the GUI thread, ahead of time

    def _layer_renamed(self, old: str, new: str) -> None:
        L.rename_in_pickers([self.channel_list, self.labels_combo], old, new)
        self._layers_changed()

    def _connect_actions(self) -> None:
        """Wire the form's buttons (built by :class:`TrainControls`) to the actions."""
        self.train_btn.clicked.connect(lambda: self.start_training(continue_=False))
        self.continue_btn.clicked.connect(lambda: self.start_training(continue_=True))
        self.pause_btn.clicked.connect(self.toggle_pause)
        self.stop_btn.clicked.connect(self.stop)
        self.save_btn.clicked.connect(lambda: self.save_model())
        self.load_btn.clicked.connect(lambda: self.load_model())

    # ------------------------------------------------------------ inputs
    def collect_inputs(self, model: StoredModel | None = None) -> TrainInputs:
        """Read and check the chosen layers; raise :class:`InputError` with a clear reason.

        ``model``: the model Continue training starts from. Its channels are matched to
        the checked layers by name, and its slice axis is used, so that the weights see
        what they were trained on whatever the viewer's layer order or view.
        """
        names = self.checked_channels()
        if not names:
            raise InputError("Check at least one Image layer as an input channel."
                             + L.rgb_note(self.viewer))
        note = ""
        if model is not None:
            ck = model.checkpoint
            names, by_name = order_for_model(ck.channel_names, names)
            if len(names) > 1 or (ck.channel_names and names != list(ck.channel_names)):
                note = describe_order(ck.channel_names, names)
                if not by_name and len(names) > 1:
                    note += " (by list order: the layer names do not match the model's)"
        lab_layer = self._labels_layer()
        if lab_layer is None and self.labels_combo.count():
            raise InputError("Choose the Labels layer to train on (Labels).")
        if lab_layer is None:
            raise InputError("No Labels layer: add one (layer list, 'new labels layer') and "
                             "paint a few slices of each structure.")
        chans = [L.layer_to_array(L.get_layer(self.viewer, n)) for n in names]
        for c in chans:
            if c.data.ndim not in (2, 3):
                raise InputError(f"'{c.name}' is {c.data.ndim}D {c.shape}; channels must be 2D "
                                 "or 3D single-channel images.")
        for c in chans[1:]:
            problem = L.grid_problem(chans[0], c, "Channels")
            if problem:
                raise InputError(problem)
        lab = L.layer_to_array(lab_layer)
        if lab.shape != chans[0].shape:
            raise InputError(f"Image '{chans[0].name}' {chans[0].shape} and labels '{lab.name}' "
                             f"{lab.shape} differ in shape; paint labels on the image's grid.")
        problem = L.grid_problem(chans[0], lab, "Image and labels")
        if problem:
            raise InputError(problem)
        axis = self._axis(lab.data.ndim)
        if model is not None and axis is not None and \
                model.checkpoint.model_config.spatial_dims == 2:
            # a 2D model learnt slices along its axis; a 3D model does not slice, so the
            # form's axis (the one the labels were painted along) stands
            axis = model.checkpoint.train_config.slice_axis
            if axis != self.axis_combo.currentIndex():
                note += f" Slices along axis {axis}, as the model was trained."
                self.use_axis(axis)
        target = sparse_target(lab.data, axis=axis, background=self.background_check.isChecked())
        st = label_stats(target, axis)
        fg = {k: n for k, n in st.voxels.items() if k != 0 and n > 0}
        if not fg:
            raise InputError(f"'{lab.name}' has no labels: paint at least one structure "
                             "(label 1, 2, ...) on a few slices.")
        problem = training_classes_problem(list(st.voxels))
        if problem:
            raise InputError(f"'{lab.name}' {problem}")
        present = [k for k, n in st.voxels.items() if n > 0]
        if len(present) < 2:
            raise InputError(f"Only label value {present[0]} is labelled; a model needs at least "
                             "two classes. Leave some background unpainted in the labelled "
                             "slices, or tick 'unlabelled voxels are background'.")
        return TrainInputs(chans, lab, target, st, axis, note.strip())

    def _configs(self, inp: TrainInputs, *, continue_from: StoredModel | None) -> tuple[Any, Any,
                                                                                       Any]:
        from napari_medseg.core.config import ModelConfig, TrainConfig
        from napari_medseg.core.data import LabelMapping

        nd = inp.target.ndim
        epochs, minutes = read_limit(self.limit_spin, self.limit_combo)
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
            # A warm start keeps what the weights were trained for (patch, loss, decision,
            # spacing, intensities): the form's settings are for a new model, so they are
            # neither read nor checked here; only the budget and the device change.
            tc = dataclasses.replace(ck.train_config, epochs=epochs, minutes=minutes, device=device,
                                     steps_per_epoch=self.steps_spin.value(),
                                     seed=ck.train_config.seed + 1,
                                     slice_axis=inp.axis if inp.axis is not None
                                     else ck.train_config.slice_axis)
            return mc, tc, mapping
        dims = 2 + self.dims_combo.currentIndex()
        if dims == 3 and nd != 3:
            raise InputError("A 3D model needs 3D layers; these are 2D. Choose Model: 2D.")
        patch = parse_patch(self.patch_edit.text(), dims, 64)
        spacing = parse_spacing(self.spacing_edit.text(), dims, inp.channels[0].spacing,
                                inp.axis, image=inp.channels[0].data, patch=patch)
        mapping = LabelMapping.from_labels([inp.target])
        tc = TrainConfig(patch_size=patch, batch_size=self.batch_spin.value(),
                         loss=self.loss_combo.currentText(), epochs=epochs, minutes=minutes,
                         steps_per_epoch=self.steps_spin.value(), device=device,
                         slice_axis=inp.axis if inp.axis is not None else 2, lr=3e-3,
                         intensity_norm=self.norm_combo.currentText(), spacing=spacing,
                         decision=self.decision_combo.currentText(),
                         threshold=round(self.threshold_spin.value(), 2))
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
            inp = self.collect_inputs(self.current if continue_ else None)
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
        self._open_pbar("training")
        job = self.runner.start(factory, on_event=self._on_event, on_done=self._on_done,
                                on_error=self._on_error, on_finished=self._on_finished,
                                on_paused=self._on_paused, with_clock=True)
        if job is None:
            self._close_pbar()
            return False
        what = "Continuing from the current model" if continue_ else "Training"
        limit = f"{tc.minutes:g} min" if tc.minutes else f"{tc.epochs} epochs"
        at = "" if tc.spacing is None else " at " + tc.spacing_text()
        if not continue_ and self.spacing_edit.text().strip().lower() == "auto":
            at = (at or " on the native grid") + " (auto)"
        self._say(f"{what}: {mc.spatial_dims}D UNet, patch {tuple(tc.patch_size)}{at}, "
                  f"{mapping.num_classes} classes, {limit} on {tc.device}…"
                  + (f" {inp.note}" if inp.note else ""))
        self._set_running(True)
        return True

    def stop(self) -> None:
        job = self.runner.job
        if job is not None:
            job.request_stop()
            self._say("Stopping after this step; the best model so far is kept…")

    def _ensure_plot(self) -> None:
        from napari_medseg.gui.plot import CurvePlot, is_docked

        if self.plot is None:
            self.plot = CurvePlot()
        window = getattr(self.viewer, "window", None)
        if not is_docked(self.plot, self._plot_dock):
            # Closed with its X: napari deleted the dock but kept the plot, curves and all.
            self._plot_dock = None
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
            self._set_progress(step_fraction(ev))
            eta = f", about {_fmt_s(ev.eta_s)} left" if ev.eta_s is not None else ""
            paused = self.runner.job is not None and self.runner.job.is_paused
            if not paused and not (self.runner.job and self.runner.job.stop_requested):
                self._say(f"Epoch {ev.epoch}, step {ev.step}: loss {ev.loss:.3f}{eta}")
            self._pbar_text(f"training: epoch {ev.epoch}")
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

    def _on_done(self, res: Any) -> None:
        self.last_result = res
        if res.steps == 0:  # random weights: offering them for prediction would mislead
            self._say("Stopped before the first training step; no model was kept.")
            return
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
        tc = ck.train_config
        self.model_label.setToolTip(f"trained with patch {tuple(tc.patch_size)}, "
                                    f"loss {tc.loss}, decision {tc.decision}, "
                                    f"intensities {tc.intensity_norm}, "
                                    f"{len(ck.history)} validation(s); Continue training "
                                    "keeps these")
        self._set_running(self.runner.busy)

    # ------------------------------------------------------------ files
    def _model_loaded(self, entry: StoredModel) -> None:
        self.current = entry
        self._show_model(entry)
        self._say(f"Loaded {entry.path}. Continue training warm-starts from it.")


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
    from napari_medseg.core.prepare import prepare_case

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
