"""What every napari-medseg dock widget shares: the status line and the close watcher."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QWidget


class MedsegWidget(QWidget):
    """Base for the dock widgets; subclasses create ``self.status`` (a QLabel)."""

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
