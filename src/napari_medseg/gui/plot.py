"""A small live plot of training: loss per step and validation Dice per class.

Painted with QPainter (no matplotlib): two panels sharing the x axis (step).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QFont, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

PALETTE = ["#ff6e6e", "#59c1ff", "#ffd24d", "#7be07b", "#d08cff", "#ff9f43", "#45d6c6",
           "#f27ec0"]


def is_docked(widget: Any, dock: Any) -> bool:
    """Whether ``widget`` still sits in the dock panel ``dock``.

    Closing a panel with its X makes napari take the widget out (``setParent(None)``)
    and delete the dock (``deleteLater``): the old dock must never be touched again,
    and the widget goes in a new one.
    """
    if dock is None:
        return False
    try:
        w = widget
        while w is not None:
            if w is dock:
                return True
            w = w.parentWidget()
    except RuntimeError:  # "wrapped C/C++ object ... has been deleted"
        pass
    return False


class CurvePlot(QWidget):
    """Training loss (top) and validation Dice per class (bottom) against step."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumSize(260, 200)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.class_names: dict[int, str] = {}
        self.clear()

    def clear(self) -> None:
        self.loss: list[tuple[int, float]] = []
        self.dice: dict[int, list[tuple[int, float]]] = {}
        self.mean_dice: list[tuple[int, float]] = []
        self.marks: list[int] = []  # steps where a warm start began
        self.step_offset = 0
        self.update()

    def start_run(self, *, continued: bool) -> None:
        """A new training run: keep the curves when it continues the previous one."""
        if not continued:
            self.clear()
            return
        last = max([s for s, _ in self.loss] + [0])
        self.step_offset = last
        self.marks.append(last)
        self.update()

    def add_loss(self, step: int, loss: float) -> None:
        self.loss.append((step + self.step_offset, float(loss)))
        self.update()

    def add_dice(self, step: int, dice: dict[int, float | None], mean: float) -> None:
        for k, v in dice.items():
            if v is not None:
                self.dice.setdefault(int(k), []).append((step + self.step_offset, float(v)))
        self.mean_dice.append((step + self.step_offset, float(mean)))
        self.update()

    # ------------------------------------------------------------ painting
    def paintEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        p, fg, r1, r2 = begin_painting(self)
        h = self.height()
        left = r1.left()
        xs = [s for s, _ in self.loss] + [s for s, _ in self.mean_dice]
        x0, x1 = 0, max(xs + [1])
        lmax = max([v for _, v in self.loss] + [1e-3]) * 1.05
        draw_panel(p, r1, "training loss", fg, (0.0, lmax), x1)
        draw_panel(p, r2, "validation Dice", fg, (0.0, 1.0), x1)
        draw_line(p, r1, self.loss, QColor("#e0e0e0"), (0.0, lmax), x0, x1, dots=False)
        legend = []
        for i, (k, pts) in enumerate(sorted(self.dice.items())):
            col = QColor(PALETTE[i % len(PALETTE)])
            draw_line(p, r2, pts, col, (0.0, 1.0), x0, x1, dots=True)
            legend.append((self.class_names.get(k, f"label {k}"), col))
        if not self.loss:
            p.setPen(fg)
            p.drawText(r1, Qt.AlignmentFlag.AlignCenter, "press Train to see the curves")
        x = left
        for name, col in legend:
            p.setPen(col)
            p.drawText(QPointF(x, h - 4), name)
            x += p.fontMetrics().horizontalAdvance(name) + 12
        p.setPen(QPen(QColor("#aaaaaa"), 1, Qt.PenStyle.DashLine))
        for m in self.marks:
            for r in (r1, r2):
                xm = r.left() + (m - x0) / max(x1 - x0, 1) * r.width()
                p.drawLine(QPointF(xm, r.top()), QPointF(xm, r.bottom()))
        p.end()


def begin_painting(widget: QWidget) -> tuple[QPainter, QColor, QRectF, QRectF]:
    """Start painting ``widget`` as two stacked panels: the painter (antialiased, a slightly
    smaller font), the text colour, and the top and bottom panel rectangles."""
    p = QPainter(widget)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    pal = widget.palette()
    fg = pal.color(pal.ColorRole.WindowText)
    font = QFont(p.font())
    font.setPointSizeF(max(7.0, font.pointSizeF() * 0.9))
    p.setFont(font)
    w, h = widget.width(), widget.height()
    left, right, top, gap, bottom = 44, 10, 18, 26, 20
    ph = (h - top - gap - bottom) / 2
    r1 = QRectF(left, top, w - left - right, ph)
    r2 = QRectF(left, top + ph + gap, w - left - right, ph)
    return p, fg, r1, r2


def axis_text(v: float, fmt: str, fits: Callable[[str], bool]) -> str:
    """``v`` in ``fmt``, or in fewer digits until ``fits`` (the margin is narrow: a loss
    of 0.00105 in ".3g" was cut to ".00105")."""
    for f in (fmt, ".2g", ".1g"):
        text = format(v, f)
        if fits(text):
            return text
    return text


def draw_panel(p: QPainter, r: QRectF, title: str, fg: QColor, yr: tuple[float, float],
               x1: float, *, fmt: str = ".2g") -> None:
    """Frame, title, y range and last step of one panel."""
    p.setPen(QPen(QColor(fg.red(), fg.green(), fg.blue(), 90), 1))
    p.drawRect(r)
    p.setPen(fg)
    p.drawText(QPointF(r.left(), r.top() - 4), title)
    room = r.left() - 4
    for y, v in ((r.top() - 6, yr[1]), (r.bottom() - 8, yr[0])):
        p.drawText(QRectF(0, y, room, 14), Qt.AlignmentFlag.AlignRight,
                   axis_text(v, fmt, lambda t: p.fontMetrics().horizontalAdvance(t) <= room))
    p.drawText(QRectF(r.right() - 80, r.bottom() + 1, 80, 14), Qt.AlignmentFlag.AlignRight,
               f"step {int(x1)}")


def draw_line(p: QPainter, r: QRectF, pts: list[tuple[int, float]], col: QColor,
              yr: tuple[float, float], x0: float, x1: float, *, dots: bool,
              dashed: bool = False) -> None:
    """A curve of ``(step, value)`` points in panel ``r`` (values clipped to ``yr``)."""
    if not pts:
        return
    sx = r.width() / max(x1 - x0, 1)
    sy = r.height() / max(yr[1] - yr[0], 1e-9)
    poly = QPolygonF([QPointF(r.left() + (s - x0) * sx,
                              r.bottom() - (min(max(v, yr[0]), yr[1]) - yr[0]) * sy)
                      for s, v in pts])
    p.setPen(QPen(col, 1.6, Qt.PenStyle.DashLine if dashed else Qt.PenStyle.SolidLine))
    p.drawPolyline(poly)
    if dots:
        p.setBrush(col)
        for q in poly:
            p.drawEllipse(q, 2.5, 2.5)
        p.setBrush(Qt.BrushStyle.NoBrush)
