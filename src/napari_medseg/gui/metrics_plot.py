"""Per-slice metric curves painted with QPainter; a click picks a slice.

One panel: x is the slice index along the viewed axis, y the metric (Dice in
[0, 1], or PSNR with a range fitted to the data). Each class is a line, broken
where its value is undefined (NaN: the class is in neither mask of that
slice). A vertical line marks the viewer's current slice and a ring the worst
slice. Clicking (or dragging) anywhere in the panel emits
:attr:`SliceCurvePlot.slice_clicked` with the nearest slice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QPointF, QRectF, QSize, Qt, Signal
from qtpy.QtGui import QColor, QFont, QImage, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

from napari_medseg.gui.plot import PALETTE

#: Panel margins in pixels (left, top, right, bottom): room for the axis labels.
MARGINS = (40, 20, 12, 22)


class SliceCurvePlot(QWidget):
    """Curves of a metric against the slice index; click to go to a slice."""

    slice_clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumSize(260, 140)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMouseTracking(False)
        self.setToolTip("Click a slice to show it in the viewer.")
        self.series: list[tuple[str, np.ndarray]] = []
        self.title = "per-slice Dice"
        self.y_range = (0.0, 1.0)
        self.n_slices = 0
        self.current: int | None = None
        self.worst: int | None = None
        self.message = "pick a prediction and a reference layer"

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(520, 190)

    # ------------------------------------------------------------ data
    def set_series(self, series: Sequence[tuple[str, np.ndarray]], *, title: str,
                   y_range: tuple[float, float] | None = None) -> None:
        """Show ``series`` (name, values per slice; NaN = undefined), all of one length."""
        self.series = [(n, np.asarray(v, float)) for n, v in series]
        self.n_slices = max((len(v) for _, v in self.series), default=0)
        self.title = title
        if y_range is None:
            vals = np.concatenate([v[np.isfinite(v)] for _, v in self.series] or [np.zeros(0)])
            lo, hi = (float(vals.min()), float(vals.max())) if vals.size else (0.0, 1.0)
            pad = 0.05 * (hi - lo) or 1.0
            y_range = (lo - pad, hi + pad)
        self.y_range = y_range
        self.message = "" if self.n_slices else "no slices: a 2D image or a 3D view"
        self.update()

    def clear(self, message: str = "") -> None:
        self.series, self.n_slices, self.worst = [], 0, None
        self.message = message
        self.update()

    def set_current(self, index: int | None) -> None:
        self.current = index
        self.update()

    def set_worst(self, index: int | None) -> None:
        self.worst = index
        self.update()

    # ------------------------------------------------------------ geometry
    def panel(self, width: int | None = None, height: int | None = None) -> QRectF:
        w = self.width() if width is None else width
        h = self.height() if height is None else height
        left, top, right, bottom = MARGINS
        return QRectF(left, top, max(w - left - right, 1), max(h - top - bottom, 1))

    def x_of(self, index: int) -> float:
        """Widget x coordinate of slice ``index`` (slices sit at cell centres)."""
        r = self.panel()
        n = max(self.n_slices, 1)
        return r.left() + (index + 0.5) * r.width() / n

    def slice_at(self, x: float) -> int | None:
        """The slice under widget x coordinate ``x`` (clamped), None when empty."""
        if not self.n_slices:
            return None
        r = self.panel()
        i = int(math.floor((x - r.left()) / r.width() * self.n_slices))
        return min(max(i, 0), self.n_slices - 1)

    # ------------------------------------------------------------ events
    def mousePressEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        self._pick(event)

    def mouseMoveEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        if event.buttons() & Qt.MouseButton.LeftButton:
            self._pick(event)

    def _pick(self, event: Any) -> None:
        if event.buttons() & Qt.MouseButton.LeftButton or \
                event.button() == Qt.MouseButton.LeftButton:
            i = self.slice_at(event.position().x())
            if i is not None and i != self.current:
                self.slice_clicked.emit(i)

    def paintEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        try:
            self._paint(p, self.width(), self.height())
        finally:
            p.end()

    def save_png(self, path: str | Path, size: tuple[int, int] = (900, 320)) -> Path:
        """Render the plot at ``size`` (pixels) into a PNG file, dark background."""
        img = QImage(size[0], size[1], QImage.Format.Format_ARGB32)
        img.fill(QColor("#262930"))
        p = QPainter(img)
        try:
            self._paint(p, size[0], size[1], fg=QColor("#f0f1f2"))
        finally:
            p.end()
        path = Path(path)
        if not img.save(str(path), "PNG"):
            raise OSError(f"could not write the PNG {path}; check the folder exists and is "
                          "writable.")
        return path

    # ------------------------------------------------------------ painting
    def _paint(self, p: QPainter, w: int, h: int, *, fg: QColor | None = None) -> None:
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        if fg is None:
            pal = self.palette()
            fg = pal.color(pal.ColorRole.WindowText)
        font = QFont(p.font())
        font.setPointSizeF(max(7.0, font.pointSizeF() * 0.9))
        p.setFont(font)
        r = self.panel(w, h)
        p.setPen(QPen(QColor(fg.red(), fg.green(), fg.blue(), 90), 1))
        p.drawRect(r)
        p.setPen(fg)
        p.drawText(QPointF(r.left(), r.top() - 5), self.title)
        lo, hi = self.y_range
        for val, y in ((hi, r.top()), (lo, r.bottom())):
            p.drawText(QRectF(0, y - 7, r.left() - 4, 14), Qt.AlignmentFlag.AlignRight,
                       f"{val:.3g}")
        n = self.n_slices
        if not n:
            p.drawText(r, Qt.AlignmentFlag.AlignCenter, self.message)
            return
        p.drawText(QRectF(r.left(), r.bottom() + 2, 60, 14), Qt.AlignmentFlag.AlignLeft, "0")
        p.drawText(QRectF(r.right() - 120, r.bottom() + 2, 120, 14),
                   Qt.AlignmentFlag.AlignRight, f"slice {n - 1}")
        sx = r.width() / n
        sy = r.height() / max(hi - lo, 1e-12)

        def pt(i: int, v: float) -> QPointF:
            return QPointF(r.left() + (i + 0.5) * sx, r.bottom() - (min(max(v, lo), hi) - lo) * sy)

        legend_x = r.left() + p.fontMetrics().horizontalAdvance(self.title) + 14
        for k, (name, vals) in enumerate(self.series):
            col = QColor(PALETTE[k % len(PALETTE)])
            p.setPen(QPen(col, 1.6))
            run: list[QPointF] = []
            for i, v in enumerate(vals.tolist()):
                if math.isfinite(v):
                    run.append(pt(i, v))
                    continue
                self._flush(p, run, col)
                run = []
            self._flush(p, run, col)
            p.setPen(col)
            p.drawText(QPointF(legend_x, r.top() - 5), name)
            legend_x += p.fontMetrics().horizontalAdvance(name) + 12
        if self.worst is not None and 0 <= self.worst < n:
            p.setPen(QPen(QColor("#ff5050"), 2))
            p.setBrush(Qt.BrushStyle.NoBrush)
            vals = [v[self.worst] for _, v in self.series if math.isfinite(v[self.worst])]
            y = pt(self.worst, min(vals)).y() if vals else r.bottom()
            p.drawEllipse(QPointF(r.left() + (self.worst + 0.5) * sx, y), 5, 5)
        if self.current is not None and 0 <= self.current < n:
            p.setPen(QPen(QColor("#ffd24d"), 1.2, Qt.PenStyle.DashLine))
            x = r.left() + (self.current + 0.5) * sx
            p.drawLine(QPointF(x, r.top()), QPointF(x, r.bottom()))

    @staticmethod
    def _flush(p: QPainter, run: list[QPointF], col: QColor) -> None:
        if len(run) > 1:
            p.drawPolyline(QPolygonF(run))
        elif run:  # an isolated defined slice: a dot, or it would not show
            p.setBrush(col)
            p.drawEllipse(run[0], 1.8, 1.8)
            p.setBrush(Qt.BrushStyle.NoBrush)
