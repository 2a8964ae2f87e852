"""The Metrics widget's tables: segmentation per class, restoration readout (Qt only)."""

from __future__ import annotations

import math
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

SEG_HEADERS = ["Label", "Dice", "Dice here", "HD95 mm", "NSD", "Vol pred ml", "Vol ref ml",
               "ΔV ml", "ΔV %"]
SEG_TIPS = {
    "Dice": "Dice over the whole volume",
    "Dice here": "Dice on the slice the viewer shows ('-': the label is in neither mask there)",
    "HD95 mm": "95th-percentile Hausdorff distance of the surfaces, in mm (layer scale)",
    "NSD": "normalised surface Dice at the tolerance in mm",
    "ΔV ml": "volume of the prediction minus the reference's",
    "ΔV %": "volume difference relative to the reference",
}
#: Column of each value in the segmentation table.
COL = {h: i for i, h in enumerate(SEG_HEADERS)}
#: The size columns' headers for volumes ("ml") and for 2D images' areas ("mm2").
SIZE_HEADERS = {
    "ml": {"Vol pred ml": "Vol pred ml", "Vol ref ml": "Vol ref ml", "ΔV ml": "ΔV ml",
           "ΔV %": "ΔV %"},
    "mm2": {"Vol pred ml": "Area pred mm²", "Vol ref ml": "Area ref mm²", "ΔV ml": "ΔA mm²",
            "ΔV %": "ΔA %"},
}


def show_size_unit(t: QTableWidget, unit: str) -> None:
    """Title the size columns for volumes in ml or, in a 2D image, areas in mm²."""
    for key, text in SIZE_HEADERS[unit].items():
        item = t.horizontalHeaderItem(COL[key])
        if item is not None and item.text() != text:
            item.setText(text)
RESTORE_ROWS = [("PSNR", "psnr", "dB"), ("SSIM", "ssim", ""), ("NMSE", "nmse", ""),
                ("MAE", "mae", "")]
PENDING = "…"


def fmt(v: float | None, digits: int = 3) -> str:
    """A table cell: '-' for undefined, 'inf' for infinite."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if math.isinf(v):
        return "inf"
    return f"{v:.{digits}f}"


def make_table(columns: list[str]) -> QTableWidget:
    t = QTableWidget(0, len(columns))
    t.setHorizontalHeaderLabels(columns)
    for c, h in enumerate(columns):
        if h in SEG_TIPS:
            t.horizontalHeaderItem(c).setToolTip(SEG_TIPS[h])
    t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    t.verticalHeader().setVisible(False)
    t.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    t.horizontalHeader().setStretchLastSection(True)
    return t


def set_cell(t: QTableWidget, row: int, col: int, value: Any, text: str | None = None) -> None:
    """Put ``value`` (kept in UserRole for tests and export) shown as ``text``."""
    it = t.item(row, col)
    if it is None:
        it = QTableWidgetItem()
        if col:
            it.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        t.setItem(row, col, it)
    it.setText(text if text is not None else (fmt(value) if not isinstance(value, str)
                                               else value))
    it.setData(Qt.ItemDataRole.UserRole, value)


def cell_value(t: QTableWidget, row: int, col: int) -> Any:
    it = t.item(row, col)
    return None if it is None else it.data(Qt.ItemDataRole.UserRole)


def fit_height(t: QTableWidget, max_rows: int = 8) -> None:
    """As tall as its rows (up to ``max_rows``) plus the horizontal scroll bar, if any."""
    t.resizeColumnsToContents()
    t.resizeRowsToContents()
    n = min(t.rowCount(), max_rows)
    rows = sum(max(t.rowHeight(i), t.verticalHeader().defaultSectionSize()) for i in range(n))
    cols = sum(t.columnWidth(c) for c in range(t.columnCount()))
    # The dock is narrower than the columns when it is first laid out: keep room for the bar.
    scroll = t.horizontalScrollBar().sizeHint().height() if cols > t.viewport().width() else 0
    t.setFixedHeight(t.horizontalHeader().sizeHint().height() + rows + 2 * t.frameWidth()
                     + scroll + 4)
