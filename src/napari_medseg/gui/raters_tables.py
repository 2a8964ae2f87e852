"""The Raters widget's summary line, pairwise-Dice heat map and rater table (Qt only)."""

from __future__ import annotations

import math

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import QHeaderView, QTableWidget, QTableWidgetItem

from napari_medseg.gui.raters_compare import RaterComparison

#: viridis at 0, 0.25, 0.5, 0.75, 1 -- the heat map's scale (Dice 0 .. 1).
_VIRIDIS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]],
                    float)


def heat_color(value: float | None) -> QColor:
    """Heat-map colour of a Dice value in [0, 1]; grey when undefined."""
    if value is None or not math.isfinite(value):
        return QColor(90, 90, 90)
    x = min(max(float(value), 0.0), 1.0) * (len(_VIRIDIS) - 1)
    i = min(int(x), len(_VIRIDIS) - 2)
    rgb = _VIRIDIS[i] + (x - i) * (_VIRIDIS[i + 1] - _VIRIDIS[i])
    return QColor(*(int(round(c)) for c in rgb))


def _text_color(bg: QColor) -> QColor:
    lum = 0.299 * bg.red() + 0.587 * bg.green() + 0.114 * bg.blue()
    return QColor(0, 0, 0) if lum > 140 else QColor(255, 255, 255)


def _fmt(v: float | None, digits: int = 3) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def _fit_height(table: QTableWidget, *, max_rows: int) -> None:
    """Make a table exactly as tall as its rows (up to ``max_rows``; it scrolls beyond)."""
    table.resizeRowsToContents()
    rows = sum(table.rowHeight(i) for i in range(min(table.rowCount(), max_rows)))
    header = table.horizontalHeader().sizeHint().height() if table.horizontalHeader().isVisible() \
        else 0
    scroll = table.horizontalScrollBar().sizeHint().height() \
        if table.horizontalScrollBar().isVisible() else 0
    table.setFixedHeight(header + rows + 2 * table.frameWidth() + scroll + 2)


def summary_text(res: RaterComparison) -> str:
    """The line above the tables: raters, voxels, labels, Fleiss' kappa, disagreement, STAPLE."""
    rep = res.report
    n = len(res.names)
    fk = rep.get("fleiss_kappa")
    parts = [f"{n} raters, {rep['n_voxels']:,} voxels, labels {rep['labels']}",
             f"Fleiss' kappa {_fmt(fk)}",
             f"raters disagree on {100 * rep['disagreement_fraction']:.2f}% of the voxels",
             f"STAPLE: {rep['iterations']} EM iterations"
             + ("" if rep["staple"]["converged"] else " (did not converge)")]
    notes = rep.get("notes") or []
    return "; ".join(parts) + "." + ("\n" + "\n".join(notes) if notes else "")


def fill_heatmap(hm: QTableWidget, res: RaterComparison) -> None:
    """Fill ``hm`` with the pairwise Dice matrix, one viridis cell per pair of raters."""
    n = len(res.names)
    hm.clear()
    hm.setRowCount(n)
    hm.setColumnCount(n)
    hm.setHorizontalHeaderLabels([str(j + 1) for j in range(n)])
    hm.setVerticalHeaderLabels([f"{j + 1} {nm}" for j, nm in enumerate(res.names)])
    for i in range(n):
        for j in range(n):
            v = res.pairwise[i, j]
            it = QTableWidgetItem(_fmt(v, 2))
            bg = heat_color(None if not math.isfinite(v) else v)
            it.setBackground(QBrush(bg))
            it.setForeground(QBrush(_text_color(bg)))
            it.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
            it.setToolTip(f"{res.names[i]} vs {res.names[j]}: Dice {_fmt(v)}")
            it.setData(Qt.ItemDataRole.UserRole, None if not math.isfinite(v) else float(v))
            hm.setItem(i, j, it)
    hm.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
    hm.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    _fit_height(hm, max_rows=10)


def fill_rater_table(tb: QTableWidget, res: RaterComparison) -> None:
    """Fill ``tb`` with a row per rater: STAPLE sensitivity, specificity, Dice to consensus."""
    rep = res.report
    n = len(res.names)
    tb.clearContents()
    tb.setRowCount(n)
    per_label = not rep["binary"]
    st = rep["staple"]
    for j, nm in enumerate(res.names):
        d = rep["dice_to_consensus"][j]
        # specificity sits near 1 for small structures: 3 decimals made raters look alike
        cells = [nm, _fmt(res.sensitivity[j]), _fmt(res.specificity[j], 4), _fmt(d)]
        for c, text in enumerate(cells):
            it = QTableWidgetItem(text)
            if c:
                it.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            if per_label:
                it.setToolTip(f"{nm}: per label " + ", ".join(
                    f"{lab}: sens {st['sensitivity'][j][k]:.3f} spec "
                    f"{st['specificity'][j][k]:.4f}"
                    for k, lab in enumerate(st["labels"]) if lab != 0))
            elif c == 0:
                it.setToolTip(nm)  # the column elides long names
            tb.setItem(j, c, it)
    _fit_height(tb, max_rows=10)
