"""Restoration widget: train a denoising / degradation-removal network on layers, restore.

The user picks how training pairs are made (a noisy + clean pair, clean
images degraded on the fly, or noisy images alone), previews the degradation,
trains in a worker thread with a live loss / PSNR curve, and restores any Image
layer into a new layer -- with, when a clean reference layer is chosen, an SSIM
map, an absolute-error map and a PSNR / SSIM / NMSE / MAE readout. The
controls are built in :mod:`napari_medseg.gui.restore_ui`, restoring and model
files are in :mod:`napari_medseg.gui.restore_apply`, the computations (worker
jobs) in :mod:`napari_medseg.gui.restore_jobs`.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
from qtpy.QtWidgets import QWidget

from napari_medseg.gui import layers as L
from napari_medseg.gui import restore_jobs as J
from napari_medseg.gui.job_controls import JobControls, step_fraction
from napari_medseg.gui.model_store import StoredModel, store_for
from napari_medseg.gui.restore_apply import RestoreApply
from napari_medseg.gui.restore_jobs import ROLE
from napari_medseg.gui.restore_ui import NONE
from napari_medseg.gui.train_inputs import parse_patch
from napari_medseg.gui.widget_base import InputError, read_limit
from napari_medseg.gui.workers import JobRunner, prewarm_torch, stop_on_close

#: Learning rate: the command line's 1e-3 suits its 10-epoch default; interactive budgets
#: are short (60 steps on a 64x64 phantom, Rician 10 %, noisy 19.7 dB: 21.5 dB at 1e-3,
#: 26.5 dB at 3e-3), as the training widget's 3e-3.
LR = 3e-3


class RestoreWidget(JobControls, RestoreApply):
    """Dock widget: restoration training, degradation preview, restoring and comparing."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.store = store_for(napari_viewer, task="restore")
        self.runner = JobRunner("restoration")
        stop_on_close(self, self.runner, napari_viewer)
        self.runner.on_shutdown.append(weakref.WeakMethod(self._close_pbar))
        self.current: StoredModel | None = None
        self.preview_layer: Any = None
        self.last_result: Any = None
        self.last_comparison: J.Comparison | None = None
        self.last_layers: list[Any] = []
        self._pbar: Any = None
        self._job_kind = ""
        self._pending: list[Any] = []
        self._restoring: Any = None
        self._patch_key: tuple[Any, ...] = (None, None, None, None)
        self.build_ui()
        self.preview_btn.clicked.connect(lambda: self.preview())
        self.train_btn.clicked.connect(lambda: self.start_training())
        self.pause_btn.clicked.connect(self.toggle_pause)
        self.stop_btn.clicked.connect(self.stop)
        self.continue_btn.clicked.connect(lambda: self.start_training(continue_=True))
        self.save_btn.clicked.connect(lambda: self.save_model())
        self.load_btn.clicked.connect(lambda: self.load_model())
        self.restore_btn.clicked.connect(lambda: self.restore())
        self.image_list.itemChanged.connect(lambda *_: self._patch_from_data())
        self.dims_combo.currentIndexChanged.connect(lambda *_: self._patch_from_data())
        self.axis_combo.currentIndexChanged.connect(lambda *_: self._patch_from_data())
        ev = self.viewer.layers.events
        for name in ("inserted", "removed", "reordered"):
            getattr(ev, name).connect(self._layers_changed)
        self._rename_watch = L.LayerNameWatch(self.viewer, self._layer_renamed)
        self._layers_changed()
        self._set_running(False)
        prewarm_torch()  # the first optimiser step's imports, off the GUI thread, ahead of time

    # ------------------------------------------------------------ layers
    def input_layers(self) -> list[Any]:
        """Image layers to train on, restore or compare with (not this widget's maps)."""
        return [lay for lay in L.image_layers(self.viewer, inputs_only=True)
                if ROLE not in (lay.metadata or {})]

    def _layer_renamed(self, old: str, new: str) -> None:
        L.rename_in_pickers([self.image_list, self.target_combo, self.input_combo,
                             self.ref_combo], old, new)
        self._layers_changed()

    def _layers_changed(self, *_: Any) -> None:
        names = [lay.name for lay in self.input_layers()]
        self.fill_layer_choices(names)
        self._patch_from_data()

    def _patch_from_data(self) -> None:
        """Default patch (and slice axis) for the first training image.

        Only when the image, the model's dimensionality or the axis changed: adding a
        layer (a preview, a restored image) must not undo a patch the user typed.
        """
        imgs = self.checked_images()
        layer = self._layer(imgs[0]) if imgs else None
        if layer is None or layer.ndim not in (2, 3):
            return
        shape = tuple(layer.data[0].shape if getattr(layer, "multiscale", False)
                      else layer.data.shape)
        if layer.ndim == 3 and (layer.name, shape) != self._patch_key[:2]:
            # a new image: thick slices stay whole, as `train --task restore` slices them
            from napari_medseg.core.plan import restoration_slice_axis

            ax = restoration_slice_axis(L.layer_to_array(layer, copy=False).spacing)
            if ax is None:  # isotropic (a TIFF stack): slice as the viewer shows it
                ax = L.slider_axis(self.viewer, layer)
            self.axis_combo.blockSignals(True)
            self.axis_combo.setCurrentIndex(2 if ax is None else ax)
            self.axis_combo.blockSignals(False)
        dims = 2 + self.dims_combo.currentIndex() if layer.ndim == 3 else 2
        axis = self.axis_combo.currentIndex() if layer.ndim == 3 else None
        key = (layer.name, shape, dims, axis)
        if key == self._patch_key:
            return
        self._patch_key = key
        self.patch_edit.setText(" ".join(str(p) for p in J.default_patch(shape, dims, axis)))

    # ------------------------------------------------------------ preview
    def preview(self) -> Any:
        """Add (or replace) the one preview layer: the first image, degraded as in training."""
        imgs = self.checked_images()
        if not imgs:
            self._say("Check a clean image to preview its degradation.", error=True)
            return None
        try:
            spec = self.degradation()
            src = L.layer_to_array(self._layer(imgs[0]))
            axis = L.slider_axis(self.viewer, self._layer(imgs[0]))
            idx = L.displayed_index(self.viewer, self._layer(imgs[0]), axis) \
                if axis is not None else 0
            out, where = J.degrade_preview(src.data, spec, axis=axis, index=idx)
        except ValueError as exc:
            self._say(str(exc), error=True)
            return None
        if self.preview_layer is not None and self.preview_layer in self.viewer.layers:
            self.viewer.layers.remove(self.preview_layer)  # one preview layer, always
        clim = tuple(self._layer(imgs[0]).contrast_limits)
        self.preview_layer = L.add_array(
            self.viewer, out, src, "degradation preview", contrast_limits=clim,
            metadata={ROLE: "preview", "degrade": spec})
        self._say(f"Preview of '{src.name}' degraded by {spec}"
                  + (f" ({where} only: the volume is large)" if where else "") + ".")
        return self.preview_layer

    # ------------------------------------------------------------ training
    def collect(self) -> tuple[list[L.LayerArray], list[np.ndarray | None], Any, Any]:
        """Read and check the layers and settings; :class:`InputError` with the reason."""
        from napari_medseg.core.restoration import RestoreConfig, restoration_model_config

        mode = self.mode()
        names = self.checked_images()
        what = "clean" if mode == "synthetic" else "noisy"
        if not names:
            raise InputError(f"Check at least one {what} Image layer to train on."
                             + L.rgb_note(self.viewer))
        imgs = [L.layer_to_array(self._layer(n)) for n in names]
        for im in imgs:
            if im.data.ndim not in (2, 3):
                raise InputError(f"'{im.name}' is {im.data.ndim}D {im.shape}; restoration "
                                 "trains on 2D or 3D single-channel images.")
            if im.data.ndim != imgs[0].data.ndim:
                raise InputError(f"'{imgs[0].name}' is {imgs[0].data.ndim}D but '{im.name}' is "
                                 f"{im.data.ndim}D; train on images of one dimensionality.")
        target_name = self.target_combo.currentText()
        targets: list[np.ndarray | None] = [None] * len(imgs)
        if mode == "pairs" and (target_name == NONE or len(imgs) != 1):
            raise InputError(f"Pairs mode trains on one noisy layer and its clean layer: check "
                             f"exactly one noisy layer ({len(imgs)} checked) and choose its "
                             "clean layer.")
        if mode != "synthetic" and target_name != NONE:
            t = L.layer_to_array(self._layer(target_name))
            if t.shape != imgs[0].shape:
                raise InputError(f"Noisy '{imgs[0].name}' {imgs[0].shape} and clean "
                                 f"'{t.name}' {t.shape} differ in shape; register/resample "
                                 "the clean image onto the noisy one's grid.")
            problem = L.grid_problem(imgs[0], t, "Noisy and clean images")
            if problem:
                raise InputError(problem)
            targets = [t.data] + [None] * (len(imgs) - 1)
        nd = imgs[0].data.ndim
        dims = 2 + self.dims_combo.currentIndex()
        if dims == 3 and nd == 2:
            raise InputError("A 3D model needs 3D layers; these are 2D. Choose Model: 2D.")
        patch = parse_patch(self.patch_edit.text(), dims, 32)
        epochs, minutes = read_limit(self.limit_spin, self.limit_combo)
        rc = RestoreConfig(mode=mode, degrade=self.degradation() if mode == "synthetic" else "",
                           loss=self.loss_combo.currentText().strip(), patch_size=patch,
                           batch_size=self.batch_spin.value(), lr=LR,
                           epochs=epochs, minutes=minutes,
                           steps_per_epoch=self.steps_spin.value(),
                           device=self.device_combo.currentText(),
                           slice_axis=self.axis_combo.currentIndex())
        mc = restoration_model_config(spatial_dims=dims, in_channels=1,
                                      base_width=self.width_spin.value(),
                                      depth=J.default_depth(patch), mode=mode)
        return imgs, targets, mc, rc

    def start_training(self, *, continue_: bool = False) -> bool:
        """Check inputs and start training in the worker; False (with a message) if refused.

        ``continue_``: warm-start from the current model (its architecture is kept; the
        form's width is not consulted).
        """
        if self.runner.busy:
            self._say("A restoration job is already running: stop it or wait for it.")
            self.runner.notify_busy()
            return False
        init = None
        try:
            if continue_ and self.current is None:
                raise InputError("No current model to continue: train or load one first.")
            imgs, targets, mc, rc = self.collect()
            if continue_ and self.current is not None:
                mc, init = self._warm_start(self.current, mc, rc)
        except ValueError as exc:  # InputError, and the core's config validation
            self._say(str(exc), error=True)
            return False
        arrays = [im.data for im in imgs]
        names = [im.name for im in imgs]
        spacing = imgs[0].spacing

        def factory(should_stop: Any, clock: Any) -> Any:
            return J.train_job(arrays, targets, names=names, spacing=spacing, model_config=mc,
                               config=rc, should_stop=should_stop, clock=clock,
                               init_state=init)

        self.plot.clear()
        if not self._start(factory, "training", with_clock=True, warm=True):
            return False
        limit = f"{rc.minutes:g} min" if rc.minutes else f"{rc.epochs} epochs"
        what = f"Continuing '{self.current.name}'" if init and self.current else "Training"
        self._say(f"{what}: a {mc.spatial_dims}D restoration UNet ({J.MODE_LABELS[rc.mode]}, "
                  f"loss {rc.loss}), patch {tuple(rc.patch_size)}, {limit} on {rc.device}…")
        return True

    @staticmethod
    def _warm_start(current: StoredModel, mc: Any, rc: Any) -> tuple[Any, dict[str, Any]]:
        """The current model's architecture and weights, if it can train on in this setting."""
        ck = current.checkpoint
        old = ck.model_config
        old_mode = ck.extra.get("restore", {}).get("mode")
        if old_mode is not None and old_mode != rc.mode:
            label = J.MODE_LABELS.get(old_mode, old_mode)
            raise InputError(f"'{current.name}' was trained in {old_mode!r} mode ({label}); "
                             "continue it in that mode, or press Train for a new model.")
        if old.spatial_dims != mc.spatial_dims:
            raise InputError(f"'{current.name}' is a {old.spatial_dims}D model; choose Model: "
                             f"{old.spatial_dims}D to continue it, or press Train for a new one.")
        if old.in_channels != mc.in_channels:
            raise InputError(f"'{current.name}' restores {old.in_channels}-channel images; this "
                             "widget trains on one layer.")
        if any(p % old.divisor for p in rc.patch_size):
            raise InputError(f"'{current.name}' needs patch sizes divisible by {old.divisor}; "
                             f"got {tuple(rc.patch_size)}.")
        return old, dict(ck.state_dict)

    def _start(self, factory: Any, kind: str, *, with_clock: bool = False, warm: bool = False
               ) -> bool:
        self._job_kind = kind
        self._open_pbar(f"restoration {kind}")
        job = self.runner.start(factory, on_event=self._on_event, on_done=self._on_done,
                                on_error=self._on_error, on_finished=self._on_finished,
                                on_cancelled=lambda: self._say(f"{kind.capitalize()} "
                                                               "cancelled."),
                                on_paused=self._on_paused, with_clock=with_clock, warm=warm)
        if job is None:
            self._close_pbar()
            return False
        self._set_running(True)
        return True

    def stop(self) -> None:
        """Training: stop and keep the best model so far. Restoring: cancel."""
        job = self.runner.job
        if job is None:
            return
        if self._job_kind == "training":
            job.request_stop()
            self._say("Stopping after this step; the best model so far is kept…")
        else:
            job.cancel()
            self._say("Cancelling…")

    def _on_event(self, ev: Any) -> None:
        from napari_medseg.core.events import Message, Progress, StepDone
        from napari_medseg.core.restoration import RestoreValidated

        job = self.runner.job
        quiet = job is not None and (job.is_paused or job.stop_requested)
        if isinstance(ev, StepDone):
            self.plot.add_loss(ev.step, ev.loss)
            self._set_progress(step_fraction(ev))
            if not quiet:
                eta = f", about {ev.eta_s:.0f}s left" if ev.eta_s is not None else ""
                self._say(f"Epoch {ev.epoch}, step {ev.step}: loss {ev.loss:.4f}{eta}")
        elif isinstance(ev, RestoreValidated):
            self.plot.add_validation(ev.step, psnr=ev.psnr, psnr_input=ev.psnr_input,
                                     loss=ev.loss)
            if ev.psnr is not None and not quiet:
                base = f" (noisy input {ev.psnr_input:.2f})" if ev.psnr_input is not None else ""
                self._say(f"Epoch {ev.epoch}: validation PSNR {ev.psnr:.2f} dB{base}, SSIM "
                          f"{ev.ssim:.3f}")
        elif isinstance(ev, Progress):
            self._set_progress(ev.fraction)
        elif isinstance(ev, Message) and not quiet:
            self._say(ev.text[:1].upper() + ev.text[1:] + "…")

    def _on_done(self, res: Any) -> None:
        if isinstance(res, J.RestoreOutput):
            self._show_restored(res)
            return
        self.last_result = res
        if res.steps == 0:  # random weights: offering them for restoring would mislead
            self._say("Stopped before the first training step; no model was kept.")
            return
        best = "n/a" if res.best_psnr is None else f"{res.best_psnr:.2f} dB"
        entry = StoredModel(f"restoration {len(self.store.models) + 1} (PSNR {best})",
                            res.checkpoint, res.model)
        self.store.add(entry)
        self.current = entry
        self._show_model()
        how = "stopped" if res.stopped else "finished"
        self._say(f"Training {how} after {res.steps} steps; best validation PSNR {best}. "
                  "Restore an image with it below.")

    def _on_error(self, exc: BaseException) -> None:
        self._say(f"{self._job_kind.capitalize() or 'Job'} failed: {exc}", error=True)

    def _on_finished(self) -> None:
        self._close_pbar()
        self._set_running(False)

    def _set_running(self, running: bool) -> None:
        for b in (self.train_btn, self.load_btn):
            b.setEnabled(not running)
        # the degradation preview belongs to synthetic mode only (as _mode_changed says)
        self.preview_btn.setEnabled(not running and self.mode() == "synthetic")
        self.continue_btn.setEnabled(not running and self.current is not None)
        self.restore_btn.setEnabled(not running and self.current is not None)
        self.save_btn.setEnabled(self.current is not None)
        self.pause_btn.setEnabled(running and self._job_kind == "training")
        self.stop_btn.setEnabled(running)
        if not running:
            self.pause_btn.setText("Pause")

    def _show_model(self) -> None:
        if self.current is not None:
            self.model_label.setText(f"{self.current.name}: "
                                     f"{self.current.checkpoint.describe()}")
        self._set_running(self.runner.busy)
