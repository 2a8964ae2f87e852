"""Metrics widget: a prediction against a reference, as numbers, overlays and a slice plot.

Two Labels layers -> segmentation: a table of Dice per class (volume and the
viewed slice), HD95 and NSD in mm (layer scale) and the volume difference; a
TP / FP / FN Labels overlay; a per-slice Dice plot docked at the bottom of the
viewer (click a slice to go there) and a "worst slice" button. Two Image
layers -> restoration: PSNR, SSIM, NMSE and MAE, an SSIM map and an
absolute-error map.

Editing either layer (painting, or new data) or moving along another axis
recomputes, debounced by :data:`DEBOUNCE_MS`. The overlap numbers of a small
volume are computed in the GUI thread (a few ms) so a correction shows its
Dice at once; big volumes, the surface distances and restoration run in worker
threads (:class:`~napari_medseg.gui.workers.JobRunner`), stale results dropped.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QWidget

from napari_medseg.core import metrics as M
from napari_medseg.gui import layers as L
from napari_medseg.gui import metrics_compute as C
from napari_medseg.gui import metrics_table as T
from napari_medseg.gui.metrics_plot import SliceCurvePlot
from napari_medseg.gui.metrics_slices import SlicesAndExportMixin
from napari_medseg.gui.metrics_ui import OUTPUT_KEY, MetricsControls
from napari_medseg.gui.workers import JobRunner, stop_on_close

DEBOUNCE_MS = 200
OVERLAP_COLORS = {None: "transparent", M.NONE: "transparent", M.TP: "#3cd070",
                  M.FP: "#ff4a4a", M.FN: "#3f8cff", M.WRONG_CLASS: "#ffd23f"}
ALL = "all labels"


class MetricsWidget(SlicesAndExportMixin, MetricsControls):
    """Dock widget: compare a prediction with a reference layer, live."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.runner = JobRunner("metrics")
        self.dist_runner = JobRunner("surface distances")
        stop_on_close(self, self.runner, napari_viewer)
        stop_on_close(self, self.dist_runner, napari_viewer)
        self.token = 0
        self.seg: C.OverlapPart | None = None
        self.dist: C.DistancePart | None = None
        self.restore: C.RestorationResult | None = None
        self.like: L.LayerArray | None = None
        self.overlay_layer: Any = None
        self.ssim_layer: Any = None
        self.error_layer: Any = None
        self.plot_dock: Any = None
        #: Output layers this widget hid when the inputs became unusable (shown again with
        #: the next result; the layers the user hid stay hidden).
        self._hidden: list[Any] = []
        self._wired: list[tuple[Any, Any]] = []
        self._rerun = {"fast": False, "dist": False}
        self._axis: int | None = None
        # Nothing is computed (and no layer added) until the user asks once: layers the user
        # adds to the viewer must not spawn overlays; after that the numbers follow edits.
        self.live = False
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self.recompute)
        self.plot = SliceCurvePlot()
        self.plot.slice_clicked.connect(self.go_to_slice)
        self._build_ui()
        self._connect_actions()
        ev = self.viewer.layers.events
        for e in (ev.inserted, ev.removed, ev.reordered):
            e.connect(self._layers_changed)
        self._rename_watch = L.LayerNameWatch(self.viewer, self._layer_renamed)
        self.viewer.dims.events.current_step.connect(self._on_step)
        self.viewer.dims.events.order.connect(self.schedule)
        self.viewer.dims.events.ndisplay.connect(self.schedule)
        self._layers_changed()
        self._say("Pick a prediction and a reference layer (two Labels layers, or two Image "
                  "layers) and press Compare.")

    def _connect_actions(self) -> None:
        self.sparse_check.toggled.connect(lambda *_: self.schedule())
        self.class_combo.currentIndexChanged.connect(lambda *_: self.schedule())
        self.nsd_spin.valueChanged.connect(lambda *_: self.schedule())
        self.compare_btn.clicked.connect(lambda: self.compare())
        self.worst_btn.clicked.connect(lambda: self.go_to_worst())
        self.csv_btn.clicked.connect(self._ask_csv)
        self.png_btn.clicked.connect(self._ask_png)

    # ------------------------------------------------------------ layers
    def set_layers(self, pred: str, ref: str) -> None:
        """Select the prediction and reference layers by name and compare them (live)."""
        self.pred_combo.setCurrentText(pred)
        self.ref_combo.setCurrentText(ref)
        self.live = True
        self._inputs_changed()

    def compare(self) -> None:
        """Compare the selected layers now and keep the results live from then on."""
        self.live = True
        self._timer.stop()
        self.recompute()

    def _inputs_changed(self, *_: Any) -> None:
        for emitter, cb in self._wired:
            try:
                emitter.disconnect(cb)
            except (TypeError, ValueError, RuntimeError):
                pass
        self._wired = []
        pair = self.inputs()
        if pair is not None:
            for layer in pair:
                # data: new array; paint: a stroke committed; labels_update: each dab of a stroke
                for name in ("data", "paint", "labels_update", "scale"):
                    em = getattr(layer.events, name, None)
                    if em is not None:
                        em.connect(self.schedule)
                        self._wired.append((em, self.schedule))
        self.schedule()

    # ------------------------------------------------------------ recompute
    def schedule(self, *_: Any) -> None:
        """Recompute after :data:`DEBOUNCE_MS` of quiet (edits and slider moves restart it),
        once the user has pressed Compare."""
        if self.live:
            self._timer.start()

    @property
    def busy(self) -> bool:
        return self._timer.isActive() or self.runner.busy or self.dist_runner.busy

    def _slice_axis(self, layer: Any) -> int | None:
        if layer.ndim < 3:
            return None
        ax = L.slider_axis(self.viewer, layer)
        return ax if ax is not None else (self._axis if self._axis is not None else 0)

    def recompute(self) -> None:
        """Recompute now for the selected layers (normally called by the debounce timer)."""
        pair = self.inputs()
        if pair is None:
            self._show_mode(None)
            return self._say("Pick a prediction and a reference layer (two Labels layers, or "
                             "two Image layers).")
        from napari.layers import Image, Labels

        pl, rl = pair
        if isinstance(pl, Labels) and isinstance(rl, Labels):
            mode = "segment"
        elif isinstance(pl, Image) and isinstance(rl, Image):
            mode = "restore"
        else:
            return self._refuse(f"'{pl.name}' is a {type(pl).__name__} layer and '{rl.name}' a "
                                f"{type(rl).__name__} layer; pick two Labels layers "
                                "(segmentation) or two Image layers (restoration).")
        if pl.data.shape != rl.data.shape:
            return self._refuse(f"'{pl.name}' {tuple(pl.data.shape)} and '{rl.name}' "
                                f"{tuple(rl.data.shape)} differ in shape; resample one onto the "
                                "other's grid.")
        off_grid = L.grid_problem(L.layer_to_array(pl, copy=False),
                                  L.layer_to_array(rl, copy=False))
        if off_grid:
            return self._refuse(off_grid)
        self._show_mode(mode)
        self.token += 1
        self._axis = self._slice_axis(rl)
        (self._recompute_segmentation if mode == "segment" else self._recompute_restoration)(
            pl, rl)

    def _refuse(self, text: str) -> None:
        """Unusable inputs: say why (in red) and take down the previous pair's results, so no
        number, overlay or export of another pair stays on show."""
        self.token += 1  # results of the previous pair still on their way are dropped
        self.seg = self.dist = self.restore = None
        self._show_mode(None)
        self._hide_outputs()
        self.plot.clear("no numbers for this pair (the Metrics panel says why)")
        self._say(text, error=True)

    def _hide_outputs(self) -> None:
        for attr in ("overlay_layer", "ssim_layer", "error_layer"):
            layer = getattr(self, attr)
            if layer is not None and layer in self.viewer.layers and layer.visible:
                layer.visible = False
                self._hidden.append(layer)

    def _job_failed(self, token: int, what: str, exc: BaseException, *,
                    clear: bool = True) -> None:
        """A worker job of recompute ``token`` raised: the reason in red on the status line
        (and, for the main numbers, nothing stale left on show)."""
        if token != self.token:
            return  # inputs changed since: a newer recompute speaks for them
        msg = f"{what} failed: {str(exc) or type(exc).__name__}"
        if clear:
            self._refuse(msg)
        else:
            self._say(msg, error=True)

    def _recompute_segmentation(self, pl: Any, rl: Any) -> None:
        big = int(np.prod(rl.data.shape)) > C.SYNC_MAX_VOXELS
        pa, ra = L.layer_to_array(pl, copy=big), L.layer_to_array(rl, copy=big)
        self.like = ra
        label = self.class_combo.currentData()
        if big:  # the worker gets copies: painting goes on meanwhile
            if self.runner.busy:
                self._rerun["fast"] = True
                self.runner.job.cancel()  # type: ignore[union-attr]
            else:
                self._say("computing Dice…")
                token = self.token
                self.runner.start(C.overlap_job(pa.data, ra.data, spacing=ra.spacing,
                                                axis=self._axis, map_label=label,
                                                token=token, sparse=self._sparse()),
                                  on_done=self._show_overlap, warm=False,
                                  on_error=lambda e: self._job_failed(token, "Dice", e),
                                  on_finished=lambda: self._after("fast"))
        else:
            self._show_overlap(C.overlap_part(pa.data, ra.data, spacing=ra.spacing,
                                              axis=self._axis, map_label=label,
                                              token=self.token, sparse=self._sparse()))
        self._start_distances(pa if big else L.layer_to_array(pl),
                              ra if big else L.layer_to_array(rl))

    def _start_distances(self, pa: L.LayerArray, ra: L.LayerArray) -> None:
        if self.dist_runner.busy:
            self._rerun["dist"] = True
            self.dist_runner.job.cancel()  # type: ignore[union-attr]
            return
        token = self.token  # the labels are found in the job: a full pass over both volumes
        self.dist_runner.start(C.distance_job(pa.data, ra.data, spacing=ra.spacing,
                                              tolerance_mm=self.nsd_spin.value(), token=token,
                                              sparse=self._sparse()),
                               on_done=self._show_distances, warm=False,
                               on_error=lambda e: self._job_failed(
                                   token, "Surface distances (HD95, NSD)", e, clear=False),
                               on_finished=lambda: self._after("dist"))

    def _sparse(self) -> bool:
        return self.sparse_check.isChecked()

    def _after(self, which: str) -> None:
        if self._rerun[which]:
            self._rerun[which] = False
            self.recompute()

    def _recompute_restoration(self, pl: Any, rl: Any) -> None:
        pa, ra = L.layer_to_array(pl), L.layer_to_array(rl)
        self.like = ra
        if self.runner.busy:
            self._rerun["fast"] = True
            self.runner.job.cancel()  # type: ignore[union-attr]
            return
        self._say("computing SSIM…")
        token = self.token
        self.runner.start(C.restoration_job(pa.data, ra.data, axis=self._axis, token=token),
                          on_done=self._show_restoration, warm=False,
                          on_error=lambda e: self._job_failed(token, "PSNR / SSIM", e),
                          on_finished=lambda: self._after("fast"))

    # ------------------------------------------------------------ results
    def _show_overlap(self, res: C.OverlapPart) -> None:
        if res.token != self.token:
            return  # an edit came since: its own result follows
        self.seg, self.restore = res, None
        self._sync_classes(res.labels)
        t = self.table
        t.setRowCount(len(res.labels))
        same = self.dist is not None and self.dist.report.get("dice", {}).keys() == \
            {str(v) for v in res.labels} and self.dist.token == res.token
        unit = M.unit_of(res.volume_diff)
        T.show_size_unit(t, unit)
        for i, v in enumerate(res.labels):
            vd = res.volume_diff[v]
            T.set_cell(t, i, 0, v, str(v))
            T.set_cell(t, i, T.COL["Dice"], res.volume_dice[v])
            if not same:
                for h in ("HD95 mm", "NSD"):
                    T.set_cell(t, i, T.COL[h], None, T.PENDING)
            T.set_cell(t, i, T.COL["Vol pred ml"], vd[f"pred_{unit}"])
            T.set_cell(t, i, T.COL["Vol ref ml"], vd[f"ref_{unit}"])
            diff = vd[f"diff_{unit}"]
            T.set_cell(t, i, T.COL["ΔV ml"], diff, f"{diff:+.3f}")
            rel = vd["relative"]
            T.set_cell(t, i, T.COL["ΔV %"], rel, T.fmt(None if rel is None else 100 * rel, 1))
        T.fit_height(t)
        self._update_overlay(res)
        self._update_plot()
        self._say(f"Dice updated in {1000 * res.seconds:.0f} ms"
                  + (f", {res.scored}" if res.scored else "")
                  + ("; surface distances…" if self.dist_runner.busy else "."))

    def _show_distances(self, res: C.DistancePart) -> None:
        if res.token != self.token or self.seg is None:
            return
        self.dist = res
        for i, v in enumerate(self.seg.labels):
            T.set_cell(self.table, i, T.COL["HD95 mm"], res.report["hd95_mm"].get(str(v)),
                       T.fmt(res.report["hd95_mm"].get(str(v)), 2))
            T.set_cell(self.table, i, T.COL["NSD"], res.report["nsd"].get(str(v)))
        scored = f", {self.seg.scored}" if self.seg.scored else ""
        took = f"{res.seconds:.2f} s" if res.seconds >= 0.01 else "under 0.01 s"
        self._say(f"Dice, HD95 and NSD (tolerance {res.tolerance_mm:g} mm) up to date"
                  f"{scored}; distances took {took}.")

    def _sync_classes(self, labels: tuple[int, ...]) -> None:
        have = [self.class_combo.itemData(i) for i in range(self.class_combo.count())]
        want = [None, *labels]
        if have == want:
            return
        cur = self.class_combo.currentData()
        self.class_combo.blockSignals(True)
        self.class_combo.clear()
        self.class_combo.addItem(ALL, None)
        for v in labels:
            self.class_combo.addItem(f"label {v}", v)
        self.class_combo.setCurrentIndex(max(0, want.index(cur)) if cur in want else 0)
        self.class_combo.blockSignals(False)

    def _output(self, attr: str, data: np.ndarray, name: str, kind: str, **kw: Any) -> Any:
        layer = getattr(self, attr)
        assert self.like is not None
        if layer is not None and layer in self.viewer.layers and layer.data.shape == data.shape:
            L.place_on(layer, self.like)  # the pair may have changed: its grid, not the old
            layer.data = data
            for k in ("contrast_limits",):
                if k in kw:
                    setattr(layer, k, kw[k])
            if layer in self._hidden:  # hidden by a refusal, not by the user
                layer.visible = True
            self._hidden = [h for h in self._hidden if h is not layer]
            return layer
        layer = L.add_array(self.viewer, data, self.like, name, kind=kind,
                            metadata={OUTPUT_KEY: True}, **kw)
        setattr(self, attr, layer)
        return layer

    def _update_overlay(self, res: C.OverlapPart) -> None:
        from napari.utils.colormaps import DirectLabelColormap

        layer = self._output("overlay_layer", res.overlap, "TP/FP/FN", "labels", opacity=0.7,
                             colormap=DirectLabelColormap(color_dict=OVERLAP_COLORS))
        layer.metadata[OUTPUT_KEY] = {"class": res.map_label, "codes": M.OVERLAP_NAMES}
        layer.visible = True

    def _show_restoration(self, res: C.RestorationResult) -> None:
        if res.token != self.token:
            return
        self.restore, self.seg = res, None
        for i, (_, key, _) in enumerate(T.RESTORE_ROWS):
            v = res.report[key]
            T.set_cell(self.restore_table, i, 1, v, T.fmt(v, 2 if key == "psnr" else 4))
        hi = float(np.percentile(res.abs_error, 99.5)) if res.abs_error.size else 1.0
        self._output("ssim_layer", res.ssim_map, "SSIM map", "image", colormap="magma",
                     contrast_limits=(0.0, 1.0), blending="translucent")
        self._output("error_layer", res.abs_error, "absolute error", "image",
                     colormap="inferno", contrast_limits=(0.0, hi if hi > 0 else 1.0),
                     blending="additive")
        self._update_plot()
        self._say(f"PSNR, SSIM ({res.win_size}-voxel window, data range "
                  f"{res.report['data_range']:g}) in {res.seconds:.2f} s.")

