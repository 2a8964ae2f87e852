"""The training widget's form: its controls, and how they follow the viewer's layers.

:class:`TrainControls` builds the controls (data, settings, buttons, model box), keeps
the channel list and the labels picker in step with the layers, shows the label
statistics and fills data-derived defaults (2D/3D, patch, batch).
:class:`~napari_medseg.gui.train_widget.TrainWidget` adds the actions (train, stop,
save, load) on top.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QVBoxLayout,
)

from napari_medseg.core.config import INTENSITY_NORMS
from napari_medseg.gui import layers as L
from napari_medseg.gui.layer_list import CheckableLayerList
from napari_medseg.gui.model_store import StoredModel
from napari_medseg.gui.train_inputs import (
    LabelStats,
    default_patch,
    label_stats,
    painted_axis_hint,
    sparse_target,
)
from napari_medseg.gui.widget_base import (
    InputError,
    MedsegWidget,
    button_row,
    decimal_box,
    device_combo,
    limit_row,
    spin_box,
)


class TrainControls(MedsegWidget):
    """Builds the training form and keeps it in step with the layers.

    The subclass sets ``viewer`` and ``current`` before :meth:`_build_ui`, then
    ``_stats_timer`` and ``_watched`` before the first :meth:`_layers_changed`, and
    wires the action buttons.
    """

    viewer: Any
    current: StoredModel | None
    _watched: Any
    _stats_timer: QTimer

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        lay, outer = self.scrolling_layout()  # the form scrolls; actions and progress stay
        pinned = QVBoxLayout()
        pinned.setContentsMargins(9, 0, 9, 6)
        outer.addLayout(pinned)
        data = QGroupBox("Data")
        form = QFormLayout(data)
        self.channel_list = CheckableLayerList(
            max_height=90, tooltip="Image layers used as input channels, in this order.")
        form.addRow("Channels", self.channel_list)
        self.labels_combo = QComboBox()
        self.labels_combo.currentIndexChanged.connect(lambda *_: self._labels_changed())
        form.addRow("Labels", self.labels_combo)
        self.axis_combo = QComboBox()
        self.axis_combo.addItems(["axis 0", "axis 1", "axis 2"])
        self.axis_combo.setToolTip(
            "3D volumes: the axis you painted slices along (a 2D model also trains on slices "
            "along it). It follows the view's slider until you choose one here; Continue "
            "training a 2D model uses the model's own.")
        self.axis_combo.currentIndexChanged.connect(lambda *_: self._settings_from_data())
        self.axis_combo.activated.connect(self._axis_picked)  # by the user only
        self._axis_chosen = False
        form.addRow("Slices along", self.axis_combo)
        self.background_check = QCheckBox("unlabelled voxels are background")
        self.background_check.setToolTip(
            "Off (sparse annotation): slices without any label are ignored; on a slice with "
            "any label, every unpainted voxel counts as background, so finish each slice you "
            "start. On: every unpainted voxel of the volume counts as background (fully "
            "labelled volumes, and 2D images, which are always taken as fully labelled).")
        self.background_check.toggled.connect(lambda *_: self.refresh_stats())
        form.addRow(self.background_check)
        self.stats_label = QLabel("")
        self.stats_label.setWordWrap(True)
        self.stats_label.setMinimumHeight(5 * self.stats_label.fontMetrics().lineSpacing())
        self.stats_label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        form.addRow(self.stats_label)
        lay.addWidget(data)

        box = QGroupBox("Settings")
        f2 = QFormLayout(box)
        self.dims_combo = QComboBox()
        self.dims_combo.addItems(["2D", "3D"])
        self.dims_combo.currentIndexChanged.connect(lambda *_: self._patch_from_data())
        f2.addRow("Model", self.dims_combo)
        self.patch_edit = QLineEdit()
        self.patch_edit.setToolTip("Patch size in voxels, one value per axis (e.g. 128 128).")
        f2.addRow("Patch", self.patch_edit)
        self.spacing_edit = QLineEdit()
        self.spacing_edit.setPlaceholderText("blank: as loaded; auto (3D)")
        self.spacing_edit.setToolTip(
            "Voxel size to train at, in mm; images and labels are resampled to it, and "
            "predictions to it and back. Blank: the layers' own spacing, no resampling. "
            "auto (3D models): coarse enough that a patch spans half of the body's longest "
            "side (about 1.8 mm for a brain with 48^3 patches), never finer than as loaded; "
            "the command line's default. "
            "Otherwise one value (the same on every axis) or one per axis of the model: "
            "3 for a 3D model; 2 for a 2D model, the in-plane axes (on a 3D volume the slice "
            "axis keeps its own spacing, so sparsely labelled slices stay as painted). The "
            "patch is counted in voxels at this spacing.")
        f2.addRow("Spacing (mm)", self.spacing_edit)
        self.width_spin = spin_box(4, 128, 16)
        f2.addRow("Width", self.width_spin)
        self.loss_combo = QComboBox()
        self.loss_combo.addItems(["dice_ce", "dice_ce_fg", "dice", "ce"])
        self.loss_combo.setToolTip(
            "dice_ce: Dice + cross-entropy, the usual choice. dice_ce_fg: adds a Dice of all "
            "foreground classes together; use it when the classes are parts of one structure "
            "(e.g. tumour compartments: necrosis, oedema, enhancing), so the whole is learnt "
            "even where its parts are uncertain. dice, ce: either term alone.")
        f2.addRow("Loss", self.loss_combo)
        self.decision_combo = QComboBox()
        self.decision_combo.addItems(["argmax", "foreground"])
        self.decision_combo.setToolTip(
            "How probabilities become labels, in validation and prediction. argmax: the most "
            "probable class. foreground: foreground first (a voxel is foreground when the "
            "foreground classes together pass 0.5), then the most probable foreground class; "
            "for classes that are parts of one structure (e.g. tumour sub-regions), where "
            "argmax loses voxels that are surely the structure but not surely one part. "
            "Both agree with one foreground class.")
        f2.addRow("Decision", self.decision_combo)
        self.threshold_spin = decimal_box(0.05, 0.95, 0.5, step=0.05, decimals=2)
        self.threshold_spin.setToolTip(
            "A voxel is foreground where the foreground probability passes this value "
            "(the 'foreground' decision, and models with one foreground class). Lower "
            "outlines uncertain boundaries more generously. Kept in the model.")
        f2.addRow("Foreground above", self.threshold_spin)
        self._threshold_tip = self.threshold_spin.toolTip()
        self._fg_classes: int | None = None  # foreground classes labelled so far
        self.decision_combo.currentIndexChanged.connect(lambda *_: self._threshold_state())
        self.norm_combo = QComboBox()
        self.norm_combo.addItems(list(INTENSITY_NORMS))
        self.norm_combo.setToolTip("Per-channel intensity normalisation inside the body: z-score "
                                   "after clipping to the 0.5-99.5th percentiles, plain z-score, "
                                   "median/IQR after the same clipping (a large bright lesion "
                                   "compresses its own contrast less), or none (images already "
                                   "normalised alike).")
        f2.addRow("Intensities", self.norm_combo)
        row, self.limit_spin, self.limit_combo = limit_row()
        f2.addRow("Train for", row)
        self.steps_spin = spin_box(1, 10000, 25)
        f2.addRow("Steps / epoch", self.steps_spin)
        self.batch_spin = spin_box(1, 256, 8)
        f2.addRow("Batch", self.batch_spin)
        self.device_combo = device_combo()
        f2.addRow("Device", self.device_combo)
        lay.addWidget(box)
        lay.addStretch(1)

        self.train_btn, self.continue_btn = button_row(
            pinned, ("Train", ""), ("Continue training", "Warm start from the current model, "
                                    "e.g. after correcting labels."))
        self.pause_btn, self.stop_btn = button_row(
            pinned, ("Pause", ""), ("Stop", "Stop now and keep the best model so far."))
        self.add_status(pinned)
        # the model box scrolls with the form: pinned, it crushed the status line in a
        # short dock (what must stay in view is Train/Stop, progress and status)
        self.add_model_box(lay)
        self._set_running(False)

    def _set_running(self, running: bool) -> None:
        self.train_btn.setEnabled(not running)
        self.continue_btn.setEnabled(not running and self.current is not None)
        self.pause_btn.setEnabled(running)
        self.stop_btn.setEnabled(running)
        self.load_btn.setEnabled(not running)
        self.save_btn.setEnabled(self.current is not None)
        if not running:
            self.pause_btn.setText("Pause")

    # ------------------------------------------------------------ layers
    def _layers_changed(self, *_: Any) -> None:
        checked = set(self.checked_channels())
        names = [layer.name for layer in L.image_layers(self.viewer, inputs_only=True)]
        if self.channel_list.count() == 0 and not checked and names:
            checked = {names[0]}  # the first time: the first Image layer
        self.channel_list.refill(names, checked, quiet=True)
        current = self.labels_combo.currentText()
        names = [lay.name for lay in L.labels_layers(self.viewer)]
        self.labels_combo.blockSignals(True)
        self.labels_combo.clear()
        self.labels_combo.addItems(names)
        if current in names:
            self.labels_combo.setCurrentText(current)
        elif current:
            # The chosen layer is gone: choose none rather than another layer (possibly
            # full ground truth) that the user never picked.
            self.labels_combo.setCurrentIndex(-1)
            self._lost_labels = current
        self.labels_combo.blockSignals(False)
        self._labels_changed()

    def set_channels(self, names: list[str]) -> None:
        """Check exactly these Image layers as channels (in the list's order)."""
        self.channel_list.check_only(names)
        self._settings_from_data()

    def checked_channels(self) -> list[str]:
        """The checked Image layers, in the list's order."""
        return self.channel_list.checked()

    def _labels_layer(self) -> Any:
        name = self.labels_combo.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def _labels_changed(self) -> None:
        layer = self._labels_layer()
        if self._watched is not None and self._watched is not layer:
            for evname in ("paint", "data", "set_data"):
                emitter = getattr(self._watched.events, evname, None)
                if emitter is not None:
                    emitter.disconnect(self._schedule_stats)
        if layer is not None and self._watched is not layer:
            for evname in ("paint", "set_data"):
                emitter = getattr(layer.events, evname, None)
                if emitter is not None:
                    emitter.connect(self._schedule_stats)
        if self._watched is not layer:
            self._axis_chosen = False  # another layer may be painted along another axis
            self._watched = layer
            self._follow_view_axis(quiet=True)
            self._settings_from_data()
        else:  # another layer came or went: keep what the user set, recount only
            self.refresh_stats()

    def _axis_picked(self, *_: Any) -> None:
        self._axis_chosen = True

    def _follow_view_axis(self, *_: Any, quiet: bool = False) -> None:
        """Slices along the viewer's slider axis, until the user picks an axis."""
        layer = self._labels_layer()
        if self._axis_chosen or layer is None or layer.ndim != 3:
            return
        ax = L.slider_axis(self.viewer, layer)
        if ax is None or ax == self.axis_combo.currentIndex():
            return
        self.axis_combo.blockSignals(quiet)
        self.axis_combo.setCurrentIndex(ax)
        self.axis_combo.blockSignals(False)

    def use_axis(self, axis: int) -> None:
        """Slice along ``axis`` (Continue training: the model's), refreshing the stats."""
        self._axis_chosen = True
        if axis != self.axis_combo.currentIndex():
            self.axis_combo.setCurrentIndex(axis)

    def _schedule_stats(self, *_: Any) -> None:
        self._stats_timer.start()

    def _axis(self, ndim: int) -> int | None:
        return self.axis_combo.currentIndex() if ndim == 3 else None

    def _class_names(self) -> dict[int, str]:
        layer = self._labels_layer()
        names = dict((layer.metadata or {}).get("classes", {})) if layer is not None else {}
        return {int(k): str(v) for k, v in names.items()}

    def refresh_stats(self) -> LabelStats | None:
        layer = self._labels_layer()
        if layer is None:
            lost = getattr(self, "_lost_labels", "")
            self.stats_label.setText(
                f"'{lost}' was removed: choose the Labels layer to train on." if lost
                and self.labels_combo.count() else "Add a Labels layer and paint a few slices.")
            return None
        lab = L.layer_to_array(layer, copy=False).data
        if lab.ndim not in (2, 3):
            self.stats_label.setText(f"'{layer.name}' is {lab.ndim}D; only 2D and 3D layers.")
            return None
        try:
            target = sparse_target(lab, axis=self._axis(lab.ndim),
                                   background=self.background_check.isChecked())
        except InputError as exc:
            self.stats_label.setText(str(exc))
            return None
        st = label_stats(target, self._axis(lab.ndim))
        self._fg_classes = sum(1 for k, n in st.voxels.items() if k > 0 and n > 0)
        self._threshold_state()
        text = st.text(self._class_names())
        if not self.background_check.isChecked():
            text += painted_axis_hint(lab, self._axis(lab.ndim))
        self.stats_label.setText(text)
        return st

    def _threshold_state(self) -> None:
        """The threshold box is live only where the decision reads it: argmax among
        several foreground classes takes the most probable class, whatever the box says."""
        n, rule = self._fg_classes, self.decision_combo.currentText()
        unused = rule == "argmax" and n is not None and n > 1
        self.threshold_spin.setEnabled(not unused)
        self.threshold_spin.setToolTip(
            f"Not used: argmax among {n} foreground classes takes the most probable one; "
            "choose the 'foreground' decision to threshold the foreground as a whole."
            if unused else self._threshold_tip)

    def _settings_from_data(self) -> None:
        """Defaults derived from the data: 2D/3D, patch, batch."""
        layer = self._labels_layer()
        st = self.refresh_stats()
        if layer is None:
            return
        nd = layer.ndim
        self.axis_combo.setEnabled(nd == 3)
        self._background_for(nd)
        from napari_medseg.core.engine import available_devices

        gpu = available_devices()[0] != "cpu"
        dense = st is not None and st.labelled_slices >= 0.9 * st.n_slices
        dims = 3 if (nd == 3 and gpu and dense and min(layer.data.shape) >= 32) else 2
        self.dims_combo.blockSignals(True)
        self.dims_combo.setCurrentIndex(dims - 2)
        self.dims_combo.blockSignals(False)
        self._patch_from_data()

    def _background_for(self, ndim: int) -> None:
        """A 2D image has no unlabelled slices to leave out: every unpainted pixel is
        background, so the box shows ticked and fixed (unticked, it promised sparse
        labels it could not give); a 3D layer gets the user's own setting back."""
        box = self.background_check
        if ndim == 2 and box.isEnabled():
            self._background_3d = box.isChecked()
            box.blockSignals(True)
            box.setChecked(True)
            box.blockSignals(False)
            box.setEnabled(False)
        elif ndim != 2 and not box.isEnabled():
            box.blockSignals(True)
            box.setChecked(getattr(self, "_background_3d", False))
            box.blockSignals(False)
            box.setEnabled(True)
            self.refresh_stats()

    def _patch_from_data(self) -> None:
        layer = self._labels_layer()
        if layer is None:
            return
        dims = 2 + self.dims_combo.currentIndex()
        patch = default_patch(tuple(layer.data.shape), dims, self._axis(layer.ndim))
        self.patch_edit.setText(" ".join(str(p) for p in patch))
        self.batch_spin.setValue(8 if dims == 2 else 2)

