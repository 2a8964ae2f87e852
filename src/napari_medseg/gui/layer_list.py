"""A list of layer names with a check box each: the channel and rater pickers of the widgets.

The training and prediction widgets pick their input channels, the raters widget its
raters, from a :class:`CheckableLayerList`: it is refilled when the viewer's layers
change, keeping what the user had checked, and read back as the checked names in the
list's order.
"""

from __future__ import annotations

from collections.abc import Container, Iterable

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QListWidget, QListWidgetItem, QWidget


class CheckableLayerList(QListWidget):
    """A :class:`QListWidget` of layer names, each with a check box.

    Parameters
    ----------
    max_height : int
        Maximum height in pixels (it scrolls beyond).
    tooltip : str
        Tooltip of the whole list.
    parent : QWidget, optional
    """

    def __init__(self, *, max_height: int, tooltip: str = "",
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMaximumHeight(max_height)
        if tooltip:
            self.setToolTip(tooltip)

    def names(self) -> list[str]:
        """Every name in the list, in order."""
        return [self.item(i).text() for i in range(self.count())]

    def checked(self) -> list[str]:
        """The checked names, in the list's order."""
        out = []
        for i in range(self.count()):
            it = self.item(i)
            if it.checkState() == Qt.CheckState.Checked:
                out.append(it.text())
        return out

    def check_only(self, names: Container[str]) -> None:
        """Check exactly the items named in ``names``, uncheck the others."""
        for i in range(self.count()):
            it = self.item(i)
            it.setCheckState(Qt.CheckState.Checked if it.text() in names
                             else Qt.CheckState.Unchecked)

    def refill(self, names: Iterable[str], checked: Container[str], *,
               quiet: bool = False) -> None:
        """Replace the items by ``names``; those in ``checked`` come checked.

        Parameters
        ----------
        names : iterable of str
            The layer names, in display order.
        checked : container of str
            Names to check.
        quiet : bool
            Block the list's signals (``itemChanged``) while refilling.
        """
        if quiet:
            self.blockSignals(True)
        self.clear()
        for name in names:
            it = QListWidgetItem(name)
            it.setFlags(it.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            it.setCheckState(Qt.CheckState.Checked if name in checked
                             else Qt.CheckState.Unchecked)
            self.addItem(it)
        if quiet:
            self.blockSignals(False)
