"""The label-train-correct-retrain loop in the training widget: what slices count as
labelled, which channel feeds which input on Continue, and what the user sees meanwhile.

Each test reproduces a defect a user hit: the slice axis silently following the last
layer change, Continue feeding reordered layers to the wrong inputs, a progress bar that
sat in napari's collapsed Activity panel, a form that could not scroll.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.core.sample import brain_phantom


@pytest.fixture(scope="module")
def small():
    return brain_phantom(shape=(32, 32, 16), seed=0, n_raters=0)


def _widget(viewer):
    from napari_medseg.gui.train_widget import TrainWidget

    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w, name="train")
    return w


def _sparse(labels, axis, index):
    """Only slices ``index`` along ``axis`` of ``labels`` painted."""
    out = np.zeros_like(labels)
    sl = [slice(None)] * labels.ndim
    sl[axis] = index
    out[tuple(sl)] = labels[tuple(sl)]
    return out


def test_slice_axis_follows_the_view_until_chosen_and_survives_layer_changes(
        make_napari_viewer, small):
    viewer = make_napari_viewer()
    viewer.add_image(small.t1, name="T1")
    viewer.add_labels(_sparse(small.labels.astype(np.int32), 2, [4, 8, 12]), name="painted")
    w = _widget(viewer)
    assert w.axis_combo.currentIndex() == 0  # napari's slider starts on axis 0
    assert "painted along axis 2" in w.stats_label.text()  # 3 of 16 slices there

    viewer.dims.order = (2, 0, 1)  # the user rolls the view to slice along axis 2
    assert w.axis_combo.currentIndex() == 2
    assert w.stats_label.text().startswith("3 of 16 slices (axis 2) labelled")
    assert "painted along" not in w.stats_label.text()

    w.axis_combo.setCurrentIndex(1)
    w.axis_combo.activated.emit(1)  # as a click on the combo does
    w.patch_edit.setText("24 24")
    viewer.add_points(np.zeros((1, 3)), name="marks")  # any layer change...
    viewer.layers.move(0, 2)
    viewer.dims.order = (0, 1, 2)  # ...or view change
    assert w.axis_combo.currentIndex() == 1  # keeps what the user chose
    assert w.patch_edit.text() == "24 24"


def test_continue_uses_the_models_axis_and_channel_order(make_napari_viewer, small):
    from napari_medseg.core.checkpoint import Checkpoint
    from napari_medseg.core.config import ModelConfig, TrainConfig
    from napari_medseg.core.data import LabelMapping
    from napari_medseg.core.models import build_model
    from napari_medseg.gui.model_store import StoredModel

    viewer = make_napari_viewer()
    viewer.add_image(small.t1, name="phantom T1")
    viewer.add_image(small.flair, name="phantom FLAIR")
    viewer.add_labels(small.labels.astype(np.int32), name="tissue")
    w = _widget(viewer)
    w.set_channels(["phantom T1", "phantom FLAIR"])
    mc = ModelConfig(spatial_dims=2, in_channels=2, out_channels=5, base_width=4, depth=2)
    ck = Checkpoint(mc, TrainConfig(patch_size=(16, 16), slice_axis=2),
                    LabelMapping((0, 1, 2, 3, 4)), (), None, build_model(mc).state_dict(),
                    channel_names=["phantom T1", "phantom FLAIR"])
    model = StoredModel("m", ck)

    viewer.layers.move(1, 0)  # the user drags FLAIR above T1
    w.axis_combo.setCurrentIndex(0)  # and the form slices along another axis
    assert w.checked_channels() == ["phantom FLAIR", "phantom T1"]
    inp = w.collect_inputs(model)
    np.testing.assert_array_equal(inp.channels[0].data, small.t1)
    np.testing.assert_array_equal(inp.channels[1].data, small.flair)
    assert inp.axis == 2 and w.axis_combo.currentIndex() == 2
    assert "as the model was trained" in inp.note
    tc = w._configs(inp, continue_from=model)[1]
    assert tc.slice_axis == 2

    # a new model takes the list order and the form's axis
    w.axis_combo.setCurrentIndex(1)
    inp = w.collect_inputs()
    np.testing.assert_array_equal(inp.channels[0].data, small.flair)
    assert inp.axis == 1 and inp.note == ""


def test_progress_bar_shows_in_the_widget_while_training(make_napari_viewer, qtbot, small):
    viewer = make_napari_viewer()
    viewer.add_image(small.t1, name="T1")
    viewer.add_labels(small.labels.astype(np.int32), name="tissue")
    w = _widget(viewer)
    w.width_spin.setValue(8)
    w.limit_combo.setCurrentText("epochs")
    w.limit_spin.setValue(2)
    w.steps_spin.setValue(6)
    w.batch_spin.setValue(2)
    w.device_combo.setCurrentText("cpu")
    assert not w.progress_bar.isVisibleTo(w)
    seen = []
    w.progress_bar.valueChanged.connect(seen.append)
    assert w.start_training()
    assert w.progress_bar.isVisibleTo(w)
    qtbot.waitUntil(lambda: not w.runner.busy and w.train_btn.isEnabled(), timeout=120_000)
    assert w.current is not None, w.status.text()
    assert not w.progress_bar.isVisibleTo(w) and w._pbar is None
    # step events come at most a few per second, so the bar moves in a few jumps
    assert len(seen) >= 2 and seen == sorted(seen) and seen[-1] > seen[0]


def test_training_form_scrolls_instead_of_squashing(make_napari_viewer):
    viewer = make_napari_viewer()
    w = _widget(viewer)
    # the form is ~835 px tall; without scrolling the dock could not be shorter
    assert w.minimumSizeHint().height() < 450
    assert w.sizeHint().height() > 500


def test_a_removed_labels_layer_is_not_silently_replaced(make_napari_viewer, small):
    viewer = make_napari_viewer()
    viewer.add_image(small.t1, name="T1")
    viewer.add_labels(small.labels.astype(np.int32), name="ground truth")
    viewer.add_labels(_sparse(small.labels.astype(np.int32), 2, [4, 8]), name="my labels")
    w = _widget(viewer)
    w.set_channels(["T1"])
    w.labels_combo.setCurrentText("my labels")
    viewer.layers.remove("my labels")
    assert w.labels_combo.currentText() == ""  # not "ground truth"
    assert "'my labels' was removed" in w.stats_label.text()
    assert not w.start_training()
    assert "Choose the Labels layer" in w.status.text()
    w.labels_combo.setCurrentText("ground truth")  # the user's own choice counts
    assert w.collect_inputs().labels.name == "ground truth"


def test_the_budget_takes_tenths_of_minutes_and_whole_epochs(make_napari_viewer, small):
    viewer = make_napari_viewer()
    viewer.add_image(small.t1, name="T1")
    viewer.add_labels(small.labels.astype(np.int32), name="tissue")
    w = _widget(viewer)
    w.set_channels(["T1"])
    w.limit_combo.setCurrentText("minutes")
    w.limit_spin.setValue(0.5)  # a 30 s trial
    tc = w._configs(w.collect_inputs(), continue_from=None)[1]
    assert (tc.minutes, tc.epochs) == (0.5, None)
    w.limit_combo.setCurrentText("epochs")
    w.limit_spin.setValue(3.4)
    tc = w._configs(w.collect_inputs(), continue_from=None)[1]
    assert (tc.minutes, tc.epochs) == (None, 3) and isinstance(tc.epochs, int)


def test_2d_labels_say_unpainted_pixels_are_background(make_napari_viewer, small):
    """The sparse-labels box was offered, unticked, for 2D images where it did nothing: a
    few painted nuclei trained every other nucleus as background without a word."""
    viewer = make_napari_viewer()
    viewer.add_image(small.t1[:, :, 8], name="cells")
    viewer.add_labels(small.labels[:, :, 8].astype(np.int32), name="some nuclei")
    viewer.add_image(small.t1, name="T1")
    viewer.add_labels(_sparse(small.labels.astype(np.int32), 2, [4, 8]), name="slices")
    w = _widget(viewer)
    w.labels_combo.setCurrentText("some nuclei")
    assert w.background_check.isChecked() and not w.background_check.isEnabled()
    assert w.stats_label.text().startswith("2D image: every unpainted pixel is background")
    w.labels_combo.setCurrentText("slices")  # a 3D layer: the user's own (sparse) setting
    assert not w.background_check.isChecked() and w.background_check.isEnabled()
    assert "look painted along axis 2" in w.stats_label.text()  # the slider is on axis 0


def test_an_rgb_layer_missing_from_the_channels_is_explained(make_napari_viewer, small):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 32, 3), np.uint8), name="photo", rgb=True)
    viewer.add_labels(np.zeros((32, 32), np.int32), name="nuclei")
    w = _widget(viewer)
    assert w.channel_list.count() == 0
    assert not w.start_training()
    assert "RGB layers ('photo') are not listed" in w.status.text()
    assert "Split RGB" in w.status.text()


def test_continuing_a_3d_model_keeps_the_forms_axis(make_napari_viewer, small):
    from napari_medseg.core.checkpoint import Checkpoint
    from napari_medseg.core.config import ModelConfig, TrainConfig
    from napari_medseg.core.data import LabelMapping
    from napari_medseg.core.models import build_model
    from napari_medseg.gui.model_store import StoredModel

    viewer = make_napari_viewer()
    viewer.add_image(small.t1, name="T1")
    viewer.add_labels(_sparse(small.labels.astype(np.int32), 0, [8, 16, 24]), name="painted")
    w = _widget(viewer)
    w.set_channels(["T1"])
    mc = ModelConfig(spatial_dims=3, in_channels=1, out_channels=5, base_width=4, depth=2)
    ck = Checkpoint(mc, TrainConfig(patch_size=(16, 16, 16), slice_axis=2),
                    LabelMapping((0, 1, 2, 3, 4)), (), None, build_model(mc).state_dict(),
                    channel_names=["T1"])
    w.axis_combo.setCurrentIndex(0)  # painted along axis 0
    inp = w.collect_inputs(StoredModel("m", ck))
    assert inp.axis == 0 and w.axis_combo.currentIndex() == 0  # a 3D model does not slice
