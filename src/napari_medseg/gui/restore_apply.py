"""The Restoration widget's second half: restore a layer, compare it, save / load models.

A mixin of :class:`~napari_medseg.gui.restore_widget.RestoreWidget` (which owns the
viewer, the job runner and the current model); split off to keep modules short.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtCore import QTimer

from napari_medseg.gui import layers as L
from napari_medseg.gui import restore_jobs as J
from napari_medseg.gui.model_store import ModelFiles, ModelStore, StoredModel
from napari_medseg.gui.restore_jobs import ROLE
from napari_medseg.gui.restore_ui import NONE, RestoreControls
from napari_medseg.gui.widget_base import InputError
from napari_medseg.gui.workers import JobRunner


class RestoreApply(ModelFiles, RestoreControls):
    """Restoring into new layers, the SSIM / error maps and readout, model files."""

    save_title = "Save restoration model"
    save_default = "restore.pt"

    viewer: Any
    runner: JobRunner
    store: ModelStore
    current: StoredModel | None
    last_comparison: J.Comparison | None
    last_layers: list[Any]
    _pending: list[Any]
    _restoring: Any

    def _layer(self, name: str) -> Any:
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def _start(self, factory: Any, kind: str, *, with_clock: bool = False, warm: bool = False
               ) -> bool:
        raise NotImplementedError  # RestoreWidget

    def _show_model(self) -> None:
        raise NotImplementedError  # RestoreWidget

    # ------------------------------------------------------------ restoring
    def restore(self) -> bool:
        """Restore the chosen layer into a new layer (and compare); False when refused."""
        if self.runner.busy:
            self._say("A restoration job is already running: stop it or wait for it.")
            self.runner.notify_busy()
            return False
        m = self.current
        if m is None:
            self._say("No restoration model: train one above, or Load… a model file.",
                      error=True)
            return False
        try:
            inp, ref = self._restore_inputs(m)
        except InputError as exc:
            self._say(str(exc), error=True)
            return False
        ck, device = m.checkpoint, self.device_combo.currentText()
        ref_data = None if ref is None else ref.data

        def factory(should_stop: Any) -> Any:
            return J.restore_job(ck, m.network(), inp.data, device=device, reference=ref_data)

        self._restoring = (inp, ref, m)
        if not self._start(factory, "restoring"):
            return False
        self._say(f"Restoring '{inp.name}' with {m.name}…")
        return True

    def _restore_inputs(self, m: StoredModel) -> tuple[L.LayerArray, L.LayerArray | None]:
        name, ref_name = self.input_combo.currentText(), self.ref_combo.currentText()
        if self._layer(name) is None:
            raise InputError("Choose an Image layer to restore.")
        inp = L.layer_to_array(self._layer(name))
        mc = m.checkpoint.model_config
        if inp.data.ndim not in (2, 3):
            raise InputError(f"'{inp.name}' is {inp.data.ndim}D {inp.shape}; restore 2D or 3D "
                             "single-channel images.")
        if mc.spatial_dims == 3 and inp.data.ndim == 2:
            raise InputError(f"'{m.name}' is a 3D model; '{inp.name}' is a 2D image. Train a "
                             "2D model for 2D images.")
        if mc.in_channels != 1:
            raise InputError(f"'{m.name}' restores {mc.in_channels}-channel images; this widget "
                             "restores one layer (use `napari-medseg restore` with one --image "
                             "per channel).")
        ref = None
        if ref_name != NONE and self._layer(ref_name) is not None:
            ref = L.layer_to_array(self._layer(ref_name))
            if ref.shape != inp.shape:
                raise InputError(f"Input '{inp.name}' {inp.shape} and reference '{ref.name}' "
                                 f"{ref.shape} differ in shape; choose a reference on the "
                                 "input's grid, or no reference.")
            problem = L.grid_problem(inp, ref, "Input and reference")
            if problem:
                raise InputError(problem)
        return inp, ref

    def _show_restored(self, out: J.RestoreOutput) -> None:
        inp, ref, m = self._restoring
        base = f"{inp.name} restored"
        comp = out.comparison
        self.last_comparison = comp
        self.last_layers = []
        clim = tuple(self._layer(inp.name).contrast_limits) if self._layer(inp.name) else None
        makers = [lambda: L.add_array(self.viewer, out.restored, inp, base,
                                      metadata={"restored_by": m.name},
                                      **({"contrast_limits": clim} if clim else {}))]
        if comp is not None and ref is not None:
            self._show_readout(comp, inp.name, ref.name)
            hi = float(np.percentile(comp.abs_error, 99.5)) or 1.0
            makers.append(lambda: L.add_array(
                self.viewer, comp.abs_error, inp, f"{base} |error|", colormap="inferno",
                contrast_limits=(0.0, hi), metadata={ROLE: "error map"}))
            if comp.ssim_map is not None:  # last, so on top: where is structure lost
                makers.append(lambda: L.add_array(
                    self.viewer, comp.ssim_map, inp, f"{base} SSIM map", colormap="viridis",
                    contrast_limits=(0.0, 1.0), metadata={ROLE: "ssim map"}))
        else:
            self.readout.setText("Choose a reference layer to see PSNR / SSIM / NMSE / MAE "
                                 "and an SSIM map.")
            self._say(f"Restored '{inp.name}' into '{base}'.")
        # One layer per event-loop turn: adding a layer re-renders the canvas, and three in
        # a row would hold the GUI thread for all of them at once.
        self._pending = makers
        self._add_next()

    def _add_next(self) -> None:
        if self._pending:
            self.last_layers.append(self._pending.pop(0)())
            QTimer.singleShot(0, self._add_next)

    def _show_readout(self, comp: J.Comparison, name: str, ref: str) -> None:
        r, b = comp.metrics, comp.input_metrics or {}

        def row(key: str, label: str, fmt: str) -> str:
            before = f"{b[key]:{fmt}}" if key in b else "-"
            return f"<tr><td>{label}</td><td>{before}</td><td><b>{r[key]:{fmt}}</b></td></tr>"

        self.readout.setText(
            f"Against '{ref}' (data range {r['data_range']:.4g}; SSIM "
            f"{comp.abs_error.ndim}D over the whole "
            f"image, window {comp.ssim_window}, as evaluate --task restore):<table cellspacing='6'><tr><td></td><td>input</td>"
            "<td>restored</td></tr>" + row("psnr", "PSNR (dB)", ".2f") + row("ssim", "SSIM", ".4f")
            + row("nmse", "NMSE", ".4g") + row("mae", "MAE", ".4g") + "</table>")
        gain = r["psnr"] - b["psnr"] if "psnr" in b else float("nan")
        self._say(f"Restored '{name}': PSNR {r['psnr']:.2f} dB ({gain:+.2f} dB), SSIM "
                  f"{r['ssim']:.4f} against '{ref}'.")

    # ------------------------------------------------------------ files
    def _model_loaded(self, entry: StoredModel) -> None:
        self.current = entry
        self._show_model()
        self._say(f"Loaded {entry.path}.")

