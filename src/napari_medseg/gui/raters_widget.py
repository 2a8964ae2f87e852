"""Raters widget: several people's Labels layers of one image -> agreement and consensus.

The user checks N Labels layers (the rater's name is the layer's name) and
presses Compare. In a worker thread (:mod:`napari_medseg.gui.workers`) the core
(:mod:`napari_medseg.core.raters`) reduces the raters to their vote patterns
once and computes the pairwise Dice, Fleiss' kappa, STAPLE (each rater's
sensitivity and specificity, the soft consensus) or the majority vote, the
vote fraction, the vote entropy and the disagreement map. Back in the GUI
thread the widget shows the pairwise Dice matrix as a heat map and a table of
the raters, and adds new layers placed exactly on the raters (scale,
translate, affine): the consensus, the STAPLE probability, the vote fraction,
the entropy and a disagreement overlay. Clicking a rater (a table row or a
heat-map row) shows where that rater departs from the consensus: voxels it
marks that the consensus leaves out (red), voxels of the consensus it misses
(blue), and a different structure (yellow, multi-label raters).

The worker's computation is in :mod:`napari_medseg.gui.raters_compare`, the
summary, heat map and rater table in :mod:`napari_medseg.gui.raters_tables`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QWidget,
)

from napari_medseg.gui import layers as L
from napari_medseg.gui.layer_list import CheckableLayerList
from napari_medseg.gui.raters_compare import (
    AGREE,
    EXTRA,
    MAJORITY,
    MISSED,
    OTHER,
    STAPLE,
    RaterComparison,
    compare_raters,
)
from napari_medseg.gui.raters_tables import fill_heatmap, fill_rater_table, summary_text
from napari_medseg.gui.widget_base import InputError, MedsegWidget
from napari_medseg.gui.workers import JobRunner, stop_on_close

DEVIATION_COLORS = {None: "transparent", AGREE: "transparent", EXTRA: "#ff4040",
                    MISSED: "#4090ff", OTHER: "#ffd040"}
DEVIATION_WORDS = {EXTRA: "marked beyond the consensus (red)",
                   MISSED: "consensus missed (blue)", OTHER: "another structure (yellow)"}
#: Marks this widget's output layers (they are not offered as raters by default).
OUTPUT_KEY = "medseg_raters"


class RatersWidget(MedsegWidget):
    """Dock widget: compare raters' Labels layers, fuse them, show where each departs."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.runner = JobRunner("rater comparison")
        stop_on_close(self, self.runner, napari_viewer)
        self.result: RaterComparison | None = None
        self.like: L.LayerArray | None = None
        self.last_layers: list[Any] = []
        self.highlight_layer: Any = None
        self.highlighted: int | None = None
        self._pending: list[Callable[[], Any]] = []
        self._seen: set[str] = set()
        self._build_ui()
        ev = self.viewer.layers.events
        ev.inserted.connect(self._layers_changed)
        ev.removed.connect(self._layers_changed)
        ev.reordered.connect(self._layers_changed)
        self._rename_watch = L.LayerNameWatch(self.viewer, self._layer_renamed)
        self._layers_changed()

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        lay, _ = self.scrolling_layout()  # ten raters make the tables taller than a dock
        form = QFormLayout()
        self.rater_list = CheckableLayerList(
            max_height=110, tooltip="Labels layers to compare, one per rater (the layer name is "
                                    "the rater's name). All must share one image grid.")
        form.addRow("Raters", self.rater_list)
        self.method_combo = QComboBox()
        self.method_combo.addItems([STAPLE, MAJORITY])
        self.method_combo.setToolTip(
            "Consensus: STAPLE weighs each rater by its estimated sensitivity and specificity "
            "(EM); majority vote counts votes, ties go to the lower label (background wins).")
        form.addRow("Consensus", self.method_combo)
        lay.addLayout(form)
        row = QHBoxLayout()
        self.compare_btn = QPushButton("Compare")
        self.compare_btn.clicked.connect(lambda: self.compare())
        row.addWidget(self.compare_btn)
        lay.addLayout(row)
        self.add_status(lay)

        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        lay.addWidget(self.summary)
        lay.addWidget(QLabel("Pairwise Dice"))
        self.heatmap = QTableWidget(0, 0)
        self.heatmap.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.heatmap.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.heatmap.setToolTip("Dice of each pair of raters (1 = identical). Click a row to "
                                "see where that rater departs from the consensus.")
        self.heatmap.cellClicked.connect(lambda r, _c: self.highlight(r))
        self.heatmap.verticalHeader().sectionClicked.connect(self.highlight)
        lay.addWidget(self.heatmap)
        lay.addWidget(QLabel("Raters against the consensus (click one)"))
        self.rater_table = QTableWidget(0, 4)
        self.rater_table.setHorizontalHeaderLabels(
            ["Rater", "Sensitivity", "Specificity", "Dice"])
        self.rater_table.horizontalHeaderItem(3).setToolTip("Dice of the rater's labels and the "
                                                            "consensus")
        self.rater_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.rater_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.rater_table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.rater_table.verticalHeader().setVisible(False)
        # Numbers fit their columns; the name column takes the rest and elides long names
        # (sized to its contents it pushed the Dice column off the dock, under a scroll bar).
        head = self.rater_table.horizontalHeader()
        head.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        head.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        head.setStretchLastSection(False)
        self.rater_table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.rater_table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.rater_table.setToolTip("STAPLE's estimate of each rater's sensitivity and "
                                    "specificity; click a rater to highlight where it departs "
                                    "from the consensus.")
        self.rater_table.cellClicked.connect(lambda r, _c: self.highlight(r))
        lay.addWidget(self.rater_table)
        self.highlight_label = QLabel("")
        self.highlight_label.setWordWrap(True)
        lay.addWidget(self.highlight_label)
        lay.addStretch(1)

    def _set_running(self, running: bool) -> None:
        self.compare_btn.setEnabled(not running)

    # ------------------------------------------------------------ layers
    def _layer_renamed(self, old: str, new: str) -> None:
        L.rename_in_pickers([self.rater_list], old, new)
        self._seen = {new if n == old else n for n in self._seen}
        self._layers_changed()

    def _layers_changed(self, *_: Any) -> None:
        checked = set(self.checked_raters())
        layers = L.labels_layers(self.viewer)
        for layer in layers:  # a new layer named like a rater is checked when it appears
            if layer.name not in self._seen and OUTPUT_KEY not in (layer.metadata or {}) and \
                    "rater" in layer.name.lower():
                checked.add(layer.name)
        self._seen = {lay.name for lay in layers}
        self.rater_list.refill([lay.name for lay in layers], checked)
        if self.highlight_layer is not None and self.highlight_layer not in self.viewer.layers:
            self.highlight_layer = None  # the user deleted it: the next click adds a new one

    def checked_raters(self) -> list[str]:
        """The checked Labels layers, in the list's order."""
        return self.rater_list.checked()

    def set_raters(self, names: Sequence[str]) -> None:
        """Check exactly these Labels layers as raters."""
        self.rater_list.check_only(names)

    def collect_inputs(self) -> list[L.LayerArray]:
        """The checked layers as arrays; :class:`InputError` with the reason when unusable."""
        names = self.checked_raters()
        if len(names) < 2:
            raise InputError(f"Check at least two Labels layers, one per rater; {len(names)} "
                             "checked.")
        arrs = [L.layer_to_array(L.get_layer(self.viewer, n)) for n in names]
        for a in arrs[1:]:
            problem = L.grid_problem(arrs[0], a, "Raters")
            if problem:
                raise InputError(problem)
        return arrs

    # ------------------------------------------------------------ compare
    def compare(self) -> bool:
        """Start the comparison in a worker; False (with a message) when refused."""
        if self.runner.busy or self._pending:
            self._say("A comparison is already running; wait for it to finish.")
            self.runner.notify_busy()
            return False
        try:
            arrs = self.collect_inputs()
        except InputError as exc:
            self._say(str(exc), error=True)
            return False
        method = self.method_combo.currentText()
        arrays = [a.data for a in arrs]
        names = [a.name for a in arrs]
        like = arrs[0]

        def factory(should_stop: Any) -> Any:
            return compare_raters(arrays, names, method=method)

        job = self.runner.start(factory, on_event=self._on_event,
                                on_done=lambda res: self._on_done(res, like),
                                on_error=lambda e: self._say(f"Comparison failed: {e}",
                                                             error=True),
                                on_finished=self._on_finished, warm=False)
        if job is None:
            return False
        self._set_running(True)
        self._say(f"Comparing {len(names)} raters ({method})…")
        return True

    @property
    def busy(self) -> bool:
        """A comparison runs, or its layers are still being added."""
        return self.runner.busy or bool(self._pending)

    def _on_event(self, ev: Any) -> None:
        from napari_medseg.core.events import Message

        if isinstance(ev, Message):
            self._say(ev.text[:1].upper() + ev.text[1:] + "…")

    def _on_finished(self) -> None:
        self._set_running(self.busy)

    def _on_done(self, res: RaterComparison, like: L.LayerArray) -> None:
        self.result, self.like = res, like
        self.highlighted = None
        self._show_tables(res)
        # The previous run's layers stay (the user may have edited the consensus) but are
        # hidden: shown under the new ones they looked current, and the highlight was stale.
        for layer in [*self.last_layers, self.highlight_layer]:
            if layer is not None and layer in self.viewer.layers:
                layer.visible = False
        self.last_layers = []
        # One layer per turn of the event loop: creating a napari layer costs tens to hundreds
        # of ms of GUI-thread time (visuals, shaders); five at once would freeze the viewer.
        meta = {OUTPUT_KEY: {"raters": list(res.names), "method": res.method}}
        tag = "STAPLE" if res.method == STAPLE else "majority"
        n = len(res.names)
        hmax = max(math.log2(max(2, min(n, len(res.report["labels"])))), 1e-3)
        self._pending = [
            lambda: L.add_array(self.viewer, res.consensus, like, f"consensus ({tag})",
                                kind="labels", opacity=0.6, metadata=meta),
            lambda: L.add_array(self.viewer, res.probability, like, "STAPLE probability",
                                colormap="viridis", contrast_limits=(0.0, 1.0), visible=False,
                                metadata=meta),
            lambda: L.add_array(self.viewer, res.fraction, like, "vote fraction",
                                colormap="viridis", contrast_limits=(0.0, 1.0), visible=False,
                                metadata=meta),
            lambda: L.add_array(self.viewer, res.entropy, like, "vote entropy",
                                colormap="magma", contrast_limits=(0.0, hmax), visible=False,
                                metadata=meta),
            lambda: L.add_array(self.viewer, res.disagreement, like, "rater disagreement",
                                kind="labels", opacity=0.7, metadata=meta,
                                colormap={None: "transparent", 0: "transparent",
                                          1: "#ff9f1c"}),
        ]
        self._set_running(True)
        QTimer.singleShot(0, self._add_next)

    def _add_next(self) -> None:
        if not self._pending:
            return
        make = self._pending.pop(0)
        try:
            self.last_layers.append(make())
        except Exception as exc:  # noqa: BLE001 - the viewer closed, a layer failed: say so
            self._pending.clear()
            self._say(f"Could not add the result layers: {exc}", error=True)
        if self._pending:
            QTimer.singleShot(0, self._add_next)
            return
        self._set_running(self.runner.busy)
        res = self.result
        if res is not None and len(self.last_layers) == 5:
            self._say(f"Added '{self.last_layers[0].name}', the STAPLE probability, vote "
                      "fraction, vote entropy and disagreement layers. Click a rater to see "
                      "where it departs from the consensus.")

    def _show_tables(self, res: RaterComparison) -> None:
        self.summary.setText(summary_text(res))
        fill_heatmap(self.heatmap, res)
        fill_rater_table(self.rater_table, res)
        self.highlight_label.setText("")

    # ------------------------------------------------------------ highlight
    def highlight(self, index: int) -> Any:
        """Show where rater ``index`` departs from the consensus (a Labels layer)."""
        res, like = self.result, self.like
        if res is None or like is None or not 0 <= index < len(res.names):
            return None
        name = res.names[index]
        data = res.deviation[index]
        title = f"{name} vs consensus"
        layer = self.highlight_layer
        if layer is not None and layer in self.viewer.layers and \
                L.grid_problem(L.layer_to_array(layer, copy=False), like) is None:
            layer.data = data
            if layer.name != title:
                layer.name = L.unique_name(self.viewer, title)
        else:
            layer = L.add_array(self.viewer, data, like, title, kind="labels", opacity=0.8,
                                colormap=DEVIATION_COLORS,
                                metadata={OUTPUT_KEY: {"raters": list(res.names),
                                                       "highlight": name}})
            self.highlight_layer = layer
        layer.metadata[OUTPUT_KEY] = {"raters": list(res.names), "highlight": name}
        layer.visible = True
        self.highlighted = index
        self.rater_table.selectRow(index)
        counts = res.deviation_counts[index]
        parts = [f"{int(counts[k]):,} {DEVIATION_WORDS[k]}" for k in (EXTRA, MISSED, OTHER)
                 if k != OTHER or counts[OTHER]]
        self.highlight_label.setText(f"'{name}' against the consensus: " + ", ".join(parts)
                                     + ".")
        return layer
