"""The prediction widget's form: its controls, and how they follow the model, layers and view.

:class:`PredictControls` builds the controls (model, channels, slice axis, mode,
options, buttons), keeps the channel list in step with the layers and offers only
the modes that mean something for the input, the model and the view (a 2D image is
predicted whole; the slice preview needs a 2D view showing a slice of the input).
:class:`~napari_medseg.gui.predict_widget.PredictWidget` adds the actions (load,
predict, cancel) and the result layers on top.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
)

from napari_medseg.gui import layers as L
from napari_medseg.gui.layer_list import CheckableLayerList
from napari_medseg.gui.model_store import ModelStore, StoredModel
from napari_medseg.gui.widget_base import MedsegWidget, button_row, device_combo

WHOLE, SLICE, WHOLE_IMAGE = "whole volume", "displayed slice (preview)", "whole image"


class PredictControls(MedsegWidget):
    """Builds the prediction form and keeps it in step with the models, layers and view.

    The subclass sets ``viewer`` and ``store`` before :meth:`_build_ui`, then wires
    the buttons and the viewer's events.
    """

    viewer: Any
    store: ModelStore
    _order: list[str]

    def _build_ui(self) -> None:
        lay = QVBoxLayout(self)
        form = QFormLayout()
        row = QHBoxLayout()
        self.model_combo = QComboBox()
        self.model_combo.currentIndexChanged.connect(lambda *_: self._model_selected())
        self.load_btn = QPushButton("Load…")
        row.addWidget(self.model_combo, 1)
        row.addWidget(self.load_btn)
        form.addRow("Model", row)
        self.model_label = QLabel("")
        self.model_label.setWordWrap(True)
        form.addRow(self.model_label)
        self.channel_list = CheckableLayerList(max_height=90)
        form.addRow("Channels", self.channel_list)
        self.axis_label = QLabel("Slice axis")
        self.axis_combo = QComboBox()
        self.axis_combo.addItems([f"axis {a}" for a in range(3)])
        self.axis_combo.setToolTip(
            "A 2D model on a 3D layer predicts it slice by slice along this axis: the axis the "
            "model was trained to slice along (for a model trained on volumes), or the axis "
            "the viewer's slider moves along (for a model trained on 2D images).")
        self._axis_chosen = False  # the user picked an axis: stop following the defaults
        self._slicing = False  # a 2D model and a 3D input: the slice axis applies
        self._axis_key: tuple[str, str | None] = ("", None)  # (model, input) of that choice
        self.axis_combo.activated.connect(self._axis_activated)
        form.addRow(self.axis_label, self.axis_combo)
        self.mode_combo = QComboBox()
        self.mode_combo.addItems([WHOLE, SLICE])
        form.addRow("Predict", self.mode_combo)
        self.tta_check = QCheckBox("test-time augmentation (mirroring: 4-8x slower)")
        # On, as in `napari-medseg predict`: one model gives the same labels in both.
        self.tta_check.setChecked(True)
        self.tta_check.setToolTip("The mean of the predictions of every mirroring of the input "
                                  "(4 in 2D, 8 in 3D). Untick for a quick look.")
        form.addRow(self.tta_check)
        self.largest_check = QCheckBox("keep the largest connected region only")
        self.largest_check.setToolTip(
            "Set every foreground region but the largest to background (all labels together; "
            "for one tumour or organ: it deletes all but one of several lesions). Whole "
            "predictions only: a slice of one region can look like several. Probabilities stay "
            "as predicted.")
        form.addRow(self.largest_check)
        self.device_combo = device_combo()
        form.addRow("Device", self.device_combo)
        lay.addLayout(form)
        self.predict_btn, self.cancel_btn = button_row(lay, ("Predict", ""), ("Cancel", ""))
        self.add_status(lay)
        lay.addStretch(1)
        self._set_running(False)

    def _set_running(self, running: bool) -> None:
        self.predict_btn.setEnabled(not running)
        self.cancel_btn.setEnabled(running)
        self.load_btn.setEnabled(not running)

    # ------------------------------------------------------------ models / layers
    def _models_changed(self) -> None:
        names = list(self.store.models)
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        self.model_combo.addItems(names)
        if names:
            self.model_combo.setCurrentIndex(len(names) - 1)  # the newest
        self.model_combo.blockSignals(False)
        self._model_selected()

    def selected_model(self) -> StoredModel | None:
        return self.store.models.get(self.model_combo.currentText())

    def _model_selected(self) -> None:
        m = self.selected_model()
        self.model_label.setText(m.checkpoint.describe() if m else
                                 "No model: train one in the training widget, or Load… a file.")
        if m is not None:
            self._check_defaults(m)
        self._refresh()

    def _check_defaults(self, m: StoredModel) -> None:
        """Check the layers named like the model's channels, else the first ones."""
        want = list(m.checkpoint.channel_names)
        n = m.checkpoint.model_config.in_channels
        names = self.channel_list.names()
        pick = want if want and all(w in names for w in want) else names[:n]
        self.channel_list.check_only(pick)

    def _layer_renamed(self, old: str, new: str) -> None:
        L.rename_in_pickers([self.channel_list], old, new)
        order = getattr(self, "_order", None)
        if order:
            self._order = [new if n == old else n for n in order]
        self._layers_changed()

    def _layers_changed(self, *_: Any) -> None:
        checked = set(self.checked_channels())
        names = [lay.name for lay in L.image_layers(self.viewer, inputs_only=True)]
        self.channel_list.refill(names, checked)
        m = self.selected_model()
        if m is not None and not checked:
            self._check_defaults(m)
        self._refresh()

    def checked_channels(self) -> list[str]:
        """The checked Image layers, in the list's order."""
        return self.channel_list.checked()

    def set_channels(self, names: list[str]) -> None:
        """Check these layers as input channels, in the model's channel order."""
        self.channel_list.check_only(names)
        self._order = list(names)
        self._refresh()

    # ------------------------------------------------------------ slice axis / mode
    def _input_layer(self) -> Any | None:
        """The first checked layer (its grid is the input's), or None."""
        names = self.checked_channels()
        if not names:
            return None
        try:
            return L.get_layer(self.viewer, names[0])
        except ValueError:  # gone meanwhile: the list refreshes on the same event
            return None

    def _axis_activated(self, *_: Any) -> None:
        self._axis_chosen = True
        self._refresh_mode()

    def slice_axis(self) -> int | None:
        """The axis a 2D model slices the checked 3D layer along; None for other cases."""
        return self.axis_combo.currentIndex() if self._slicing else None

    def _default_axis(self, m: StoredModel, layer: Any) -> int:
        """The model's training axis if it learnt from volumes, else the viewer's slider's."""
        from napari_medseg.core.pipeline import trained_on_volumes

        tc = m.checkpoint.train_config
        if trained_on_volumes(m.checkpoint) is not False:  # volumes, or it does not say
            return tc.slice_axis
        shown = L.slider_axis(self.viewer, layer)
        return tc.slice_axis if shown is None else shown

    def _refresh(self, *_: Any) -> None:
        """Show the slice axis where it applies, with its default, then the modes (on a new
        model, input or view)."""
        m, layer = self.selected_model(), self._input_layer()
        key = (self.model_combo.currentText(), None if layer is None else layer.name)
        if key != self._axis_key:  # another model or input: the slice axis's default again
            self._axis_key, self._axis_chosen = key, False
        slicing = (m is not None and layer is not None
                   and m.checkpoint.model_config.spatial_dims == 2 and layer.ndim == 3)
        self._slicing = slicing
        self.axis_label.setVisible(slicing)
        self.axis_combo.setVisible(slicing)
        if slicing and not self._axis_chosen:
            assert m is not None
            self.axis_combo.setCurrentIndex(self._default_axis(m, layer))
        self._refresh_mode()

    def preview_problem(self, m: StoredModel | None = None) -> str | None:
        """Why "displayed slice (preview)" cannot predict the slice the viewer shows, or None."""
        m = m or self.selected_model()
        layer = self._input_layer()
        if m is None or layer is None or layer.ndim != 3:
            return None
        if self.viewer.dims.ndisplay != 2:
            return ("The viewer shows 3D: there is no displayed slice to preview. Switch to 2D "
                    "display, or predict the whole volume.")
        shown = L.slider_axis(self.viewer, layer)
        if shown is None:
            return f"The viewer shows no slice of '{layer.name}'; predict the whole volume."
        axis = self.slice_axis()
        if m.checkpoint.model_config.spatial_dims == 2 and axis is not None and axis != shown:
            return (f"The model slices along axis {axis}; the viewer's slider moves along axis "
                    f"{shown}: choose slice axis {shown}, or roll the viewer's dims so that the "
                    f"slider moves along axis {axis}.")
        return None

    def _refresh_mode(self) -> None:
        """The prediction modes that mean something for this input, model and view."""
        layer = self._input_layer()
        flat = layer is not None and layer.ndim == 2
        items = [WHOLE_IMAGE] if flat else [WHOLE, SLICE]
        current = self.mode_combo.currentText()
        self.mode_combo.blockSignals(True)
        if [self.mode_combo.itemText(i) for i in range(self.mode_combo.count())] != items:
            self.mode_combo.clear()
            self.mode_combo.addItems(items)
        self.mode_combo.setEnabled(not flat)
        problem = None if flat else self.preview_problem()
        if not flat:
            item = self.mode_combo.model().item(1)
            item.setEnabled(problem is None)
            item.setToolTip(problem or "Predict only the slice the viewer shows; the image is "
                            "normalised whole, as for the whole volume.")
        keep = current in items and not (current == SLICE and problem is not None)
        self.mode_combo.setCurrentText(current if keep else items[0])
        self.mode_combo.setToolTip("A 2D image is predicted whole." if flat else (problem or ""))
        self.mode_combo.blockSignals(False)
