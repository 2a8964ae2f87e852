"""The Restoration widget, clicked in a real viewer (pytest-qt, Xvfb).

Small for two shared CPU cores: a 64x64 phantom (and a 24x24x8 volume), a
width-8 UNet, a few epochs of 20 steps (about a second of training each).
"""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt
from scipy import ndimage as ndi

from napari_medseg.core import metrics as M
from napari_medseg.core.degrade import degrade

LEFT = Qt.MouseButton.LeftButton
SCALE = (0.5, 0.8)
TRANSLATE = (3.0, -2.0)
SPEC = "rician:0.1"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def images():
    """A 2D 'MR slice' (air, head, a bright lesion, smooth texture) and a noisy copy."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    clean = (40.0 + 60 * ((yy - 30) ** 2 + (xx - 34) ** 2 < 22 ** 2)
             + 40 * ((yy - 24) ** 2 + (xx - 40) ** 2 < 8 ** 2))
    clean = ndi.gaussian_filter(clean.astype(np.float32), 1.0) + \
        20 * ndi.gaussian_filter(rng.random((64, 64)).astype(np.float32), 4)
    clean[:6] = 0
    return clean.astype(np.float32), degrade(clean, SPEC, seed=1)


@pytest.fixture
def notes(monkeypatch):
    """Record napari notifications raised by the worker module."""
    from napari_medseg.gui import workers

    seen: dict[str, list[str]] = {"error": [], "info": []}
    monkeypatch.setattr(workers, "show_error", lambda m: seen["error"].append(m))
    monkeypatch.setattr(workers, "show_info", lambda m: seen["info"].append(m))
    return seen


def _viewer(make_napari_viewer, images):
    clean, noisy = images
    viewer = make_napari_viewer()
    viewer.add_image(clean, name="clean", scale=SCALE, translate=TRANSLATE)
    viewer.add_image(noisy, name="noisy", scale=SCALE, translate=TRANSLATE)
    return viewer


def _widget(viewer, *, epochs=3, steps=20):
    from napari_medseg.gui.restore_widget import RestoreWidget

    w = RestoreWidget(viewer)
    viewer.window.add_dock_widget(w, name="restore")
    w.width_spin.setValue(8)
    w.patch_edit.setText("32 32")
    w.limit_combo.setCurrentText("epochs")
    w.limit_spin.setValue(epochs)
    w.steps_spin.setValue(steps)
    w.batch_spin.setValue(4)
    w.device_combo.setCurrentText("cpu")
    return w


def _idle(w):
    return not w.runner.busy and w.train_btn.isEnabled()


def test_preview_train_restore_compare_save(make_napari_viewer, qtbot, images, tmp_path):
    clean, noisy = images
    viewer = _viewer(make_napari_viewer, images)
    w = _widget(viewer)
    assert w.mode() == "synthetic" and w.checked_images() == ["clean"]
    assert w.patch_edit.text() == "32 32" and not w.restore_btn.isEnabled()
    w.set_degradation("rician", 0.1)
    assert w.spec_edit.text() == SPEC

    # preview: one layer, degraded like training, placed on the clean image
    n = len(viewer.layers)
    qtbot.mouseClick(w.preview_btn, LEFT)
    prev = w.preview_layer
    assert prev.name == "degradation preview" and len(viewer.layers) == n + 1
    np.testing.assert_allclose(prev.data, degrade(clean, SPEC, seed=0))
    np.testing.assert_allclose(prev.scale, SCALE)
    np.testing.assert_allclose(prev.translate, TRANSLATE)
    w.set_degradation("blur", 2.0)
    qtbot.mouseClick(w.preview_btn, LEFT)
    assert len(viewer.layers) == n + 1 and w.preview_layer is not prev  # replaced, not added
    assert w.preview_layer.metadata["degrade"] == "blur:2"
    assert "degradation preview" not in [w.image_list.item(i).text()
                                         for i in range(w.image_list.count())]
    w.spec_edit.setText(SPEC)  # typed by hand: the pickers follow
    assert w.degrade_combo.currentData() == "rician" and w.strength_spin.value() == 0.1
    assert w.patch_edit.text() == "32 32"  # new layers do not reset a typed patch

    # train in the worker: live curve, a model that beats the noisy input
    qtbot.mouseClick(w.train_btn, LEFT)
    assert not w.train_btn.isEnabled() and w.stop_btn.isEnabled() and w.pause_btn.isEnabled()
    qtbot.waitUntil(lambda: w.last_result is not None and _idle(w), timeout=60000)
    res = w.last_result
    assert len(w.plot.loss) >= 3 and len(w.plot.psnr) == 3 and len(w.plot.psnr_input) == 3
    assert res.best_psnr > w.plot.psnr_input[0][1] + 1.0, (res.history, w.status.text())
    assert "best validation PSNR" in w.status.text()
    assert "2D unet restoration model" in w.model_label.text()
    assert "synthetic Rician noise (sigma 10%), loss l1" in w.model_label.text()
    assert w.restore_btn.isEnabled() and w._pbar is None

    # restore the noisy layer into a new layer, compared with the clean one
    w.input_combo.setCurrentText("noisy")
    w.ref_combo.setCurrentText("clean")
    n = len(viewer.layers)
    qtbot.mouseClick(w.restore_btn, LEFT)
    qtbot.waitUntil(lambda: len(w.last_layers) == 3 and _idle(w), timeout=30000)
    restored, err, smap = w.last_layers
    assert len(viewer.layers) == n + 3 and viewer.layers["noisy"].data is not restored.data
    assert [x.name for x in w.last_layers] == ["noisy restored", "noisy restored |error|",
                                               "noisy restored SSIM map"]
    for layer in w.last_layers:
        np.testing.assert_allclose(layer.scale, SCALE)
        np.testing.assert_allclose(layer.translate, TRANSLATE)
        assert layer.data.shape == clean.shape
    dr = float(clean.max() - clean.min())
    gain = M.psnr(restored.data, clean, data_range=dr) - M.psnr(noisy, clean, data_range=dr)
    assert gain > 1.0, gain  # closer to the clean image than the noisy one

    # the readout and the maps are the core's metrics
    ref = M.evaluate_restoration(restored.data.astype(np.float64), clean.astype(np.float64),
                                 win_size=7)
    got = w.last_comparison.metrics
    for key in ("mae", "mse", "nmse", "psnr", "ssim", "data_range"):
        assert got[key] == pytest.approx(ref[key], rel=1e-9), key
    assert got["psnr"] > w.last_comparison.input_metrics["psnr"]
    s, full = M.ssim(restored.data.astype(np.float64), clean.astype(np.float64),
                     data_range=dr, win_size=7, full=True)
    np.testing.assert_allclose(smap.data, full, atol=1e-6)
    np.testing.assert_allclose(err.data, np.abs(restored.data - clean), atol=1e-4)
    assert smap.colormap.name == "viridis" and tuple(smap.contrast_limits) == (0.0, 1.0)
    assert err.colormap.name == "inferno"
    text = w.readout.text()
    assert f"{ref['psnr']:.2f}" in text and f"{ref['ssim']:.4f}" in text
    assert f"{ref['nmse']:.4g}" in text and f"{ref['mae']:.4g}" in text
    # the maps are not offered as images to train on or compare with
    assert "noisy restored SSIM map" not in [w.ref_combo.itemText(i)
                                             for i in range(w.ref_combo.count())]

    viewer.layers.selection.active = smap
    viewer.window.resize(1500, 1150)
    qtbot.wait(100)
    shot = viewer.screenshot(canvas_only=False, flash=False)
    from imageio import v3 as iio  # napari's own dependency

    assert shot.ndim == 3 and shot.shape[0] > 600  # the whole window, docks included
    iio.imwrite(tmp_path / "restore_widget.png", shot)

    # again: a new layer, nothing overwritten
    qtbot.mouseClick(w.restore_btn, LEFT)
    qtbot.waitUntil(lambda: w.last_layers[0] is not restored and len(w.last_layers) == 3
                    and _idle(w), timeout=30000)
    assert w.last_layers[0].name == "noisy restored [2]" and viewer.layers["noisy restored"] \
        is restored

    # save, load back: described as a restoration model
    path = w.save_model(str(tmp_path / "r.pt"))
    entry = w.load_model(path)
    assert entry is not None and w.current is entry and "restoration model" in \
        w.model_label.text()


def test_3d_pairs_training_and_volume_preview(make_napari_viewer, qtbot, monkeypatch):
    from napari_medseg.gui import restore_jobs

    rng = np.random.default_rng(3)
    clean = ndi.gaussian_filter(rng.random((24, 24, 8)).astype(np.float32), 2) * 400 + 100
    noisy = degrade(clean, "gaussian:0.1", seed=4)
    viewer = make_napari_viewer()
    geo = {"scale": (1.0, 1.0, 2.5), "translate": (5.0, -3.0, 2.0)}
    viewer.add_image(clean, name="clean", **geo)
    viewer.add_image(noisy, name="noisy", **geo)
    viewer.dims.order = (2, 0, 1)  # the slider moves along axis 2
    w = _widget(viewer, epochs=1, steps=3)
    assert w.axis_combo.currentIndex() == 2

    # a large volume is previewed on the displayed slice only
    monkeypatch.setattr(restore_jobs, "PREVIEW_MAX_VOXELS", 100)
    viewer.dims.set_point(2, 2.0 + 5 * 2.5)
    prev = w.preview().data
    assert prev[..., 5].any() and not np.delete(prev, 5, axis=2).any()
    assert "slice 5 only" in w.status.text()

    w.set_mode("pairs")
    assert not w.target_combo.isHidden() and not w.preview_btn.isEnabled()
    w.set_images(["noisy"])
    w.target_combo.setCurrentText("clean")
    w.dims_combo.setCurrentText("3D")
    w.patch_edit.setText("16 16 8")
    assert w.start_training()
    qtbot.waitUntil(lambda: w.last_result is not None and _idle(w), timeout=60000)
    assert w.current.checkpoint.model_config.spatial_dims == 3 and w.plot.psnr
    w.input_combo.setCurrentText("noisy")
    assert w.restore()
    qtbot.waitUntil(lambda: len(w.last_layers) == 1 and _idle(w), timeout=30000)
    out = w.last_layers[0]
    assert out.data.shape == clean.shape and out.data.dtype == np.float32
    np.testing.assert_allclose(out.scale, geo["scale"])
    np.testing.assert_allclose(out.translate, geo["translate"])
    np.testing.assert_allclose(np.diag(out.metadata["affine"])[:3], geo["scale"])
    assert "Choose a reference" in w.readout.text()


def test_pause_resume_stop_keeps_a_model(make_napari_viewer, qtbot, images, notes):
    viewer = _viewer(make_napari_viewer, images)
    w = _widget(viewer)
    w.limit_combo.setCurrentText("minutes")
    w.limit_spin.setValue(5)
    assert w.start_training()
    qtbot.waitUntil(lambda: len(w.plot.loss) >= 2, timeout=30000)
    assert not w.restore() and notes["info"] and "already running" in notes["info"][-1]
    qtbot.mouseClick(w.pause_btn, LEFT)
    qtbot.waitUntil(lambda: w.pause_btn.text() == "Resume", timeout=20000)
    n = len(w.plot.loss)
    qtbot.wait(800)
    assert len(w.plot.loss) == n and w.runner.busy
    qtbot.mouseClick(w.pause_btn, LEFT)
    qtbot.waitUntil(lambda: len(w.plot.loss) > n, timeout=20000)
    qtbot.mouseClick(w.stop_btn, LEFT)
    qtbot.waitUntil(lambda: w.last_result is not None and _idle(w), timeout=30000)
    assert w.last_result.stopped and w.current is not None and "stopped" in w.status.text()
    assert not notes["error"]


def test_continue_warm_starts_from_the_current_model(make_napari_viewer, qtbot, images,
                                                      notes, monkeypatch):
    import torch

    from napari_medseg.core import restoration

    viewer = _viewer(make_napari_viewer, images)
    w = _widget(viewer, epochs=1, steps=10)
    assert not w.continue_btn.isEnabled()  # nothing to continue yet
    assert not w.start_training(continue_=True) and "No current model" in w.status.text()
    qtbot.mouseClick(w.train_btn, LEFT)
    qtbot.waitUntil(lambda: w.current is not None and _idle(w), timeout=60000)
    first = w.current
    assert w.continue_btn.isEnabled()
    seen = []
    original = restoration.fit_restoration

    def spy(*args, **kw):
        seen.append(kw.get("init_state"))
        return (yield from original(*args, **kw))

    monkeypatch.setattr(restoration, "fit_restoration", spy)
    w.width_spin.setValue(16)  # ignored on Continue: the model keeps its architecture
    qtbot.mouseClick(w.continue_btn, LEFT)
    assert "Continuing" in w.status.text()
    qtbot.waitUntil(lambda: w.current is not first and _idle(w), timeout=60000)
    assert len(seen) == 1 and seen[0] is not None
    for k, v in first.checkpoint.state_dict.items():
        assert torch.equal(seen[0][k], v), k
    assert w.current.checkpoint.model_config == first.checkpoint.model_config
    assert len(w.store.models) == 2 and not notes["error"]
    # another mode or dimensionality is refused with the reason, and nothing starts
    w.set_mode("noise2void")
    assert not w.start_training(continue_=True)
    assert "was trained in 'synthetic' mode" in w.status.text() and not w.runner.busy
    assert len(seen) == 1


def test_worker_error_reaches_widget_and_leaves_it_ready(make_napari_viewer, qtbot, images,
                                                         notes, monkeypatch):
    from napari_medseg.core import restoration
    from napari_medseg.core.events import Message

    def broken_fit(*args, **kwargs):
        yield Message("training on cpu")
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(restoration, "fit_restoration", broken_fit)
    viewer = _viewer(make_napari_viewer, images)
    w = _widget(viewer)
    for _ in range(2):  # ready again after the failure
        assert w.start_training()
        qtbot.waitUntil(lambda: _idle(w) and bool(notes["error"]), timeout=20000)
        assert "out of memory" in notes["error"][-1]
        assert "Training failed: CUDA out of memory" in w.status.text()
        assert "ff7070" in w.status.styleSheet() and w._pbar is None
        assert w.preview_btn.isEnabled() and not w.stop_btn.isEnabled()
        notes["error"].clear()


def test_clear_messages_and_refused_models(make_napari_viewer, images, tmp_path):
    from napari_medseg.core.checkpoint import Checkpoint, save_checkpoint
    from napari_medseg.core.config import ModelConfig, TrainConfig
    from napari_medseg.core.data import LabelMapping
    from napari_medseg.core.models import build_model
    from napari_medseg.core.restoration import RestoreConfig, restoration_model_config
    from napari_medseg.core.restoration.train import _checkpoint
    from napari_medseg.core.restoration.data import prepare_restore_case
    from napari_medseg.gui.model_store import StoredModel
    from napari_medseg.gui.predict_widget import PredictWidget

    clean, _ = images
    viewer = _viewer(make_napari_viewer, images)
    w = _widget(viewer)
    assert not w.restore() and "No restoration model" in w.status.text()
    w.set_images([])
    assert not w.start_training() and "Check at least one clean Image layer" in w.status.text()
    w.set_images(["clean"])
    w.spec_edit.setText("fog:3")
    assert not w.start_training() and "fog" in w.status.text()
    w.set_mode("pairs")
    assert not w.start_training() and "exactly one noisy layer" in w.status.text()
    viewer.add_image(np.zeros((64, 60), np.float32), name="narrow")
    w.target_combo.setCurrentText("narrow")
    assert not w.start_training() and "differ in shape" in w.status.text()
    w.loss_combo.setCurrentText("l1+ssim")
    w.set_mode("noise2void")
    assert w.loss_combo.currentText() == "mse"  # blind-spot training takes pixel losses
    w.target_combo.setCurrentText("(none)")
    w.loss_combo.setCurrentText("l1+ssim")
    assert not w.start_training() and "pixel-wise" in w.status.text()
    assert not w.runner.busy

    # a segmentation model is refused here...
    mc = ModelConfig(spatial_dims=2, in_channels=1, out_channels=2, base_width=4, depth=2)
    save_checkpoint(tmp_path / "seg.pt", Checkpoint(
        mc, TrainConfig(patch_size=(16, 16)), LabelMapping((0, 1)), (), None,
        build_model(mc).state_dict()))
    assert w.load_model(str(tmp_path / "seg.pt")) is None and w.current is None
    assert "is a segmentation model, but a restoration model is needed here" in \
        w.status.text() and "ff7070" in w.status.styleSheet()

    # ... and a restoration model in the prediction widget, which never lists one
    rmc = restoration_model_config(base_width=4, depth=2)
    rc = RestoreConfig(degrade=SPEC, patch_size=(16, 16))
    case = prepare_restore_case(clean, mode="synthetic", degrade=SPEC)
    ck = _checkpoint(rmc, rc, build_model(rmc).state_dict(), [], [case], ["clean"], [])
    save_checkpoint(tmp_path / "rest.pt", ck)
    p = PredictWidget(viewer)
    viewer.window.add_dock_widget(p, name="predict")
    assert p.load_model(str(tmp_path / "rest.pt")) is None
    assert "is a restoration model" in p.status.text() and "Restoration widget" in \
        p.status.text()
    assert w.load_model(str(tmp_path / "rest.pt")) is not None
    w.store.add(StoredModel("another", ck))
    assert p.model_combo.count() == 0 and not p.store.models
    with pytest.raises(ValueError, match="restoration model"):
        p.store.add(StoredModel("wrong", ck))


def test_widget_is_contributed_by_the_plugin(make_napari_viewer):
    from napari_medseg.gui.restore_widget import RestoreWidget

    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-medseg", "Restoration")
    assert isinstance(widget, RestoreWidget)


def test_grids_default_axis_and_preview_follow_the_command_line(make_napari_viewer, images):
    """A review found: a clean layer 20 mm away trained as a pair and scored as reference; a
    thick-slice volume sliced across its 6.5 mm axis (the CLI slices along it); Preview
    enabled in pairs mode after a job."""
    from napari_medseg.gui.model_store import StoredModel

    clean, noisy = images
    viewer = _viewer(make_napari_viewer, images)
    viewer.add_image(clean, name="clean elsewhere", scale=SCALE,
                     translate=(TRANSLATE[0] + 20.0, TRANSLATE[1]))
    w = _widget(viewer)
    w.set_mode("pairs")
    w.set_images(["noisy"])
    w.target_combo.setCurrentText("clean elsewhere")
    assert not w.start_training()
    assert "clean elsewhere" in w.status.text() and "grid" in w.status.text()
    w._set_running(False)
    assert not w.preview_btn.isEnabled()  # pairs mode has no degradation to preview
    w.set_mode("synthetic")
    w._set_running(False)
    assert w.preview_btn.isEnabled()

    w.current = StoredModel("m", _tiny_restoration_model())
    w.input_combo.setCurrentText("noisy")
    w.ref_combo.setCurrentText("clean elsewhere")
    assert not w.restore() and "grid" in w.status.text()

    vol = np.random.default_rng(0).random((24, 24, 8)).astype(np.float32)
    viewer.add_image(vol, name="thick", scale=(0.78, 0.78, 6.5))
    assert viewer.dims.not_displayed[-1] == 0  # the slider moves along axis 0
    w.set_images(["thick"])
    w._patch_from_data()
    assert w.axis_combo.currentIndex() == 2  # along the thick slices, as the CLI


def _tiny_restoration_model():
    from napari_medseg.core.models import build_model
    from napari_medseg.core.restoration import RestoreConfig, restoration_model_config
    from napari_medseg.core.restoration.data import prepare_restore_case
    from napari_medseg.core.restoration.train import _checkpoint

    rmc = restoration_model_config(base_width=4, depth=2)
    rc = RestoreConfig(degrade=SPEC, patch_size=(16, 16))
    case = prepare_restore_case(np.zeros((32, 32), np.float32), mode="synthetic", degrade=SPEC)
    return _checkpoint(rmc, rc, build_model(rmc).state_dict(), [], [case], ["clean"], [])
