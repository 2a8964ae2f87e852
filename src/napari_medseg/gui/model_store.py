"""Models known to one viewer: trained in the training widget or loaded from files.

The training and prediction widgets share one store per viewer, so a model
just trained is offered for prediction at once.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

from qtpy.QtCore import QObject, Signal


@dataclass
class StoredModel:
    """A checkpoint, its network (built lazily) and where it came from."""

    name: str
    checkpoint: Any  # napari_medseg.core.checkpoint.Checkpoint
    model: Any = None  # torch.nn.Module or None (built from the checkpoint when needed)
    path: str | None = None

    def network(self) -> Any:
        if self.model is None:
            self.model = self.checkpoint.build_model()
        return self.model


class ModelStore(QObject):
    """Named models; emits ``changed`` when one is added."""

    changed = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.models: dict[str, StoredModel] = {}

    def add(self, entry: StoredModel) -> str:
        base, k = entry.name, 2
        while entry.name in self.models:
            entry.name = f"{base} [{k}]"
            k += 1
        self.models[entry.name] = entry
        self.changed.emit()
        return entry.name

    def load_file(self, parent: Any = None, path: str | None = None) -> StoredModel | None:
        """Load a model file (asking with a file dialog when ``path`` is None) and add it.

        Returns None when the user cancels the dialog; a foreign or damaged
        file raises the checkpoint loader's ``ValueError``.
        """
        from pathlib import Path

        from qtpy.QtWidgets import QFileDialog

        from napari_medseg.core.checkpoint import load_checkpoint

        if path is None:
            path, _ = QFileDialog.getOpenFileName(parent, "Load model", "",
                                                  "napari-medseg model (*.pt);;All files (*)")
            if not path:
                return None
        entry = StoredModel(Path(path).name, load_checkpoint(path), None, str(path))
        self.add(entry)
        return entry

    def latest(self) -> StoredModel | None:
        return next(reversed(self.models.values()), None) if self.models else None


_stores: weakref.WeakKeyDictionary[Any, ModelStore] = weakref.WeakKeyDictionary()


def store_for(viewer: Any) -> ModelStore:
    """The viewer's model store (created on first use)."""
    try:
        return _stores[viewer]
    except KeyError:
        s = _stores[viewer] = ModelStore()
        return s
