"""Training and prediction widgets, clicked in a real viewer (pytest-qt, Xvfb).

Kept small for two shared CPU cores: a 32x32x16 phantom, a width-8 2D UNet,
a few epochs of a few steps.
"""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_medseg.core.sample import brain_phantom

LEFT = Qt.MouseButton.LeftButton
TRANSLATE = (5.0, -3.0, 2.0)


@pytest.fixture(scope="module")
def small():
    return brain_phantom(shape=(32, 32, 16), seed=0, n_raters=0)


@pytest.fixture
def notes(monkeypatch):
    """Record napari notifications raised by the worker module."""
    from napari_medseg.gui import workers

    seen: dict[str, list[str]] = {"error": [], "info": []}
    monkeypatch.setattr(workers, "show_error", lambda m: seen["error"].append(m))
    monkeypatch.setattr(workers, "show_info", lambda m: seen["info"].append(m))
    return seen


def _viewer(make_napari_viewer, ph):
    viewer = make_napari_viewer()
    common = {"scale": ph.spacing, "translate": TRANSLATE}
    viewer.add_image(ph.t1, name="T1", **common)
    viewer.add_image(ph.flair, name="FLAIR", **common)
    viewer.add_labels(ph.labels.astype(np.int32), name="tissue", **common)
    return viewer


def _train_widget(viewer, *, epochs=3, steps=8, minutes=None):
    from napari_medseg.gui.train_widget import TrainWidget

    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w, name="train")
    w.set_channels(["T1", "FLAIR"])
    w.labels_combo.setCurrentText("tissue")
    w.axis_combo.setCurrentIndex(2)
    w.width_spin.setValue(8)
    w.limit_combo.setCurrentText("minutes" if minutes else "epochs")
    w.limit_spin.setValue(minutes or epochs)
    w.steps_spin.setValue(steps)
    w.batch_spin.setValue(4)
    w.device_combo.setCurrentText("cpu")
    return w


def _core_segment(stored, viewer, *, tta):
    """What the core's ``segment`` gives for the T1 + FLAIR layers (the widget's reference)."""
    from napari_medseg.core.engine import run
    from napari_medseg.core.pipeline import segment

    chans = [viewer.layers[n].data for n in ("T1", "FLAIR")]
    return run(segment(stored.checkpoint, chans, viewer.layers["T1"].scale,
                       model=stored.network(), device="cpu", tta=tta))


def _idle(w):
    return not w.runner.busy and w.train_btn.isEnabled()


def test_train_warm_start_predict_save_load(make_napari_viewer, qtbot, small, tmp_path):
    from napari_medseg.gui.predict_ui import SLICE
    from napari_medseg.gui.predict_widget import PredictWidget

    viewer = _viewer(make_napari_viewer, small)
    viewer.dims.order = (2, 0, 1)  # slider along z, as the model slices
    w = _train_widget(viewer)
    assert w.patch_edit.text() == "32 32" and w.dims_combo.currentText() == "2D"
    n_lab = int(np.any(small.labels > 0, axis=(0, 1)).sum())
    assert f"{n_lab} of 16 slices (axis 2) labelled" in w.stats_label.text()
    assert not w.continue_btn.isEnabled()
    qtbot.mouseClick(w.train_btn, LEFT)
    assert not w.train_btn.isEnabled() and w.stop_btn.isEnabled()
    qtbot.waitUntil(lambda: w.last_result is not None and _idle(w), timeout=60000)
    res = w.last_result
    freq = np.bincount(small.labels.ravel(), minlength=5) / small.labels.size
    chance = float(np.mean(freq[1:]))  # Dice of a random labelling with the true frequencies
    assert res.best_dice > chance + 0.1, (res.best_dice, chance, w.status.text())
    assert w.plot.loss and w.plot.dice and "best validation Dice" in w.status.text()
    assert "label values [0, 1, 2, 3, 4]" in w.model_label.text()
    steps_before = len(w.plot.loss)

    # correct the labels, then warm start from the current model
    corrected = small.labels.astype(np.int32)
    corrected[..., :8] = 0
    viewer.layers["tissue"].data = corrected
    n_lab = int(np.any(corrected > 0, axis=(0, 1)).sum())
    first = w.current
    w.limit_spin.setValue(1)
    qtbot.mouseClick(w.continue_btn, LEFT)
    qtbot.waitUntil(lambda: w.current is not first and _idle(w), timeout=60000)
    assert w.plot.marks and len(w.plot.loss) > steps_before  # curves continue, marked
    assert w.last_result.best_dice > chance
    assert f"{n_lab} of 16 slices" in w.stats_label.text()

    # predict the whole volume with the model just trained
    p = PredictWidget(viewer)
    viewer.window.add_dock_widget(p, name="predict")
    assert p.model_combo.currentText() == w.current.name
    assert p.checked_channels() == ["T1", "FLAIR"]
    n_layers = len(viewer.layers)
    qtbot.mouseClick(p.predict_btn, LEFT)
    qtbot.waitUntil(lambda: len(p.last_layers) == 3 and p.predict_btn.isEnabled(), timeout=30000)
    lab, prob, unc = p.last_layers
    assert len(viewer.layers) == n_layers + 3
    assert (lab.name, prob.name, unc.name) == ("T1 prediction", "T1 foreground probability",
                                               "T1 uncertainty")
    assert type(lab).__name__ == "Labels" and lab.data.shape == small.labels.shape
    assert set(np.unique(lab.data)) <= {0, 1, 2, 3, 4}
    assert np.mean(lab.data == small.labels) > 0.5
    for layer in (lab, prob, unc):
        np.testing.assert_allclose(layer.scale, small.spacing)
        np.testing.assert_allclose(layer.translate, TRANSLATE)
        np.testing.assert_allclose(np.diag(layer.metadata["affine"])[:3], small.spacing)
    assert 0.0 <= prob.data.min() and prob.data.max() <= 1.0 and unc.data.max() > 0
    # mirroring TTA is on by default, as in `napari-medseg predict`: the same labels as the core
    assert p.tta_check.isChecked()
    seg = _core_segment(w.current, viewer, tta=True)
    np.testing.assert_array_equal(lab.data, seg.labels)

    # again, without TTA: new layers, nothing overwritten, the core's one-pass result
    p.tta_check.setChecked(False)
    qtbot.mouseClick(p.predict_btn, LEFT)
    qtbot.waitUntil(lambda: p.last_layers[0] is not lab and p.predict_btn.isEnabled(),
                    timeout=30000)
    assert p.last_layers[0].name == "T1 prediction [2]"
    assert viewer.layers["T1 prediction"] is lab
    one_pass = _core_segment(w.current, viewer, tta=False)
    np.testing.assert_array_equal(p.last_layers[0].data, one_pass.labels)
    assert not np.allclose(p.last_layers[1].data, prob.data)  # the mirrorings did count

    # preview of the displayed slice only
    viewer.dims.set_point(2, TRANSLATE[2] + 5 * small.spacing[2])
    p.mode_combo.setCurrentText(SLICE)
    qtbot.mouseClick(p.predict_btn, LEFT)
    qtbot.waitUntil(lambda: "preview" in p.last_layers[0].name and p.predict_btn.isEnabled(),
                    timeout=30000)
    prev = p.last_layers[0].data
    assert p.last_layers[0].name == "T1 prediction preview (axis 2, slice 5)"
    assert prev[..., 5].any() and not np.delete(prev, 5, axis=2).any()

    # save and load the model: the widget says what it expects
    path = w.save_model(str(tmp_path / "m.pt"))
    loaded = w.load_model(path)
    assert loaded is not None and "2 channel(s) (T1, FLAIR)" in w.model_label.text()
    assert p.model_combo.currentText() == loaded.name


def test_stop_pause_resume_refuse_and_close(make_napari_viewer, qtbot, small, notes):
    viewer = _viewer(make_napari_viewer, small)
    w = _train_widget(viewer, minutes=5)
    assert w.start_training()
    qtbot.waitUntil(lambda: len(w.plot.loss) >= 2, timeout=40000)

    # a second job is refused politely
    assert not w.start_training()
    assert notes["info"] and "already running" in notes["info"][-1]

    # pause: no more steps until resumed
    qtbot.mouseClick(w.pause_btn, LEFT)
    qtbot.waitUntil(lambda: w.pause_btn.text() == "Resume", timeout=20000)
    n = len(w.plot.loss)
    qtbot.wait(1200)
    assert len(w.plot.loss) == n and w.runner.busy
    qtbot.mouseClick(w.pause_btn, LEFT)
    qtbot.waitUntil(lambda: len(w.plot.loss) > n, timeout=20000)

    # stop mid-run keeps a model
    qtbot.mouseClick(w.stop_btn, LEFT)
    qtbot.waitUntil(lambda: w.last_result is not None and _idle(w), timeout=30000)
    assert w.last_result.stopped and w.current is not None
    assert "stopped" in w.status.text()

    # closing the viewer stops a running job
    assert w.start_training()
    job = w.runner.job
    qtbot.waitUntil(lambda: len(w.plot.loss) > 0, timeout=40000)
    viewer.close()
    assert job.wait(15)
    assert not notes["error"]


def test_worker_error_reaches_widget_and_leaves_it_ready(make_napari_viewer, qtbot, small, notes,
                                                         monkeypatch):
    from napari_medseg.core import engine
    from napari_medseg.core.events import Message

    def broken_fit(*args, **kwargs):
        yield Message("training on cpu")
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(engine, "fit", broken_fit)
    viewer = _viewer(make_napari_viewer, small)
    w = _train_widget(viewer)
    for _ in range(2):  # ready again after the failure
        assert w.start_training()
        qtbot.waitUntil(lambda: _idle(w) and bool(notes["error"]), timeout=20000)
        assert "out of memory" in notes["error"][-1]
        assert "Training failed: CUDA out of memory" in w.status.text()
        assert w._pbar is None
        notes["error"].clear()


def test_intensity_setting_reaches_the_training_config(make_napari_viewer, small):
    w = _train_widget(_viewer(make_napari_viewer, small))
    inp = w.collect_inputs()
    assert w._configs(inp, continue_from=None)[1].intensity_norm == "percentile"
    for norm in ("none", "median_iqr"):
        w.norm_combo.setCurrentText(norm)
        assert w._configs(inp, continue_from=None)[1].intensity_norm == norm


def test_loss_decision_and_spacing_reach_the_training_config(make_napari_viewer, small):
    w = _train_widget(_viewer(make_napari_viewer, small))
    assert tuple(small.spacing) == (1.0, 1.0, 1.5)
    inp = w.collect_inputs()
    tc = w._configs(inp, continue_from=None)[1]
    assert (tc.loss, tc.decision, tc.spacing) == ("dice_ce", "argmax", None)  # the defaults
    assert w.spacing_edit.text() == ""
    w.loss_combo.setCurrentText("dice_ce_fg")
    w.decision_combo.setCurrentText("foreground")
    # 2D model on slices along axis 2: typed values are in-plane, axis 2 keeps its 1.5 mm
    w.spacing_edit.setText("2")
    tc = w._configs(inp, continue_from=None)[1]
    assert (tc.loss, tc.decision, tc.spacing) == ("dice_ce_fg", "foreground", (2.0, 2.0, 1.5))
    w.spacing_edit.setText("0.5, 2")
    assert w._configs(inp, continue_from=None)[1].spacing == (0.5, 2.0, 1.5)
    w.axis_combo.setCurrentIndex(0)  # slices along axis 0 (1 mm): values go to axes 1 and 2
    inp0 = w.collect_inputs()
    tc = w._configs(inp0, continue_from=None)[1]
    assert (tc.slice_axis, tc.spacing) == (0, (1.0, 0.5, 2.0))
    w.dims_combo.setCurrentText("3D")  # a 3D model: one value per axis of the volume
    w.spacing_edit.setText("1.25")
    assert w._configs(inp0, continue_from=None)[1].spacing == (1.25, 1.25, 1.25)
    w.spacing_edit.setText("1 1 3")
    assert w._configs(inp0, continue_from=None)[1].spacing == (1.0, 1.0, 3.0)
    w.spacing_edit.setText("  ")
    assert w._configs(inp0, continue_from=None)[1].spacing is None


def test_threshold_box_is_live_only_where_the_decision_reads_it(make_napari_viewer, small):
    """Argmax among several foreground classes ignores the threshold: the box was live and
    its value was kept in the model as if it mattered."""
    viewer = _viewer(make_napari_viewer, small)
    w = _train_widget(viewer)
    w.refresh_stats()
    assert w.decision_combo.currentText() == "argmax"
    assert not w.threshold_spin.isEnabled()  # tissue: 4 foreground classes
    assert "Not used" in w.threshold_spin.toolTip()
    w.decision_combo.setCurrentText("foreground")
    assert w.threshold_spin.isEnabled() and "Not used" not in w.threshold_spin.toolTip()
    w.decision_combo.setCurrentText("argmax")
    viewer.add_labels((small.labels == 4).astype(np.int32), name="lesion",
                      scale=small.spacing, translate=TRANSLATE)
    w.labels_combo.setCurrentText("lesion")
    w.refresh_stats()
    assert w.threshold_spin.isEnabled()  # one foreground class: the threshold decides


def test_auto_spacing_and_threshold_reach_the_training_config(make_napari_viewer, small):
    w = _train_widget(_viewer(make_napari_viewer, small))
    inp = w.collect_inputs()
    assert w._configs(inp, continue_from=None)[1].threshold == 0.5  # the default
    w.threshold_spin.setValue(0.4)
    assert w._configs(inp, continue_from=None)[1].threshold == 0.4
    w.dims_combo.setCurrentText("3D")
    w.spacing_edit.setText("auto")
    # The phantom fills its 32x32x24 mm box: half of 32 mm over an 8-voxel patch is 2 mm.
    w.patch_edit.setText("8 8 8")
    assert w._configs(inp, continue_from=None)[1].spacing == (2.0, 2.0, 2.0)
    # 16 mm / 12 voxels = 1.3 mm; never finer than as loaded: axis 2 keeps its 1.5 mm.
    w.patch_edit.setText("12 12 12")
    assert w._configs(inp, continue_from=None)[1].spacing == (1.3, 1.3, 1.5)
    w.patch_edit.setText("16 16 16")  # 1 mm: the native grid already, no resampling
    assert w._configs(inp, continue_from=None)[1].spacing is None
    w.dims_combo.setCurrentText("2D")
    w.patch_edit.setText("16 16")
    assert not w.start_training()
    assert "Spacing 'auto' is for a 3D model on 3D layers" in w.status.text()
    assert not w.runner.busy and w.train_btn.isEnabled()


def test_auto_spacing_trains_and_says_so(make_napari_viewer, qtbot, small):
    w = _train_widget(_viewer(make_napari_viewer, small), epochs=1, steps=2)
    w.dims_combo.setCurrentText("3D")
    w.spacing_edit.setText(" Auto ")
    w.patch_edit.setText("8 8 8")
    w.batch_spin.setValue(2)
    w.decision_combo.setCurrentText("foreground")  # where the threshold is read (4 classes)
    w.threshold_spin.setValue(0.35)
    assert w.start_training(), w.status.text()
    assert "at 2x2x2 mm (auto)" in w.status.text(), w.status.text()
    qtbot.waitUntil(lambda: w.last_result is not None and _idle(w), timeout=60000)
    ck = w.current.checkpoint
    assert ck.spacing == (2.0, 2.0, 2.0) and ck.train_config.threshold == 0.35
    assert "foreground above 0.35" in ck.describe()


@pytest.mark.parametrize(("dims", "text", "reason"), [
    ("2D", "abc", "is not a list of numbers"),
    ("2D", "1 nan", "is not a list of numbers"),
    ("2D", "0", "has a value <= 0"),
    ("2D", "1 -2", "has a value <= 0"),
    ("2D", "1 1 1", "has 3 values"),
    ("3D", "1 1", "has 2 values"),
])
def test_bad_spacing_is_refused_with_a_clear_message(make_napari_viewer, small, dims, text,
                                                     reason):
    w = _train_widget(_viewer(make_napari_viewer, small))
    w.dims_combo.setCurrentText(dims)
    w.spacing_edit.setText(text)
    assert not w.start_training()
    msg = w.status.text()
    assert f"Spacing '{text}' {reason}" in msg, msg
    assert "layers' own spacing (1 x 1 x 1.5 mm)" in msg, msg
    if dims == "2D":
        assert "in-plane axes" in msg and "axis 2, which keeps its own 1.5 mm" in msg, msg
    else:
        assert "1 value (isotropic) or 3, one per axis" in msg and "or 'auto'" in msg, msg
    assert not w.runner.busy and w.train_btn.isEnabled()


def test_continuing_keeps_the_models_own_settings(make_napari_viewer, small):
    from napari_medseg.core.checkpoint import Checkpoint
    from napari_medseg.core.config import ModelConfig, TrainConfig
    from napari_medseg.core.data import LabelMapping
    from napari_medseg.core.models import build_model
    from napari_medseg.gui.model_store import StoredModel

    w = _train_widget(_viewer(make_napari_viewer, small))
    mc = ModelConfig(spatial_dims=2, in_channels=2, out_channels=5, base_width=4, depth=2)
    own = TrainConfig(patch_size=(16, 16), loss="dice", decision="argmax", spacing=None,
                      intensity_norm="zscore")
    ck = Checkpoint(mc, own, LabelMapping((0, 1, 2, 3, 4)), (), None,
                    build_model(mc).state_dict())
    # the form says otherwise, even with a spacing a new model would refuse
    w.loss_combo.setCurrentText("dice_ce_fg")
    w.decision_combo.setCurrentText("foreground")
    w.norm_combo.setCurrentText("none")
    w.spacing_edit.setText("not a spacing")
    tc = w._configs(w.collect_inputs(), continue_from=StoredModel("m", ck))[1]
    assert (tc.loss, tc.decision, tc.spacing, tc.intensity_norm, tc.patch_size) == \
        ("dice", "argmax", None, "zscore", (16, 16))
    assert w.spacing_edit.text() == "not a spacing"  # left as typed, for the next new model


def test_train_with_foreground_loss_decision_and_spacing(make_napari_viewer, qtbot, small):
    w = _train_widget(_viewer(make_napari_viewer, small), epochs=2, steps=4)
    w.loss_combo.setCurrentText("dice_ce_fg")
    w.decision_combo.setCurrentText("foreground")
    w.spacing_edit.setText("2")  # 32x32 slices of 1 mm become 16x16
    w.patch_edit.setText("16 16")
    assert w.start_training(), w.status.text()
    assert "at 2x2 mm in plane" in w.status.text()
    qtbot.waitUntil(lambda: w.last_result is not None and _idle(w), timeout=60000)
    res = w.last_result
    assert not res.stopped and "best validation Dice" in w.status.text(), w.status.text()
    assert res.best_dice is not None and 0.0 < res.best_dice <= 1.0
    ck = w.current.checkpoint
    assert (ck.train_config.loss, ck.train_config.decision) == ("dice_ce_fg", "foreground")
    assert ck.spacing == (2.0, 2.0, 1.5) and ck.train_config.spacing == (2.0, 2.0, 1.5)
    assert "trained at 2x2 mm in plane" in w.model_label.text()
    assert "decision foreground" in w.model_label.toolTip()


def test_clear_messages_for_bad_inputs(make_napari_viewer, small):
    import torch

    from napari_medseg.core.checkpoint import Checkpoint
    from napari_medseg.core.config import ModelConfig, TrainConfig
    from napari_medseg.core.data import LabelMapping
    from napari_medseg.core.models import build_model
    from napari_medseg.gui.model_store import StoredModel
    from napari_medseg.gui.predict_widget import PredictWidget

    viewer = _viewer(make_napari_viewer, small)
    w = _train_widget(viewer)
    lab = viewer.layers["tissue"]
    lab.data = np.zeros_like(lab.data)
    assert not w.start_training() and "has no labels" in w.status.text()
    lab.data = np.ones_like(lab.data)
    assert not w.start_training() and "Only label value 1" in w.status.text()
    viewer.add_image(np.zeros((32, 32, 15), np.float32), name="short")
    w.set_channels(["T1", "short"])
    assert not w.start_training() and "differ in shape" in w.status.text()
    w.set_channels([])
    assert not w.start_training() and "Check at least one Image layer" in w.status.text()
    assert not w.runner.busy

    p = PredictWidget(viewer)
    viewer.window.add_dock_widget(p, name="predict")
    assert not p.predict() and "No model" in p.status.text()
    mc = ModelConfig(spatial_dims=3, in_channels=1, out_channels=2, base_width=4, depth=2)
    ck = Checkpoint(mc, TrainConfig(patch_size=(16, 16, 16)), LabelMapping((0, 1)), (), None,
                    {k: v.clone() for k, v in build_model(mc).state_dict().items()})
    torch.manual_seed(0)
    p.store.add(StoredModel("3d model", ck))
    viewer.add_image(np.zeros((32, 32), np.float32), name="flat")
    p.set_channels(["flat"])
    assert not p.predict() and "is a 3D model" in p.status.text()
    p.set_channels(["T1", "FLAIR"])
    assert not p.predict() and "expects 1 channel(s)" in p.status.text()


def test_predict_widget_loads_models_and_refuses_foreign_files(make_napari_viewer, small,
                                                              tmp_path):
    import torch

    from napari_medseg.core.checkpoint import Checkpoint, save_checkpoint
    from napari_medseg.core.config import ModelConfig, TrainConfig
    from napari_medseg.core.data import LabelMapping
    from napari_medseg.core.models import build_model
    from napari_medseg.gui.predict_widget import PredictWidget

    viewer = _viewer(make_napari_viewer, small)
    w = PredictWidget(viewer)
    torch.save({"w": torch.zeros(2)}, tmp_path / "foreign.pt")
    assert w.load_model(str(tmp_path / "foreign.pt")) is None
    assert "not a napari-medseg model" in w.status.text()
    mc = ModelConfig(spatial_dims=2, in_channels=2, out_channels=5, base_width=4, depth=2)
    save_checkpoint(tmp_path / "m.pt", Checkpoint(
        model_config=mc, train_config=TrainConfig(patch_size=(16, 16)),
        mapping=LabelMapping((0, 1, 2, 3, 4)), norms=(), spacing=None,
        state_dict=build_model(mc).state_dict()))
    entry = w.load_model(str(tmp_path / "m.pt"))
    assert entry is not None and entry.name == "m.pt"
    assert w.store.models["m.pt"] is entry


def _untrained(channel_names, *, dims=2):
    """An untrained 2-channel model (a real checkpoint) for the prediction widget's checks."""
    from napari_medseg.core.checkpoint import Checkpoint
    from napari_medseg.core.config import ModelConfig, TrainConfig
    from napari_medseg.core.data import LabelMapping
    from napari_medseg.core.models import build_model
    from napari_medseg.gui.model_store import StoredModel

    mc = ModelConfig(spatial_dims=dims, in_channels=len(channel_names), out_channels=5,
                     base_width=4, depth=2)
    ck = Checkpoint(mc, TrainConfig(patch_size=(16,) * dims), LabelMapping((0, 1, 2, 3, 4)), (),
                    None, build_model(mc).state_dict(), channel_names=list(channel_names))
    return StoredModel("two-channel model", ck)


@pytest.mark.parametrize("model, layers, expected", [
    (["T1", "FLAIR"], ["case2 flair", "case2 t1"], ["case2 t1", "case2 flair"]),
    (["/d/flair.nii.gz", "/d/t1c.nii.gz"], ["p4 t1c", "p4 flair"], ["p4 flair", "p4 t1c"]),
    (["t1", "t1c"], ["p t1c", "p t1"], ["p t1", "p t1c"]),  # "t1" is inside "t1c"
    (["T1", "FLAIR"], ["a", "b"], None),                    # nothing to go by: list order
    (["T1", "T1"], ["x t1", "y t1"], None),                 # ambiguous
])
def test_match_channels(model, layers, expected):
    from napari_medseg.gui.channel_order import match_channels

    assert match_channels(model, layers) == expected


def test_predict_feeds_channels_in_the_models_order_and_says_so(make_napari_viewer, small):
    """A new case opened FLAIR first must not give the model swapped inputs."""
    from napari_medseg.gui.predict_ui import WHOLE
    from napari_medseg.gui.predict_widget import PredictWidget

    viewer = make_napari_viewer()
    viewer.add_image(small.flair, name="case2 flair")
    viewer.add_image(small.t1, name="case2 t1")
    p = PredictWidget(viewer)
    p.store.add(_untrained(["T1", "FLAIR"]))
    p.set_channels([])
    p.channel_list.check_only(["case2 flair", "case2 t1"])
    assert p.checked_channels() == ["case2 flair", "case2 t1"]  # the viewer's order
    plan = p.plan(p.selected_model(), WHOLE)
    np.testing.assert_array_equal(plan.channels[0], small.t1)
    np.testing.assert_array_equal(plan.channels[1], small.flair)
    assert plan.note.startswith("Channels: T1 <- 'case2 t1', FLAIR <- 'case2 flair'.")

    # names that say nothing: the list order, which follows the viewer's and is shown
    viewer.layers["case2 flair"].name = "a"
    viewer.layers["case2 t1"].name = "b"
    assert p.checked_channels() == ["a", "b"]  # still checked after the renames
    viewer.layers.move(1, 0)
    assert p.checked_channels() == ["b", "a"]
    plan = p.plan(p.selected_model(), WHOLE)
    np.testing.assert_array_equal(plan.channels[0], small.t1)
    assert "T1 <- 'b', FLAIR <- 'a'" in plan.note


def test_renamed_layers_stay_chosen_in_every_widget(make_napari_viewer, small):
    from napari_medseg.gui.raters_widget import RatersWidget
    from napari_medseg.gui.restore_widget import RestoreWidget

    viewer = _viewer(make_napari_viewer, small)
    w = _train_widget(viewer)
    r = RatersWidget(viewer)
    viewer.add_labels((small.labels == 4).astype(np.int32), name="rater A")
    viewer.add_labels((small.labels == 4).astype(np.int32), name="rater B")
    r.set_raters(["rater A", "rater B"])
    s = RestoreWidget(viewer)
    assert s.checked_images() == ["T1"]

    viewer.layers["T1"].name = "T1 pre-op"
    viewer.layers["tissue"].name = "tissue v2"
    viewer.layers["rater A"].name = "rater A (Jo)"
    assert w.checked_channels() == ["T1 pre-op", "FLAIR"]
    assert w.labels_combo.currentText() == "tissue v2"
    assert r.checked_raters() == ["rater A (Jo)", "rater B"]
    assert s.checked_images() == ["T1 pre-op"]
    inp = w.collect_inputs()
    assert [c.name for c in inp.channels] == ["T1 pre-op", "FLAIR"] and inp.labels.name == \
        "tissue v2"
    assert len(r.collect_inputs()) == 2


def test_layers_on_other_grids_are_refused(make_napari_viewer, small):
    from napari_medseg.gui.predict_ui import WHOLE
    from napari_medseg.gui.predict_widget import PredictWidget

    viewer = _viewer(make_napari_viewer, small)
    w = _train_widget(viewer)
    viewer.layers["FLAIR"].translate = (45.0, -3.0, 2.0)  # same shape, 40 mm away
    assert not w.start_training()
    assert "'T1'" in w.status.text() and "'FLAIR'" in w.status.text()
    assert "do not lie on one grid" in w.status.text()
    p = PredictWidget(viewer)
    p.store.add(_untrained(["T1", "FLAIR"]))
    p.set_channels(["T1", "FLAIR"])
    with pytest.raises(ValueError, match="do not lie on one grid"):
        p.plan(p.selected_model(), WHOLE)
    viewer.layers["FLAIR"].translate = TRANSLATE
    viewer.layers["tissue"].scale = (2.0, 2.0, 2.0)
    w.set_channels(["T1", "FLAIR"])
    assert not w.start_training() and "Image and labels 'T1'" in w.status.text()
    assert not w.runner.busy


def test_stop_before_the_first_step_keeps_no_model(make_napari_viewer, qtbot, small,
                                                   monkeypatch):
    import threading

    from napari_medseg.gui import train_widget

    gate = threading.Event()
    real = train_widget._train_job

    def gated(*args, **kwargs):  # the worker waits until Stop was pressed
        gate.wait(20)
        return (yield from real(*args, **kwargs))

    monkeypatch.setattr(train_widget, "_train_job", gated)
    viewer = _viewer(make_napari_viewer, small)
    w = _train_widget(viewer, minutes=5)
    assert w.start_training()
    w.stop()
    gate.set()
    qtbot.waitUntil(lambda: w.last_result is not None and _idle(w), timeout=60000)
    assert w.last_result.steps == 0 and w.last_result.stopped
    assert w.current is None and not w.store.models
    assert "no model was kept" in w.status.text()


def test_training_again_after_closing_the_curves_panel(make_napari_viewer, qtbot, small):
    from napari_medseg.gui.plot import is_docked

    viewer = _viewer(make_napari_viewer, small)
    w = _train_widget(viewer, epochs=1, steps=2)
    viewer.window.add_dock_widget(w, name="train")
    assert w.start_training()
    qtbot.waitUntil(lambda: w.last_result is not None and _idle(w), timeout=60000)
    dock = w._plot_dock
    dock.title.close_button.click()  # napari deletes the dock, keeps the plot
    assert not is_docked(w.plot, dock)
    first = w.last_result
    assert w.start_training(), w.status.text()
    qtbot.waitUntil(lambda: w.last_result is not first and _idle(w), timeout=60000)
    assert is_docked(w.plot, w._plot_dock)
    assert "medseg training curves" in viewer.window.dock_widgets


def test_predict_errors_name_the_layer(make_napari_viewer, qtbot, small):
    from napari_medseg.gui.predict_widget import PredictWidget

    viewer = make_napari_viewer()
    bad = small.flair.astype(np.float32).copy()
    bad[3, 4, 5] = np.nan
    viewer.add_image(small.t1, name="case2 t1")
    viewer.add_image(bad, name="case2 flair")
    p = PredictWidget(viewer)
    p.store.add(_untrained(["T1", "FLAIR"]))
    p.channel_list.check_only(["case2 t1", "case2 flair"])
    assert p.predict()
    qtbot.waitUntil(lambda: p.predict_btn.isEnabled() and "failed" in p.status.text(),
                    timeout=30000)
    assert "case2 flair contains 1 NaN/inf voxels" in p.status.text()


def test_default_3d_patch_is_the_command_lines(make_napari_viewer):
    """One recipe: the widget's 3D patch is train's (48^3, the benchmarked one), not 64^3."""
    from napari_medseg.core.plan import PATCH_3D, PATCH_MULTIPLE, default_patch
    from napari_medseg.gui.train_widget import TrainWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((100, 90, 60), np.float32), name="big")
    viewer.add_labels(np.zeros((100, 90, 60), np.int32), name="lab")
    w = TrainWidget(viewer)
    w.dims_combo.setCurrentText("3D")
    want = default_patch((100, 90, 60), 3, cap=PATCH_3D, multiple=PATCH_MULTIPLE)
    assert want == (48, 48, 48)
    assert w.patch_edit.text() == "48 48 48"


def test_labels_flipped_unlike_the_image_are_refused_with_the_fix(make_napari_viewer, qtbot,
                                                                  small):
    """A BraTS image carries rotate=diag(-1,-1,1); a plain add_labels layer does not."""
    viewer = make_napari_viewer()
    viewer.add_image(small.t1, name="T1", rotate=np.diag([-1.0, -1.0, 1.0]))
    lab = viewer.add_labels(small.labels.astype(np.int32), name="tissue")
    w = _train_widget(viewer)
    w.set_channels(["T1"])
    assert not w.start_training()
    text = w.status.text()
    assert "'T1' (axes - - +) and 'tissue' (axes + + +)" in text, text
    assert "flipped or rotated differently" in text and "New labels" in text
    lab.rotate = viewer.layers["T1"].rotate  # the fix the message gives
    assert w.start_training(), w.status.text()
    w.stop()
    qtbot.waitUntil(lambda: _idle(w), timeout=60000)
