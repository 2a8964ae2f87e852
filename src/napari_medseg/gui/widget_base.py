"""What every napari-medseg dock widget shares: the status line, the model box, the close
watcher, and the spin boxes and device picker of their forms."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QSize, Qt
from qtpy.QtWidgets import (
    QBoxLayout,
    QComboBox,
    QDoubleSpinBox,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLayout,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)


class InputError(ValueError):
    """Something the user can fix; shown in the widget, never as a traceback."""


def spin_box(lo: int, hi: int, value: int, *, prefix: str = "", suffix: str = "") -> QSpinBox:
    """An integer spin box with its range, start value and optional prefix/suffix text."""
    spin = QSpinBox()
    spin.setRange(lo, hi)
    spin.setValue(value)
    if prefix:
        spin.setPrefix(prefix)
    if suffix:
        spin.setSuffix(suffix)
    return spin


def decimal_box(lo: float, hi: float, value: float, *, step: float, decimals: int,
                suffix: str = "") -> QDoubleSpinBox:
    """A decimal spin box with its range, step, shown decimals, start value and suffix."""
    spin = QDoubleSpinBox()
    spin.setRange(lo, hi)
    spin.setSingleStep(step)
    spin.setDecimals(decimals)
    spin.setValue(value)
    if suffix:
        spin.setSuffix(suffix)
    return spin


def limit_row() -> tuple[QHBoxLayout, QDoubleSpinBox, QComboBox]:
    """The "Train for" row: a number (2 to start with) and its unit, minutes or epochs.

    Minutes take tenths (a 30 s trial run); epochs are whole. Read it with
    :func:`read_limit`.
    """
    row = QHBoxLayout()
    spin = QDoubleSpinBox()
    spin.setRange(0.1, 100000)
    spin.setValue(2)
    unit = QComboBox()
    unit.addItems(["minutes", "epochs"])

    def unit_changed(*_: Any) -> None:
        epochs = unit.currentText() == "epochs"
        spin.setDecimals(0 if epochs else 1)
        spin.setMinimum(1 if epochs else 0.1)
        spin.setSingleStep(1 if epochs else 0.5)

    unit.currentIndexChanged.connect(unit_changed)
    unit_changed()
    row.addWidget(spin)
    row.addWidget(unit)
    return row, spin, unit


def read_limit(spin: QDoubleSpinBox, unit: QComboBox) -> tuple[int | None, float | None]:
    """``(epochs, minutes)`` from the "Train for" row: one of them, the other None."""
    if unit.currentText() == "minutes":
        return None, float(spin.value())
    return max(1, int(round(spin.value()))), None


def button_row(parent: QBoxLayout, *buttons: tuple[str, str]) -> list[QPushButton]:
    """Add a row of push buttons, given as (text, tooltip), to ``parent``; return them."""
    row = QHBoxLayout()
    made = []
    for text, tip in buttons:
        btn = QPushButton(text)
        if tip:
            btn.setToolTip(tip)
        row.addWidget(btn)
        made.append(btn)
    parent.addLayout(row)
    return made


def device_combo() -> QComboBox:
    """The devices this machine can train and predict on, best first (see
    :func:`napari_medseg.core.engine.available_devices`)."""
    from napari_medseg.core.engine import available_devices

    combo = QComboBox()
    combo.addItems(available_devices())
    return combo


class _FitWidthScroll(QScrollArea):
    """Scrolls vertically only and asks the dock for its content's full width.

    The width is asked for at layout time, once napari's style sheet has sized the
    controls (a width fixed while building them came out too narrow and clipped them).
    """

    def _extra(self) -> int:
        return self.verticalScrollBar().sizeHint().width() + 2 * self.frameWidth()

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt API
        inner = self.widget()
        if inner is None:
            return super().minimumSizeHint()
        return QSize(inner.minimumSizeHint().width() + self._extra(), 120)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        inner = self.widget()
        if inner is None:
            return super().sizeHint()
        hint = inner.sizeHint()
        return QSize(hint.width() + self._extra(), hint.height())


class MedsegWidget(QWidget):
    """Base for the dock widgets; subclasses add the status line with :meth:`add_status`."""

    def scrolling_layout(self) -> tuple[QVBoxLayout, QVBoxLayout]:
        """The layout to build the form in, inside a vertical scroll area, and the widget's
        own layout below it, for what must stay in view (buttons, progress, status).

        The forms are taller than a laptop screen's dock, more so once a plot panel opens
        below the canvas; without scrolling Qt squashes their rows until the text is cut.
        """
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = _FitWidthScroll()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        inner = QWidget()
        lay = QVBoxLayout(inner)
        scroll.setWidget(inner)
        outer.addWidget(scroll, 1)
        return lay, outer

    def add_status(self, lay: QLayout) -> QLabel:
        """Add the status line (``self.status``: wrapped, selectable text) to ``lay``, and
        above it ``self.progress_bar``, hidden until a job shows it
        (:class:`~napari_medseg.gui.job_controls.ProgressBarOwner`)."""
        self.progress_bar = QProgressBar()
        self.progress_bar.setTextVisible(True)
        self.progress_bar.hide()
        lay.addWidget(self.progress_bar)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.status)
        return self.status

    def add_model_box(self, lay: QLayout) -> QGroupBox:
        """Add the "Model" box: ``self.model_label`` (what the current model is) and
        ``self.save_btn`` / ``self.load_btn``."""
        box = QGroupBox("Model")
        inner = QVBoxLayout(box)
        self.model_label = QLabel("No model yet: train one or load a file.")
        self.model_label.setWordWrap(True)
        inner.addWidget(self.model_label)
        self.save_btn, self.load_btn = button_row(inner, ("Save model…", ""),
                                                  ("Load model…", ""))
        lay.addWidget(box)
        return box

    def showEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        super().showEvent(event)
        # Installed by gui/workers.py once the widget sits in a viewer window.
        install = getattr(self, "_medseg_install_close_watcher", None)
        if install:
            install()

    def _say(self, text: str, *, error: bool = False) -> None:
        """Show a message (in red for errors) in the widget instead of a dialog."""
        self.status.setStyleSheet("color: #ff7070;" if error else "")
        self.status.setText(text)
