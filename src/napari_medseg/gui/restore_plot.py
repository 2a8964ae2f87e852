"""A small live plot of restoration training: loss per step, validation PSNR per epoch.

Painted with QPainter (no matplotlib), like :mod:`napari_medseg.gui.plot`,
whose Dice panel has a fixed 0..1 range that PSNR (dB) does not fit. The
bottom panel shows validation PSNR against the noisy input's PSNR (dashed: the
line to beat); without a clean reference (self-supervised training) it shows
the validation loss instead.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import QSizePolicy, QWidget

from napari_medseg.gui.plot import begin_painting, draw_line, draw_panel

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
        p, fg, r1, r2 = begin_painting(self)
        x1 = max([s for s, _ in self.loss] + [s for s, _ in self.psnr] + [1])
        lmax = max([v for _, v in self.loss] + [1e-3]) * 1.05
        draw_panel(p, r1, "training loss", fg, (0.0, lmax), x1, fmt=".3g")
        draw_line(p, r1, self.loss, QColor(LOSS_COLOR), (0.0, lmax), 0, x1, dots=False)
        if self.psnr:
            vals = [v for _, v in self.psnr + self.psnr_input]
            lo, hi = min(vals), max(vals)
            pad = max(0.5, 0.1 * (hi - lo))
            yr = (lo - pad, hi + pad)
            draw_panel(p, r2, "validation PSNR (dB); dashed: noisy input", fg, yr, x1,
                       fmt=".3g")
            # dots too: after one validation a line has a single point and would not show
            draw_line(p, r2, self.psnr_input, QColor(INPUT_COLOR), yr, 0, x1, dots=True,
                      dashed=True)
            draw_line(p, r2, self.psnr, QColor(PSNR_COLOR), yr, 0, x1, dots=True)
        else:
            vmax = max([v for _, v in self.val_loss] + [1e-3]) * 1.05
            # before the first validation nothing says which curve will come
            title = ("validation loss (no clean reference)" if self.val_loss
                     else "validation (after the first epoch)")
            draw_panel(p, r2, title, fg, (0.0, vmax), x1, fmt=".3g")
            draw_line(p, r2, self.val_loss, QColor(PSNR_COLOR), (0.0, vmax), 0, x1, dots=True)
        if not self.loss:
            p.setPen(fg)
            p.drawText(r1, Qt.AlignmentFlag.AlignCenter, "press Train to see the curves")
        p.end()
