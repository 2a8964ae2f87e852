"""The Restoration widget's controls (layout only; behaviour in :mod:`.restore_widget`)."""

from __future__ import annotations

import re

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
)

from napari_medseg.gui import restore_jobs as J
from napari_medseg.gui.restore_plot import RestorePlot
from napari_medseg.gui.widget_base import (
    MedsegWidget,
    button_row,
    device_combo,
    limit_row,
    spin_box,
)

_SIMPLE_SPEC = re.compile(r"^\s*([A-Za-z]+)\s*:\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*$")

#: The "no layer" entry of the optional layer pickers.
NONE = "(none)"


class RestoreControls(MedsegWidget):
    """Builds and reads the controls; :class:`~.restore_widget.RestoreWidget` acts on them."""

    def build_ui(self) -> None:
        lay, _ = self.scrolling_layout()
        data = QGroupBox("Training data")
        form = QFormLayout(data)
        self.mode_combo = QComboBox()
        for mode, label in J.MODE_LABELS.items():
            self.mode_combo.addItem(label, mode)
        self.mode_combo.setCurrentIndex(list(J.MODE_LABELS).index("synthetic"))
        self.mode_combo.setToolTip(
            "Where the training pairs come from: a registered noisy/clean pair; clean images "
            "made noisy on the fly with the degradation below; or noisy images alone "
            "(self-supervised Noise2Void blind-spot masking).")
        form.addRow("Mode", self.mode_combo)
        self.images_label = QLabel("Clean images")
        self.image_list = QListWidget()
        self.image_list.setMaximumHeight(80)
        self.image_list.setToolTip("One training image per checked layer.")
        form.addRow(self.images_label, self.image_list)
        self.target_label = QLabel("Clean layer")
        self.target_combo = QComboBox()
        form.addRow(self.target_label, self.target_combo)

        deg = QHBoxLayout()
        self.degrade_combo = QComboBox()
        for k in J.DEGRADATIONS:
            self.degrade_combo.addItem(k.label, k.name)
        self.strength_spin = QDoubleSpinBox()
        # napari's style gives spin boxes wide -/+ buttons: at a fixed 120 px "0.050" was cut
        self.strength_spin.setMinimumWidth(140)
        deg.addWidget(self.degrade_combo, 3)
        deg.addWidget(self.strength_spin, 2)
        form.addRow("Degradation", deg)
        self.spec_edit = QLineEdit()
        self.spec_edit.setToolTip("The degradation as a spec; edit it to compose, e.g. "
                                  "blur:1+rician:0.05 or gaussian:5,absolute=1.")
        form.addRow("Spec", self.spec_edit)
        self.preview_btn = QPushButton("Preview degradation")
        self.preview_btn.setToolTip("Show the first checked image degraded as in training, in "
                                    "one preview layer (replaced on every preview).")
        form.addRow(self.preview_btn)
        lay.addWidget(data)

        box = QGroupBox("Training")
        f2 = QFormLayout(box)
        self.loss_combo = QComboBox()
        self.loss_combo.setEditable(True)
        self.loss_combo.addItems(J.LOSSES)
        self.loss_combo.setToolTip("A weighted sum of l1, mse, ssim, perceptual, adv, e.g. "
                                   "0.8*l1+0.2*ssim; self-supervised mode takes l1 or mse.")
        f2.addRow("Loss", self.loss_combo)
        row = QHBoxLayout()
        self.dims_combo = QComboBox()
        self.dims_combo.addItems(["2D", "3D"])
        self.axis_combo = QComboBox()
        self.axis_combo.addItems(["slices along axis 0", "slices along axis 1",
                                  "slices along axis 2"])
        self.axis_combo.setCurrentIndex(2)
        self.axis_combo.setToolTip("3D volumes: a 2D model trains on and restores these slices.")
        row.addWidget(self.dims_combo)
        row.addWidget(self.axis_combo)
        f2.addRow("Model", row)
        row = QHBoxLayout()
        self.patch_edit = QLineEdit()
        self.patch_edit.setToolTip("Training patch in voxels, one value per model axis.")
        self.width_spin = spin_box(4, 128, 16, prefix="width ")
        row.addWidget(self.patch_edit)
        row.addWidget(self.width_spin)
        f2.addRow("Patch", row)
        row, self.limit_spin, self.limit_combo = limit_row()
        f2.addRow("Train for", row)
        row = QHBoxLayout()
        self.steps_spin = spin_box(1, 10000, 50, suffix=" steps/epoch")
        self.batch_spin = spin_box(1, 256, 8, prefix="batch ")
        row.addWidget(self.steps_spin)
        row.addWidget(self.batch_spin)
        f2.addRow("Steps", row)
        self.device_combo = device_combo()
        f2.addRow("Device", self.device_combo)
        lay.addWidget(box)

        self.train_btn, self.continue_btn, self.pause_btn, self.stop_btn = button_row(
            lay, ("Train", ""),
            ("Continue", "Train on from the current model (warm start), e.g. on more images or "
             "for longer; same mode and 2D/3D."),
            ("Pause", ""),
            ("Stop", "Training: stop now and keep the best model. Restoring: cancel."))
        self.plot = RestorePlot()
        lay.addWidget(self.plot)
        self.add_status(lay)

        self.add_model_box(lay)

        rbox = QGroupBox("Restore")
        f4 = QFormLayout(rbox)
        self.input_combo = QComboBox()
        f4.addRow("Image", self.input_combo)
        self.ref_combo = QComboBox()
        self.ref_combo.setToolTip("A clean image on the same grid: adds an SSIM map, an error "
                                  "map and PSNR / SSIM / NMSE / MAE.")
        f4.addRow("Reference", self.ref_combo)
        self.restore_btn = QPushButton("Restore into a new layer")
        f4.addRow(self.restore_btn)
        self.readout = QLabel("")
        self.readout.setWordWrap(True)
        self.readout.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        f4.addRow(self.readout)
        lay.addWidget(rbox)
        lay.addStretch(1)

        self.mode_combo.currentIndexChanged.connect(lambda *_: self._mode_changed())
        self.degrade_combo.currentIndexChanged.connect(lambda *_: self._kind_changed())
        self.strength_spin.valueChanged.connect(lambda *_: self._strength_changed())
        self.spec_edit.textChanged.connect(self._spec_changed)
        self._kind_changed()
        self._mode_changed()

    # ------------------------------------------------------------ reading
    def mode(self) -> str:
        """The core's mode name: pairs, synthetic or noise2void."""
        return str(self.mode_combo.currentData())

    def set_mode(self, mode: str) -> None:
        self.mode_combo.setCurrentIndex(list(J.MODE_LABELS).index(mode))

    def degradation(self) -> str:
        """The degradation spec to train with (the spec field, possibly hand-edited)."""
        spec = self.spec_edit.text().strip()
        if not spec:
            raise ValueError("The degradation spec is empty; pick a degradation, e.g. Rician "
                             "noise 0.05 (spec rician:0.05).")
        from napari_medseg.core.degrade import parse_degradation

        parse_degradation(spec)  # raises with the valid names and the grammar
        return spec

    def set_degradation(self, kind: str, strength: float) -> None:
        self.degrade_combo.setCurrentIndex(list(J.KINDS).index(kind))
        self.strength_spin.setValue(strength)

    def checked_images(self) -> list[str]:
        return [self.image_list.item(i).text() for i in range(self.image_list.count())
                if self.image_list.item(i).checkState() == Qt.CheckState.Checked]

    def set_images(self, names: list[str]) -> None:
        """Check exactly these layers as training images."""
        for i in range(self.image_list.count()):
            it = self.image_list.item(i)
            it.setCheckState(Qt.CheckState.Checked if it.text() in names
                             else Qt.CheckState.Unchecked)

    def fill_layer_choices(self, names: list[str]) -> None:
        """Refill the layer pickers, keeping what was chosen where it still exists."""
        checked = set(self.checked_images())
        first = self.image_list.count() == 0
        self.image_list.blockSignals(True)
        self.image_list.clear()
        for i, n in enumerate(names):
            it = QListWidgetItem(n)
            it.setFlags(it.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            on = n in checked or (first and not checked and i == 0)
            it.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)
            self.image_list.addItem(it)
        self.image_list.blockSignals(False)
        for combo, optional in ((self.target_combo, True), (self.input_combo, False),
                                (self.ref_combo, True)):
            cur = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(([NONE] if optional else []) + names)
            if cur in names or (optional and cur == NONE):
                combo.setCurrentText(cur)
            combo.blockSignals(False)

    # ------------------------------------------------------------ reacting
    def _mode_changed(self) -> None:
        mode = self.mode()
        synthetic = mode == "synthetic"
        self.images_label.setText("Clean images" if synthetic else "Noisy images")
        self.target_label.setText("Clean layer" if mode == "pairs" else "Clean reference")
        self.target_combo.setToolTip(
            "The registered clean image of the checked noisy layer." if mode == "pairs" else
            "Optional: a clean image of the checked noisy layer, only to report validation "
            "PSNR while training.")
        self.target_label.setVisible(not synthetic)
        self.target_combo.setVisible(not synthetic)
        for w in (self.degrade_combo, self.strength_spin, self.spec_edit, self.preview_btn):
            w.setEnabled(synthetic)
        if mode == "noise2void" and self.loss_combo.currentText() not in J.PIXEL_LOSSES:
            self.loss_combo.setCurrentText("mse")  # blind-spot training needs a pixel loss

    def _configure_strength(self, k: J.DegradationKind, value: float) -> None:
        self.strength_spin.blockSignals(True)
        self.strength_spin.setDecimals(k.decimals)
        self.strength_spin.setRange(k.minimum, k.maximum)
        self.strength_spin.setSingleStep(k.step)
        self.strength_spin.setValue(value)
        self.strength_spin.blockSignals(False)
        self.strength_spin.setToolTip(f"Strength: {k.strength}.")

    def _kind_changed(self) -> None:
        k = J.KINDS[str(self.degrade_combo.currentData())]
        self._configure_strength(k, k.default)
        self._strength_changed()

    def _spec_changed(self, text: str) -> None:
        """A spec typed by hand that is one known step ("blur:2") also sets the pickers,
        so they never show another degradation than the one trained with."""
        m = _SIMPLE_SPEC.match(text)
        if not m or m.group(1).lower() not in J.KINDS:
            return
        k = J.KINDS[m.group(1).lower()]
        self.degrade_combo.blockSignals(True)
        self.degrade_combo.setCurrentIndex(list(J.KINDS).index(k.name))
        self.degrade_combo.blockSignals(False)
        self._configure_strength(k, float(m.group(2)))

    def _strength_changed(self) -> None:
        self.spec_edit.setText(J.degradation_spec(str(self.degrade_combo.currentData()),
                                                  self.strength_spin.value()))
