"""A small live plot of restoration training: loss per step, validation PSNR per epoch.

Painted with QPainter (no matplotlib), like :mod:`napari_medseg.gui.plot`,
whose Dice panel has a fixed 0..1 range that PSNR (dB) does not fit. The
bottom panel shows validation PSNR against the noisy input's PSNR (dashed: the
line to beat); without a clean reference (self-supervised training) it shows
the validation loss instead.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QFont, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

LOSS_COLOR = "#e0e0e0"
PSNR_COLOR = "#59c1ff"
INPUT_COLOR = "#ffd24d"


class RestorePlot(QWidget):
    """Training loss (top) and validation PSNR or loss (bottom) against step."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumSize(240, 170)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.clear()

    def clear(self) -> None:
        self.loss: list[tuple[int, float]] = []
        self.psnr: list[tuple[int, float]] = []
        self.psnr_input: list[tuple[int, float]] = []
        self.val_loss: list[tuple[int, float]] = []
        self.update()

    def add_loss(self, step: int, loss: float) -> None:
        self.loss.append((int(step), float(loss)))
        self.update()

    def add_validation(self, step: int, *, psnr: float | None, psnr_input: float | None,
                       loss: float | None) -> None:
        """One validation: PSNR of the restored and of the input image (dB), and the loss."""
        if psnr is not None:
            self.psnr.append((int(step), float(psnr)))
        if psnr_input is not None:
            self.psnr_input.append((int(step), float(psnr_input)))
        if loss is not None:
            self.val_loss.append((int(step), float(loss)))
        self.update()

    # ------------------------------------------------------------ painting
    def paintEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        fg = self.palette().color(self.palette().ColorRole.WindowText)
        font = QFont(p.font())
        font.setPointSizeF(max(7.0, font.pointSizeF() * 0.9))
        p.setFont(font)
        w, h = self.width(), self.height()
        left, right, top, gap, bottom = 44, 10, 16, 24, 18
        ph = (h - top - gap - bottom) / 2
        r1 = QRectF(left, top, w - left - right, ph)
        r2 = QRectF(left, top + ph + gap, w - left - right, ph)
        x1 = max([s for s, _ in self.loss] + [s for s, _ in self.psnr] + [1])
        lmax = max([v for _, v in self.loss] + [1e-3]) * 1.05
        self._panel(p, r1, "training loss", fg, (0.0, lmax), x1)
        self._line(p, r1, self.loss, QColor(LOSS_COLOR), (0.0, lmax), x1, dots=False)
        if self.psnr:
            vals = [v for _, v in self.psnr + self.psnr_input]
            lo, hi = min(vals), max(vals)
            pad = max(0.5, 0.1 * (hi - lo))
            yr = (lo - pad, hi + pad)
            self._panel(p, r2, "validation PSNR (dB); dashed: noisy input", fg, yr, x1)
            self._line(p, r2, self.psnr_input, QColor(INPUT_COLOR), yr, x1, dots=False,
                       dashed=True)
            self._line(p, r2, self.psnr, QColor(PSNR_COLOR), yr, x1, dots=True)
        else:
            vmax = max([v for _, v in self.val_loss] + [1e-3]) * 1.05
            self._panel(p, r2, "validation loss (no clean reference)", fg, (0.0, vmax), x1)
            self._line(p, r2, self.val_loss, QColor(PSNR_COLOR), (0.0, vmax), x1, dots=True)
        if not self.loss:
            p.setPen(fg)
            p.drawText(r1, Qt.AlignmentFlag.AlignCenter, "press Train to see the curves")
        p.end()

    @staticmethod
    def _panel(p: QPainter, r: QRectF, title: str, fg: QColor, yr: tuple[float, float],
               x1: float) -> None:
        p.setPen(QPen(QColor(fg.red(), fg.green(), fg.blue(), 90), 1))
        p.drawRect(r)
        p.setPen(fg)
        p.drawText(QPointF(r.left(), r.top() - 4), title)
        p.drawText(QRectF(0, r.top() - 6, r.left() - 4, 14), Qt.AlignmentFlag.AlignRight,
                   f"{yr[1]:.3g}")
        p.drawText(QRectF(0, r.bottom() - 8, r.left() - 4, 14), Qt.AlignmentFlag.AlignRight,
                   f"{yr[0]:.3g}")
        p.drawText(QRectF(r.right() - 80, r.bottom() + 1, 80, 14), Qt.AlignmentFlag.AlignRight,
                   f"step {int(x1)}")

    @staticmethod
    def _line(p: QPainter, r: QRectF, pts: list[tuple[int, float]], col: QColor,
              yr: tuple[float, float], x1: float, *, dots: bool, dashed: bool = False) -> None:
        if not pts:
            return
        sx = r.width() / max(x1, 1)
        sy = r.height() / max(yr[1] - yr[0], 1e-9)
        poly = QPolygonF([QPointF(r.left() + s * sx,
                                  r.bottom() - (min(max(v, yr[0]), yr[1]) - yr[0]) * sy)
                          for s, v in pts])
        p.setPen(QPen(col, 1.6, Qt.PenStyle.DashLine if dashed else Qt.PenStyle.SolidLine))
        p.drawPolyline(poly)
        if dots:
            p.setBrush(col)
            for q in poly:
                p.drawEllipse(q, 2.5, 2.5)
            p.setBrush(Qt.BrushStyle.NoBrush)
