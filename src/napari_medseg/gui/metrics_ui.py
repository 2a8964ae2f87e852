"""The metrics widget's form: the layer pickers, settings, buttons, tables and legend.

:class:`MetricsControls` builds them and keeps the prediction / reference pickers in
step with the viewer's layers (never offering this widget's own outputs);
:class:`~napari_medseg.gui.metrics_widget.MetricsWidget` wires the actions and
computes.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
)

from napari_medseg.gui import layers as L
from napari_medseg.gui import metrics_table as T
from napari_medseg.gui.widget_base import MedsegWidget, decimal_box

#: Marks this widget's output layers (never offered as inputs, never overwritten).
OUTPUT_KEY = "medseg_metrics"


class MetricsControls(MedsegWidget):
    """Builds the metrics form and keeps its layer pickers in step with the viewer.

    The subclass sets ``viewer`` and the output-layer attributes before
    :meth:`_build_ui`, wires the buttons and provides :meth:`_inputs_changed`.
    """

    viewer: Any
    overlay_layer: Any
    ssim_layer: Any
    error_layer: Any

    def _inputs_changed(self, *_: Any) -> None:
        """The pickers chose another pair: the widget re-wires and recomputes (it overrides
        this)."""
        raise NotImplementedError("MetricsWidget provides _inputs_changed")

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        lay = QVBoxLayout(self)
        form = QFormLayout()
        self.pred_combo, self.ref_combo = QComboBox(), QComboBox()
        self.pred_combo.setToolTip("The layer to score: Labels (segmentation) or Image "
                                   "(restoration).")
        self.ref_combo.setToolTip("The reference (ground truth) of the same kind and grid.")
        form.addRow("Prediction", self.pred_combo)
        form.addRow("Reference", self.ref_combo)
        self.class_combo = QComboBox()
        self.class_combo.setToolTip("Class of the TP/FP/FN overlay and of 'worst slice' "
                                    "(all labels: mean Dice of the labels on each slice).")
        form.addRow("Class", self.class_combo)
        self.nsd_spin = decimal_box(0.1, 50.0, 1.0, step=0.5, decimals=1, suffix=" mm")
        self.nsd_spin.setToolTip("Normalised surface Dice counts surface points within this "
                                 "distance of the other surface as agreeing (the tolerance a "
                                 "rater would accept, e.g. one or two voxels).")
        form.addRow("NSD tolerance", self.nsd_spin)
        self.sparse_check = QCheckBox("reference labels some slices only")
        self.sparse_check.setToolTip(
            "For a reference painted on a few slices (as for the training widget): score "
            "only the slices it labels, along the axis it looks painted along, and leave out "
            "its -1 voxels. Off: every voxel the reference leaves 0 is background.")
        form.addRow(self.sparse_check)
        lay.addLayout(form)
        for c in (self.pred_combo, self.ref_combo):
            c.currentIndexChanged.connect(self._inputs_changed)
        row = QHBoxLayout()
        self.compare_btn = QPushButton("Compare")
        self.compare_btn.setToolTip("Compute the metrics and add the overlay / maps; they then "
                                    "follow your edits and the displayed slice.")
        row.addWidget(self.compare_btn)
        self.worst_btn = QPushButton("Worst slice")
        self.worst_btn.setToolTip("Go to the slice with the lowest Dice (slices where neither "
                                  "mask has the class are skipped).")
        self.csv_btn, self.png_btn = QPushButton("Export CSV…"), QPushButton("Export plot…")
        for b in (self.worst_btn, self.csv_btn, self.png_btn):
            row.addWidget(b)
        lay.addLayout(row)
        self.add_status(lay)
        self.table = T.make_table(T.SEG_HEADERS)
        lay.addWidget(self.table)
        self.restore_table = T.make_table(["Metric", "Value"])
        self.restore_table.setRowCount(len(T.RESTORE_ROWS))
        for i, (name, _, unit) in enumerate(T.RESTORE_ROWS):
            T.set_cell(self.restore_table, i, 0, f"{name} {unit}".strip())
        T.fit_height(self.restore_table)
        lay.addWidget(self.restore_table)
        self.legend = QLabel("Overlay: <span style='color:#3cd070'>TP</span> · "
                             "<span style='color:#ff4a4a'>FP</span> · "
                             "<span style='color:#3f8cff'>FN</span> · "
                             "<span style='color:#ffd23f'>wrong class</span>")
        lay.addWidget(self.legend)
        lay.addStretch(1)
        self._show_mode(None)

    def _show_mode(self, mode: str | None) -> None:
        seg, rest = mode == "segment", mode == "restore"
        for w in (self.table, self.legend, self.class_combo, self.worst_btn):
            w.setVisible(seg)
        self.restore_table.setVisible(rest)
        self.csv_btn.setEnabled(mode is not None)
        self.png_btn.setEnabled(mode is not None)

    # ------------------------------------------------------------ layers
    def _candidates(self) -> list[Any]:
        from napari.layers import Image, Labels

        return [lay for lay in self.viewer.layers if isinstance(lay, (Image, Labels))
                and not getattr(lay, "rgb", False) and OUTPUT_KEY not in (lay.metadata or {})]

    def _layer_renamed(self, old: str, new: str) -> None:
        L.rename_in_pickers([self.pred_combo, self.ref_combo], old, new)
        self._layers_changed()

    def _layers_changed(self, *_: Any) -> None:
        names = [lay.name for lay in self._candidates()]
        old = (self.pred_combo.currentText(), self.ref_combo.currentText())
        for c in (self.pred_combo, self.ref_combo):
            c.blockSignals(True)
            c.clear()
            c.addItems(names)
        pred = old[0] if old[0] in names else next(
            (n for n in names if "pred" in n.lower()), names[0] if names else "")
        kinds = {lay.name: type(lay).__name__ for lay in self._candidates()}
        ref = old[1] if old[1] in names and old[1] != pred else next(
            (n for n in names if n != pred and kinds.get(n) == kinds.get(pred)), "")
        self.pred_combo.setCurrentText(pred)
        self.ref_combo.setCurrentText(ref)
        for c in (self.pred_combo, self.ref_combo):
            c.blockSignals(False)
        if (self.pred_combo.currentText(), self.ref_combo.currentText()) != old:
            self._inputs_changed()
        for attr in ("overlay_layer", "ssim_layer", "error_layer"):
            if getattr(self, attr) is not None and getattr(self, attr) not in self.viewer.layers:
                setattr(self, attr, None)  # the user deleted it: a new one comes next time

    def inputs(self) -> tuple[Any, Any] | None:
        names = {lay.name: lay for lay in self._candidates()}
        p, r = names.get(self.pred_combo.currentText()), names.get(self.ref_combo.currentText())
        return None if p is None or r is None or p is r else (p, r)
