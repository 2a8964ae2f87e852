"""Models known to one viewer: trained in a widget or loaded from files, one store per task.

The training and prediction widgets share the viewer's segmentation store, so a
model just trained is offered for prediction at once; the restoration widget
has its own store (``task="restore"``). A store holds models of its task only:
a restoration model loaded in the prediction widget (or a segmentation model
in the restoration widget) is refused with a message that says where it
belongs, and never appears in the other widgets' model lists.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

from qtpy.QtCore import QObject, Signal

#: Task of a checkpoint -> how people call such a model, and where it is used.
TASKS = {
    "segment": ("a segmentation model", "the training / prediction widgets or "
                "`napari-medseg predict`"),
    "restore": ("a restoration model", "the Restoration widget or `napari-medseg restore`"),
}


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


def check_task(checkpoint: Any, task: str, source: str = "This model") -> None:
    """Raise ``ValueError`` when ``checkpoint`` is not a model of ``task``.

    The message says what was expected, what came, and where the model can be used.
    """
    got = str(getattr(checkpoint, "task", "segment"))
    if got == task:
        return
    want_words = TASKS.get(task, (f"a {task!r} model", ""))[0]
    got_words, where = TASKS.get(got, (f"a {got!r} model", "the widget made for it"))
    raise ValueError(f"{source} is {got_words}, but {want_words} is needed here; "
                     f"use it in {where}.")


class ModelStore(QObject):
    """Named models of one ``task``; emits ``changed`` when one is added.

    Parameters
    ----------
    task : str
        Checkpoint task the store accepts (``"segment"`` or ``"restore"``).
    """

    changed = Signal()

    def __init__(self, task: str = "segment") -> None:
        super().__init__()
        self.task = task
        self.models: dict[str, StoredModel] = {}

    def add(self, entry: StoredModel) -> str:
        """Add ``entry`` under a unique name; ``ValueError`` for a model of another task."""
        check_task(entry.checkpoint, self.task, f"'{entry.name}'")
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
        file raises the checkpoint loader's ``ValueError``, and so does a model
        of another task than the store's.
        """
        from pathlib import Path

        from qtpy.QtWidgets import QFileDialog

        from napari_medseg.core.checkpoint import load_checkpoint

        if path is None:
            path, _ = QFileDialog.getOpenFileName(parent, "Load model", "",
                                                  "napari-medseg model (*.pt);;All files (*)")
            if not path:
                return None
        ckpt = load_checkpoint(path)
        check_task(ckpt, self.task, str(path))
        entry = StoredModel(Path(path).name, ckpt, None, str(path))
        self.add(entry)
        return entry

    def latest(self) -> StoredModel | None:
        return next(reversed(self.models.values()), None) if self.models else None


_stores: weakref.WeakKeyDictionary[Any, dict[str, ModelStore]] = weakref.WeakKeyDictionary()


def store_for(viewer: Any, task: str = "segment") -> ModelStore:
    """The viewer's model store for ``task`` (created on first use)."""
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not one of {', '.join(TASKS)}.")
    per_task = _stores.setdefault(viewer, {})
    if task not in per_task:
        per_task[task] = ModelStore(task)
    return per_task[task]


class ModelLoading:
    """Load model logic, shared by the widgets that take model files.

    The widget provides ``store`` (its :class:`ModelStore`) and ``_say`` (its
    status line, from :class:`~napari_medseg.gui.widget_base.MedsegWidget`);
    it may override :meth:`_model_loaded` to show the model.
    """

    store: ModelStore

    def load_model(self, path: str | None = None) -> StoredModel | None:
        """Load a model file of this widget's task (asked for when ``path`` is None); a
        foreign, corrupt or other-task file is refused on the status line."""
        try:
            entry = self.store.load_file(self, path)
        except (ValueError, FileNotFoundError) as exc:
            self._say(str(exc), error=True)  # type: ignore[attr-defined]
            return None
        if entry is None:
            return None
        self._model_loaded(entry)
        return entry

    def _model_loaded(self, entry: StoredModel) -> None:
        self._say(f"Loaded {entry.path}.")  # type: ignore[attr-defined]


class ModelFiles(ModelLoading):
    """Save / Load model logic for the widgets that also hold a ``current`` model
    (:class:`StoredModel` or None) to save."""

    current: StoredModel | None
    #: file dialog title and suggested file name of Save
    save_title = "Save model"
    save_default = "model.pt"

    def save_model(self, path: str | None = None) -> str | None:
        """Write the current model to ``path`` (asked for when None); the path written, or
        None when nothing was saved (the reason is on the status line)."""
        from qtpy.QtWidgets import QFileDialog

        from napari_medseg.core.checkpoint import save_checkpoint

        say = self._say  # type: ignore[attr-defined]
        if self.current is None:
            say("No model to save: train or load one first.", error=True)
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, self.save_title, self.save_default,
                                                  "napari-medseg model (*.pt)")
            if not path:
                return None
        try:
            out = save_checkpoint(path, self.current.checkpoint)
        except OSError as exc:
            say(f"Could not save the model to {path}: {exc}", error=True)
            return None
        self.current.path = out
        say(f"Saved {out}")
        return out
