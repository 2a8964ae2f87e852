"""The Metrics widget's slice navigation (plot, current slice, worst slice) and exports.

A mixin of :class:`~napari_medseg.gui.metrics_widget.MetricsWidget`, kept apart
so each module holds one idea: this one maps between the per-slice curves and
the viewer's slider, and writes the CSV / PNG files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtWidgets import QFileDialog

from napari_medseg.core import metrics as M
from napari_medseg.gui import layers as L
from napari_medseg.gui.metrics_table import COL, set_cell
from napari_medseg.gui.plot import is_docked


class SlicesAndExportMixin:
    """Needs ``viewer``, ``plot``, ``table``, ``class_combo``, ``seg``, ``dist``,
    ``restore``, ``plot_dock``, ``_axis``, ``inputs()``, ``schedule()``,
    ``_slice_axis()`` and ``_say()`` from the widget."""

    viewer: Any
    plot: Any
    table: Any
    class_combo: Any
    seg: Any
    dist: Any
    restore: Any
    plot_dock: Any
    _axis: int | None

    # ------------------------------------------------------------ plot and slices
    def _ensure_plot_docked(self) -> None:
        if is_docked(self.plot, self.plot_dock):
            self.plot_dock.setVisible(True)
        else:  # never docked, or the user closed the panel
            self.plot_dock = self.viewer.window.add_dock_widget(
                self.plot, name="per-slice metrics", area="bottom")

    def _update_plot(self) -> None:
        if self.seg is not None and self.seg.slices is not None:
            sd = self.seg.slices
            self.plot.set_series([(f"label {v}", sd.dice[k]) for k, v in enumerate(sd.labels)],
                                 title=f"Dice per slice (axis {sd.axis})", y_range=(0.0, 1.0))
            self.plot.set_worst(M.worst_slice(sd, label=self.class_combo.currentData()))
        elif self.restore is not None and self.restore.per_slice is not None:
            self.plot.set_series([("PSNR dB", self.restore.per_slice["psnr"])],
                                 title=f"PSNR per slice (axis {self.restore.axis})")
            self.plot.set_worst(int(np.argmin(self.restore.per_slice["psnr"])))
        else:
            pair = self.inputs()
            if pair is not None and pair[1].ndim == 2:
                # A 2D image has no slices: no empty panel taking room from the canvas.
                if is_docked(self.plot, self.plot_dock):
                    self.plot_dock.setVisible(False)
                self._on_step()
                return
            self.plot.clear("no slices: the viewer shows 3D; switch to 2D display")
        self._ensure_plot_docked()
        self._on_step()

    def current_slice(self) -> int | None:
        pair, axis = self.inputs(), self._axis
        if pair is None or axis is None:
            return None
        return L.displayed_index(self.viewer, pair[1], axis)

    def _on_step(self, *_: Any) -> None:
        pair = self.inputs()
        if pair is not None and self._axis is not None and \
                self._slice_axis(pair[1]) != self._axis:
            self.schedule()  # the slider now moves along another axis: new per-slice curves
            return
        cur = self.current_slice()
        self.plot.set_current(cur)
        seg = self.seg
        if seg is None:
            return
        here = seg.slices.dice[:, cur] if seg.slices is not None and cur is not None else None
        for i in range(len(seg.labels)):
            v = None if here is None or np.isnan(here[i]) else float(here[i])
            set_cell(self.table, i, COL["Dice here"], v)

    def go_to_slice(self, index: int) -> None:
        """Show slice ``index`` (of the reference layer, along the plotted axis)."""
        pair, axis = self.inputs(), self._axis
        if pair is None or axis is None:
            return
        ref = pair[1]
        point = np.asarray(ref.world_to_data(self.viewer.dims.point[-ref.ndim:]), float)
        point[axis] = index
        world = np.asarray(ref.data_to_world(point), float)
        dim = axis + self.viewer.dims.ndim - ref.ndim
        self.viewer.dims.set_point(dim, float(world[axis]))

    def go_to_worst(self) -> int | None:
        """Move the viewer to the worst slice of the chosen class; returns it (None: none)."""
        if self.seg is None or self.seg.slices is None:
            self._say("No per-slice Dice yet: pick two 3D Labels layers in a 2D view.")
            return None
        w = M.worst_slice(self.seg.slices, label=self.class_combo.currentData())
        if w is None:
            self._say("Neither layer has this class on any slice.")
            return None
        self.go_to_slice(w)
        return w

    # ------------------------------------------------------------ export
    def export_csv(self, path: str | Path) -> Path:
        """Write the current numbers (volume rows, per-slice rows) as the CLI's CSV."""
        if self.seg is not None:
            rep = dict(self.dist.report) if self.dist is not None and \
                self.dist.token == self.seg.token else {}
            rep["dice"] = {str(v): d for v, d in self.seg.volume_dice.items()}
            rows = M.segmentation_rows(rep, volume_diff=self.seg.volume_diff,
                                       slices=self.seg.slices)
            return M.write_csv(path, rows,
                               M.segmentation_columns(M.unit_of(self.seg.volume_diff)))
        if self.restore is not None:
            rows = M.restoration_rows(self.restore.report, slices=self.restore.per_slice,
                                      axis=self.restore.axis)
            return M.write_csv(path, rows, M.RESTORATION_COLUMNS)
        raise ValueError("Nothing to export yet: pick a prediction and a reference layer and "
                         "wait for the numbers.")

    def export_png(self, path: str | Path) -> Path:
        """Write the per-slice plot as a PNG."""
        return self.plot.save_png(path)

    def _ask_csv(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export metrics", "metrics.csv", "CSV (*.csv)")
        if path:
            self._say(f"wrote {self.export_csv(path)}")

    def _ask_png(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export plot", "per_slice.png", "PNG (*.png)")
        if path:
            self._say(f"wrote {self.export_png(path)}")
