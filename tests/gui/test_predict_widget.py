"""The prediction widget's preview, slice axis, modes and probability layer, clicked in a
real viewer (pytest-qt, Xvfb).

Each test reproduces a defect a review of prediction found: a preview normalised on its
own slice, a 2D model slicing a TIFF stack across its images, a preview of a slice the
viewer does not show, modes offered where they mean nothing, and a "probability" layer
that showed the most probable class's probability.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from napari_medseg.gui.predict_ui import SLICE, WHOLE, WHOLE_IMAGE
from napari_medseg.gui.predict_widget import PredictWidget
from napari_medseg.gui.widget_base import InputError


class _Pointwise(nn.Module):
    """Class 1 where the normalised intensity passes 0.5: no context, any window size."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        self.spatial_dims = dims
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x[:, :1]), 20 * (x[:, :1] - 0.5)], 1)


class _Constant(nn.Module):
    """The same probabilities everywhere: a softmax of ``probs``, or one sigmoid output."""

    def __init__(self, probs, dims: int = 2) -> None:
        super().__init__()
        self.spatial_dims = dims
        p = torch.tensor(probs, dtype=torch.float32)
        self.logits = nn.Parameter(p.log() if len(probs) > 1 else torch.logit(p),
                                   requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.logits.shape[0]
        return self.logits.reshape(1, k, *([1] * (x.ndim - 2))).expand(
            (x.shape[0], k, *x.shape[2:]))


def _stored(net, dims, *, classes=2, name="m", spacing=None, slice_axis=2, **tc):
    from napari_medseg.core.checkpoint import Checkpoint
    from napari_medseg.core.config import ModelConfig, TrainConfig
    from napari_medseg.core.data import LabelMapping
    from napari_medseg.gui.model_store import StoredModel

    mc = ModelConfig(spatial_dims=dims, in_channels=1, out_channels=classes, base_width=4,
                     depth=2)
    cfg = TrainConfig(patch_size=(8,) * dims, slice_axis=slice_axis, spacing=spacing, **tc)
    values = tuple(range(max(classes, 2)))
    return StoredModel(name, Checkpoint(mc, cfg, LabelMapping(values), (), spacing, {}), net)


def _widget(viewer, stored, layer="img"):
    p = PredictWidget(viewer)
    p.tta_check.setChecked(False)
    p.device_combo.setCurrentText("cpu")
    p.store.add(stored)
    p.set_channels([layer])
    return p


def _run(p, qtbot, mode=None):
    before = p.last_layers[0] if p.last_layers else None
    assert p.predict(mode), p.status.text()
    qtbot.waitUntil(lambda: bool(p.last_layers) and p.last_layers[0] is not before and not p.adding
                    and p.predict_btn.isEnabled(), timeout=30000)
    return p.last_layers


def _ramp():
    """Brightness rising along axis 0: one slice normalised alone differs from the volume."""
    z = np.arange(16, dtype=np.float32)[:, None, None]
    return z + np.random.default_rng(0).random((16, 24, 24)).astype(np.float32) * 4


@pytest.mark.parametrize("dims", [3, 2])
def test_the_preview_shows_what_the_whole_volume_prediction_labels(make_napari_viewer, qtbot,
                                                                     dims):
    viewer = make_napari_viewer()
    vol = _ramp()
    viewer.add_image(vol, name="img")
    p = _widget(viewer, _stored(_Pointwise(dims), dims, slice_axis=0, crop_foreground=False))
    whole = _run(p, qtbot, WHOLE)[0].data.copy()
    assert 0 < whole[10].sum() < whole[10].size  # the slice holds both classes
    viewer.dims.set_point(0, 10)
    assert p.mode_combo.model().item(1).isEnabled()
    prev, prob, _ = _run(p, qtbot, SLICE)
    assert prev.name == "img prediction preview (axis 0, slice 10)"
    np.testing.assert_array_equal(prev.data[10], whole[10])
    assert not np.delete(prev.data, 10, axis=0).any()
    assert "Preview of slice 10 along axis 0" in p.status.text()


def test_a_2d_model_slices_along_the_chosen_axis(make_napari_viewer, qtbot, monkeypatch):
    import napari_medseg.core.inference as inference

    axes = []
    real = inference.predict_volume

    def spy(model, image, **kw):
        axes.append(kw["slice_axis"])
        return (yield from real(model, image, **kw))

    monkeypatch.setattr(inference, "predict_volume", spy)
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((8, 40, 40)).astype(np.float32),
                     name="img")  # a TIFF stack: Z,Y,X, the slider on Z
    # trained on 2D images: slice_axis is TrainConfig's meaningless default, 2
    p = _widget(viewer, _stored(_Pointwise(2), 2, spacing=(0.5, 0.5)))
    assert p.axis_combo.isVisibleTo(p) and p.slice_axis() == 0  # the slider's axis
    plan = p.plan(p.selected_model(), WHOLE)
    assert plan.slice_axis == 0 and "slice by slice along axis 0" in plan.note
    _run(p, qtbot, WHOLE)
    assert axes == [0] and "slice by slice along axis 0" in p.status.text()

    # the user's choice holds while result layers come and go
    p.axis_combo.setCurrentIndex(1)
    p.axis_combo.activated.emit(1)
    _run(p, qtbot, WHOLE)
    assert axes == [0, 1] and p.slice_axis() == 1

    # a model trained on volumes (3 spacing values): its own training axis
    p.store.add(_stored(_Pointwise(2), 2, name="vol", spacing=(0.5, 0.5, 3.0), slice_axis=2))
    assert p.model_combo.currentText() == "vol" and p.slice_axis() == 2
    # one whose checkpoint does not say (native grid, no image_dims: `train --dims 2`'s
    # default) keeps its training axis too -- the slider's axis 0 would cut sagittal slices
    p.store.add(_stored(_Pointwise(2), 2, name="native", spacing=None, slice_axis=2))
    assert p.model_combo.currentText() == "native" and p.slice_axis() == 2
    # a 3D model: no slice axis
    p.store.add(_stored(_Pointwise(3), 3, name="3d"))
    assert not p.axis_combo.isVisibleTo(p) and p.slice_axis() is None


def test_a_2d_model_previews_only_the_slice_the_viewer_shows(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(_ramp()[:12, :12, :12], name="img")
    viewer.dims.set_point(0, 9)  # the slider moves along axis 0
    p = _widget(viewer, _stored(_Pointwise(2), 2, spacing=(1.0, 1.0, 1.0), slice_axis=2,
                                crop_foreground=False))
    assert p.slice_axis() == 2  # trained on volumes, along axis 2
    assert not p.mode_combo.model().item(1).isEnabled()
    with pytest.raises(InputError, match="slices along axis 2; the viewer's slider moves "
                                         "along axis 0: choose slice axis 0"):
        p.plan(p.selected_model(), SLICE)
    assert not p.predict(SLICE) and "choose slice axis 0" in p.status.text()

    p.axis_combo.setCurrentIndex(0)
    p.axis_combo.activated.emit(0)
    assert p.mode_combo.model().item(1).isEnabled()
    p.mode_combo.setCurrentText(SLICE)
    prev = _run(p, qtbot)[0]
    assert prev.name == "img prediction preview (axis 0, slice 9)"
    assert prev.data[9].any() and not np.delete(prev.data, 9, axis=0).any()
    status = p.status.text()
    assert "along axis 0" in status and "Preview of slice 9 along axis 0" in status
    assert "Added 'img prediction preview" in status

    # 3D display: no displayed slice, no preview
    viewer.dims.ndisplay = 3
    assert not p.mode_combo.model().item(1).isEnabled()
    assert p.mode_combo.currentText() == WHOLE
    with pytest.raises(InputError, match="The viewer shows 3D"):
        p.plan(p.selected_model(), SLICE)
    viewer.dims.ndisplay = 2
    assert p.mode_combo.model().item(1).isEnabled()


def test_a_3d_models_preview_is_refused_in_3d_display(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(_ramp(), name="img")
    p = _widget(viewer, _stored(_Pointwise(3), 3))
    assert p.mode_combo.model().item(1).isEnabled()
    viewer.dims.ndisplay = 3
    with pytest.raises(InputError, match="The viewer shows 3D"):
        p.plan(p.selected_model(), SLICE)


def test_a_2d_image_offers_the_whole_image_only(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((20, 20)).astype(np.float32), name="flat")
    viewer.add_image(_ramp(), name="img")
    p = _widget(viewer, _stored(_Pointwise(2), 2), layer="flat")

    def items():
        return [p.mode_combo.itemText(i) for i in range(p.mode_combo.count())]

    assert items() == [WHOLE_IMAGE] and not p.mode_combo.isEnabled()
    assert not p.axis_combo.isVisibleTo(p)
    lab = _run(p, qtbot, SLICE)[0]  # a preview of a 2D image is the image
    assert lab.name == "flat prediction" and "preview" not in p.status.text()
    p.set_channels(["img"])
    assert items() == [WHOLE, SLICE] and p.mode_combo.isEnabled()
    assert p.axis_combo.isVisibleTo(p)
    p.set_channels(["flat"])
    assert items() == [WHOLE_IMAGE]


@pytest.mark.parametrize("probs, decision, label, p_fg", [
    ((0.45, 0.30, 0.25), "foreground", 1, 0.55),  # background is the most probable class
    ((0.45, 0.30, 0.25), "argmax", 0, 0.55),
    ((0.2,), "argmax", 0, 0.2),                   # a sigmoid: its output, not max(p, 1 - p)
    ((0.7,), "argmax", 1, 0.7),
])
def test_the_probability_layer_is_the_foreground_probability(make_napari_viewer, qtbot, probs,
                                                             decision, label, p_fg):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((12, 14)).astype(np.float32), name="img")
    p = _widget(viewer, _stored(_Constant(probs), 2, classes=len(probs), decision=decision))
    lab, prob, _ = _run(p, qtbot)
    assert prob.name == "img foreground probability"
    assert (lab.data == label).all()
    np.testing.assert_allclose(prob.data, p_fg, atol=1e-5)
    assert "foreground probability" in p.status.text()


def test_keep_the_largest_region_on_whole_predictions_only(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    vol = np.zeros((16, 20, 20), np.float32)
    vol[2:5, 2:5, 2:5] = 1      # 27 voxels
    vol[8:14, 10:16, 10:16] = 1  # 216 voxels: the one kept
    viewer.add_image(vol, name="img")
    p = _widget(viewer, _stored(_Pointwise(3), 3, crop_foreground=False,
                                 intensity_norm="none"))
    plain = _run(p, qtbot, WHOLE)[0].data.copy()
    assert plain.sum() == 27 + 216
    p.largest_check.setChecked(True)
    kept = _run(p, qtbot, WHOLE)[0].data
    expected = (vol > 0).astype(kept.dtype)
    expected[:8] = 0
    np.testing.assert_array_equal(kept, expected)
    assert ("Largest region kept: 1 other region(s), 27 voxel(s) set to background"
            in p.status.text())
    viewer.dims.set_point(0, 3)
    prev = _run(p, qtbot, SLICE)[0].data
    assert prev[3].sum() == 9  # the small cube's slice: a preview is not cleaned up
    assert "applies to whole predictions, not to a preview" in p.status.text()
