"""Tests for napari_medseg.core.inference (sliding window, predict_volume)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from napari_medseg.core.events import Progress
from napari_medseg.core.inference import (
    Prediction,
    gaussian_importance,
    predict_volume,
    sliding_window,
    tile_starts,
)


def drain(gen):
    """Run a generator to the end: (events, return value)."""
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            return events, stop.value


def ones_fn(k: int = 2):
    def fn(x: torch.Tensor) -> torch.Tensor:
        return torch.ones((x.shape[0], k, *x.shape[2:]), dtype=x.dtype, device=x.device)

    return fn


def identity(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


# --------------------------------------------------------------------------- tile_starts


@settings(max_examples=150, deadline=None)
@given(
    dims=st.lists(
        st.tuples(st.integers(1, 40), st.integers(1, 16)), min_size=1, max_size=3
    ),
    overlap=st.floats(0.0, 0.95),
)
def test_tile_starts_cover_every_voxel(dims, overlap):
    shape = tuple(s for s, _ in dims)
    patch = tuple(p for _, p in dims)
    padded = tuple(max(s, p) for s, p in dims)
    starts = tile_starts(shape, patch, overlap)
    assert len(set(starts)) == len(starts)
    cover = np.zeros(padded, dtype=int)
    for start in starts:
        assert all(0 <= s <= ps - p for s, ps, p in zip(start, padded, patch))
        cover[tuple(slice(s, s + p) for s, p in zip(start, patch))] += 1
    assert cover.min() >= 1
    for ax, (ps, p) in enumerate(zip(padded, patch)):
        axis_starts = sorted({s[ax] for s in starts})
        assert axis_starts[0] == 0
        assert axis_starts[-1] + p == ps  # last window flush with the end
        steps = np.diff(axis_starts)
        # neighbours overlap by about overlap * patch (never a gap)
        assert all(steps <= max(1, math.ceil(p * (1 - overlap))))


def test_tile_starts_small_values_by_hand():
    assert tile_starts((10,), (4,), 0.5) == [(0,), (2,), (4,), (6,)]
    assert tile_starts((8,), (4,), 0.0) == [(0,), (4,)]
    assert tile_starts((9,), (4,), 0.0) == [(0,), (2,), (5,)]
    assert tile_starts((3, 5), (4, 5), 0.5) == [(0, 0)]  # smaller than patch: one window
    assert tile_starts((6, 4), (4, 4), 0.5) == [(0, 0), (2, 0)]


def test_tile_starts_errors():
    with pytest.raises(ValueError, match="one patch size per axis"):
        tile_starts((10, 10), (4,), 0.5)
    with pytest.raises(ValueError, match="overlap"):
        tile_starts((10,), (4,), 1.0)


# --------------------------------------------------------------------------- gaussian


@pytest.mark.parametrize("patch", [(8, 8), (7, 9), (5, 6, 7), (1, 16, 16)])
def test_gaussian_importance_positive_centre_max(patch):
    g = gaussian_importance(patch)
    assert g.shape == patch and g.dtype == np.float32
    assert g.min() > 0
    assert g.max() == pytest.approx(1.0)
    centre = tuple(p // 2 for p in patch)
    assert g[centre] == g.max()
    assert g.flat[0] < g[centre] or patch == (1,)  # border below the centre
    for ax in range(len(patch)):  # symmetric under mirroring
        np.testing.assert_array_equal(g, np.flip(g, ax))


# --------------------------------------------------------------------------- sliding_window


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
@pytest.mark.parametrize(
    ("shape", "patch"),
    [
        ((1, 23, 17), (8, 8)),
        ((2, 5, 30), (8, 8)),
        ((1, 11, 9, 13), (6, 5, 4)),
        ((1, 3, 4, 5), (6, 6, 6)),
    ],
)
def test_weights_normalise_to_exactly_one(blend, shape, patch):
    image = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    _, out = drain(
        sliding_window(
            ones_fn(3), image, patch_size=patch, activation=None, blend=blend, batch_size=3
        )
    )
    assert out.shape == (3, *shape[1:]) and out.dtype == torch.float32
    assert out.device.type == "cpu"
    assert torch.all(out == 1.0)


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
@pytest.mark.parametrize(
    ("shape", "patch", "overlap"),
    [((2, 23, 17), (8, 8), 0.5), ((1, 9, 31), (16, 16), 0.25), ((1, 11, 9, 13), (6, 5, 4), 0.5)],
)
def test_identity_is_reproduced(blend, shape, patch, overlap):
    image = torch.from_numpy(np.random.default_rng(1).normal(size=shape).astype(np.float32))
    _, out = drain(
        sliding_window(
            identity, image, patch_size=patch, overlap=overlap, activation=None, blend=blend
        )
    )
    torch.testing.assert_close(out, image, rtol=1e-5, atol=1e-5)


def test_activation_is_applied_before_blending():
    image = torch.randn(3, 12, 10)
    _, soft = drain(sliding_window(identity, image, patch_size=(6, 6), activation="softmax"))
    torch.testing.assert_close(soft, torch.softmax(image, 0), rtol=1e-5, atol=1e-6)
    _, sig = drain(sliding_window(identity, image, patch_size=(6, 6), activation="sigmoid"))
    torch.testing.assert_close(sig, torch.sigmoid(image), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch_size", [1, 3, 100])
def test_progress_once_per_batch(batch_size):
    shape, patch = (20, 13), (8, 8)
    n = len(tile_starts(shape, patch, 0.5))
    events, _ = drain(
        sliding_window(ones_fn(), np.zeros((1, *shape)), patch_size=patch, batch_size=batch_size)
    )
    assert len(events) == math.ceil(n / batch_size)
    assert all(isinstance(e, Progress) and e.stage == "predict" for e in events)
    assert all(e.total == n for e in events)
    assert [e.done for e in events] == sorted(e.done for e in events)
    assert events[-1].done == n and events[-1].eta_s == pytest.approx(0.0)


def test_sliding_window_errors():
    with pytest.raises(ValueError, match=r"2 spatial axes"):
        drain(sliding_window(identity, np.zeros((8, 8)), patch_size=(4, 4)))
    with pytest.raises(ValueError, match="activation"):
        drain(sliding_window(identity, np.zeros((1, 8, 8)), patch_size=(4, 4), activation="relu"))
    with pytest.raises(ValueError, match=r"expected \(B, K, \*patch\)"):
        drain(sliding_window(lambda x: x[:, :, :2], np.zeros((1, 8, 8)), patch_size=(4, 4)))


# --------------------------------------------------------------------------- predict_volume


def conv2d(in_ch: int = 1, out_ch: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Conv2d(in_ch, out_ch, kernel_size=1)


def test_2d_model_on_3d_volume_equals_per_slice():
    slice_axis = 1
    model = conv2d(2, 3)
    vol = torch.randn(2, 7, 5, 6)
    events, pred = drain(
        predict_volume(
            model, vol, spatial_dims=2, patch_size=(8, 8), batch_size=2, slice_axis=slice_axis
        )
    )
    with torch.no_grad():
        slices = vol.movedim(1 + slice_axis, 0)  # (S, C, a, b)
        manual = torch.softmax(model(slices), 1).movedim(0, 1 + slice_axis)
    np.testing.assert_allclose(pred.probabilities, manual.numpy(), rtol=1e-5, atol=1e-6)
    n_slices = vol.shape[1 + slice_axis]
    assert len(events) == math.ceil(n_slices / 2)  # slices fit the patch: one window each
    assert events[-1].done == events[-1].total == n_slices


@pytest.mark.parametrize("slice_axis", [0, 2])
def test_2d_model_slicewise_with_tiling(slice_axis):
    model = conv2d(1, 2)
    vol = torch.randn(1, 9, 13, 11)
    events, pred = drain(
        predict_volume(
            model, vol, spatial_dims=2, patch_size=(6, 6), slice_axis=slice_axis, tta=True
        )
    )
    with torch.no_grad():
        manual = torch.softmax(model(vol.movedim(1 + slice_axis, 0)), 1).movedim(0, 1 + slice_axis)
    np.testing.assert_allclose(pred.probabilities, manual.numpy(), rtol=1e-5, atol=1e-6)
    assert events[-1].done == events[-1].total == vol.shape[1 + slice_axis]


def test_predict_volume_3d_shapes_and_consistency():
    torch.manual_seed(0)
    model = nn.Conv3d(1, 3, kernel_size=3, padding=1)
    model.train()
    image = np.random.default_rng(2).normal(size=(1, 9, 10, 7)).astype(np.float32)
    events, pred = drain(
        predict_volume(model, image, spatial_dims=3, patch_size=(6, 6, 6), batch_size=4)
    )
    assert model.training  # train/eval state restored
    assert isinstance(pred, Prediction) and pred.num_classes == 3
    assert pred.probabilities.shape == (3, 9, 10, 7) and pred.probabilities.dtype == np.float32
    assert pred.labels.shape == pred.entropy.shape == (9, 10, 7)
    assert np.issubdtype(pred.labels.dtype, np.integer)
    np.testing.assert_allclose(pred.probabilities.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(pred.labels, pred.probabilities.argmax(0))
    p = pred.probabilities
    np.testing.assert_allclose(pred.entropy, -(p * np.log(p)).sum(0), rtol=1e-4, atol=1e-6)
    assert pred.entropy.min() >= 0 and pred.entropy.max() <= math.log(3) + 1e-6
    assert events[-1].done == events[-1].total


def test_predict_volume_binary_sigmoid():
    model = conv2d(1, 1)
    image = torch.randn(1, 10, 12)
    _, pred = drain(predict_volume(model, image, spatial_dims=2, patch_size=(8, 8)))
    with torch.no_grad():
        expected = torch.sigmoid(model(image[None]))[0]
    np.testing.assert_allclose(pred.probabilities, expected.numpy(), rtol=1e-5, atol=1e-6)
    assert pred.probabilities.shape == (1, 10, 12)
    np.testing.assert_array_equal(pred.labels, pred.probabilities[0] > 0.5)
    p = pred.probabilities[0]
    h = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    np.testing.assert_allclose(pred.entropy, h, rtol=1e-4, atol=1e-6)


def test_tta_equals_plain_for_mirror_equivariant_model():
    model = nn.Sequential(nn.Conv3d(1, 2, 1), nn.ReLU(), nn.Conv3d(2, 2, 1))
    image = torch.randn(1, 6, 7, 5)
    _, plain = drain(predict_volume(model, image, spatial_dims=3, patch_size=(4, 4, 4)))
    _, tta = drain(predict_volume(model, image, spatial_dims=3, patch_size=(4, 4, 4), tta=True))
    np.testing.assert_allclose(plain.probabilities, tta.probabilities, rtol=1e-5, atol=1e-6)


class Declared(nn.Module):
    in_channels = 2
    spatial_dims = 3

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(2, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_predict_volume_errors():
    model3d = nn.Conv3d(1, 2, 1)
    msg = r"model expects 3D \(C, X, Y, Z\) input, got shape \(1, 8, 8\)"
    with pytest.raises(ValueError, match=msg):
        drain(predict_volume(model3d, np.zeros((1, 8, 8)), spatial_dims=3, patch_size=(4, 4, 4)))
    with pytest.raises(ValueError, match="add a channel axis"):
        drain(predict_volume(model3d, np.zeros((8, 8, 8)), spatial_dims=3, patch_size=(4, 4, 4)))
    with pytest.raises(ValueError, match="patch_size"):
        drain(predict_volume(model3d, np.zeros((1, 8, 8, 8)), spatial_dims=3, patch_size=(4, 4)))
    with pytest.raises(ValueError, match=r"model expects 2D"):
        drain(predict_volume(conv2d(), np.zeros((8, 8)), spatial_dims=2, patch_size=(4, 4)))
    with pytest.raises(ValueError, match="2 input channel"):
        drain(
            predict_volume(
                Declared(), np.zeros((1, 8, 8, 8)), spatial_dims=3, patch_size=(4, 4, 4)
            )
        )
    with pytest.raises(ValueError, match="model is 3D"):
        drain(predict_volume(Declared(), np.zeros((2, 8, 8)), spatial_dims=2, patch_size=(4, 4)))


@pytest.mark.parametrize("shape", [(1, 12, 12), (1, 6, 12, 12)])
def test_windows_are_padded_as_the_training_sampler_pads(shape):
    """An image smaller than the patch: the windows hold each channel's minimum outside it
    (the sampler's "outside the body" value), not 0 (mid-tissue after normalisation)."""
    from napari_medseg.core.data import Case
    from napari_medseg.core.sampling import PatchSampler

    img = np.random.default_rng(0).uniform(0.0, 2.0, size=shape).astype(np.float32)
    img[..., :3] = -1.5  # background: the minimum
    seen = []

    class Recorder(nn.Module):
        def forward(self, x):
            seen.append(x.clone())
            return torch.zeros(x.shape[0], 2, *x.shape[2:])

    patch = (16, 16)
    drain(predict_volume(Recorder(), img, spatial_dims=2, patch_size=patch, slice_axis=0))
    windows = torch.cat(seen)  # (B, 1, 16, 16): the 12x12 image in the middle
    assert torch.all(windows[..., :2, :] == -1.5) and torch.all(windows[..., :, -2:] == -1.5)
    assert torch.all(windows[..., 2:14, 2:14] == torch.from_numpy(img.reshape(-1, 12, 12))[:, None])

    # the sampler pads a case smaller than its patch with the same value
    lab = np.zeros(shape[1:], np.int16)
    lab[..., 5:7, 5:7] = 1
    case = Case(img, lab, (1.0,) * (len(shape) - 1), name="small")
    sampler = PatchSampler([case], patch, spatial_dims=2, slice_axis=0, seed=0)
    x, _ = sampler.sample(4)
    assert float(x.min()) == -1.5 and bool((x == -1.5).any(dim=-1).all())


# ------------------------------------------------------------------ segment (core/pipeline.py)
class _Pointwise(nn.Module):
    """Class 1 where the normalised intensity passes 0.5: a model without context, so a
    region's windows give the same probabilities as the whole image's."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        self.spatial_dims = dims
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x[:, :1]), 4 * (x[:, :1] - 0.5)], 1)


class _Shapes(_Pointwise):
    """A pointwise model that records the spatial shape of each window it sees."""

    def __init__(self, dims: int) -> None:
        super().__init__(dims)
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += [tuple(x.shape[2:])] * x.shape[0]
        return super().forward(x)


def _ckpt(dims, patch, *, spacing=None, slice_axis=2, out=2, values=(0, 3)):
    from napari_medseg.core.checkpoint import Checkpoint
    from napari_medseg.core.config import ModelConfig, TrainConfig
    from napari_medseg.core.data import LabelMapping

    mc = ModelConfig(spatial_dims=dims, in_channels=1, out_channels=out)
    tc = TrainConfig(patch_size=patch, slice_axis=slice_axis, spacing=spacing)
    return Checkpoint(mc, tc, LabelMapping(values), (), spacing, {})


def _ramp_volume():
    """Brightness rising along axis 0, a constant 'outside' on one side (crop and body)."""
    rng = np.random.default_rng(0)
    z = np.arange(16, dtype=np.float32)[:, None, None]
    vol = z + rng.random((16, 24, 20)).astype(np.float32) * 4
    vol[:, :9] = 0.0
    return vol


@pytest.mark.parametrize("dims, patch, spacing", [
    (3, (8, 8, 8), (2.0, 1.0, 1.5)),  # resampled on every axis
    (3, (8, 8, 8), None),
    (2, (8, 8), (1.5, 1.0, 1.0)),     # a 2D model slicing along axis 0
])
def test_a_region_is_normalised_and_cropped_as_the_whole_image(dims, patch, spacing):
    from napari_medseg.core.engine import run
    from napari_medseg.core.pipeline import segment

    vol = _ramp_volume()
    ck = _ckpt(dims, patch, spacing=spacing, slice_axis=0)
    whole = run(segment(ck, [vol], (1.0, 1.0, 1.0), model=_Pointwise(dims), device="cpu"))
    alone = run(segment(ck, [vol[12]], (1.0, 1.0), model=_Pointwise(2), device="cpu")) \
        if dims == 2 else None
    for ax, lo, hi in [(0, 12, 13), (0, 0, 1), (0, 2, 9), (1, 20, 21), (1, 0, 1), (2, 7, 8)]:
        r = run(segment(ck, [vol], (1.0, 1.0, 1.0), model=_Pointwise(dims), device="cpu",
                        region=(ax, lo, hi)))
        want = np.take(whole.probabilities, np.arange(lo, hi), axis=1 + ax)
        assert r.probabilities.shape == want.shape
        np.testing.assert_allclose(r.probabilities, want, atol=1e-5)
        np.testing.assert_array_equal(r.labels, np.take(whole.labels, np.arange(lo, hi), ax))
        np.testing.assert_allclose(r.entropy, np.take(whole.entropy, np.arange(lo, hi), ax),
                                   atol=1e-4)
    assert (whole.labels[12] == 3).sum() > 0
    if alone is not None:  # the slice normalised by itself, as the old preview did, differs
        assert (alone.labels != whole.labels[12]).mean() > 0.2


def test_a_region_runs_the_model_on_its_slab_only(monkeypatch):
    import napari_medseg.core.inference as inference
    from napari_medseg.core.engine import run
    from napari_medseg.core.pipeline import segment

    shapes = []
    real = inference.predict_volume

    def spy(model, image, **kw):
        shapes.append(tuple(image.shape[1:]))
        return (yield from real(model, image, **kw))

    monkeypatch.setattr(inference, "predict_volume", spy)
    vol = np.concatenate([_ramp_volume()] * 2)  # 32 slices at 1 mm, 16 at the model's 2 mm
    ck = _ckpt(3, (8, 8, 8), spacing=(2.0, 1.0, 1.0))
    run(segment(ck, [vol], (1.0, 1.0, 1.0), model=_Pointwise(3), device="cpu",
                region=(0, 16, 17)))
    # native slice 16 is read from model slices 7 and 8; half a patch (4 model voxels, 8 mm)
    # of context each side: model slices 3 to 12
    assert shapes[-1] == (10, 19, 20)  # 19: the body crop
    # a 2D model slicing along the region's axis: that slice alone
    events = []
    gen = segment(_ckpt(2, (8, 8), slice_axis=0), [vol], (1.0, 1.0, 1.0), model=_Pointwise(2),
                  device="cpu", region=(0, 12, 13))
    while True:
        try:
            events.append(next(gen))
        except StopIteration:
            break
    assert shapes[-1] == (1, 19, 20) and events[-1].total == 1
    # a region outside the body crop: background, without running the model
    n = len(shapes)
    r = run(segment(_ckpt(3, (8, 8, 8)), [vol], (1.0, 1.0, 1.0), model=_Pointwise(3),
                    device="cpu", region=(1, 0, 2)))
    assert len(shapes) == n and (r.labels == 0).all() and r.labels.shape == (32, 2, 20)
    np.testing.assert_allclose(r.probabilities[0], 1.0)


@pytest.mark.parametrize("region", [(3, 0, 1), (0, 5, 5), (0, -1, 2), (0, 10, 17), (0, 1)])
def test_a_region_outside_the_image_is_refused(region):
    from napari_medseg.core.engine import run
    from napari_medseg.core.pipeline import segment

    with pytest.raises(ValueError, match="region"):
        run(segment(_ckpt(3, (8, 8, 8)), [_ramp_volume()], (1.0, 1.0, 1.0),
                    model=_Pointwise(3), device="cpu", region=region))


def test_model_spacing_moves_the_in_plane_values_to_a_new_slice_axis():
    from napari_medseg.core.prepare import model_spacing

    # trained on X,Y,Z volumes at 0.5 x 0.7 mm in plane, 3 mm slices along axis 2
    trained = (0.5, 0.7, 3.0)
    same = model_spacing(trained, (0.9, 0.9, 4.0), model_dims=2, slice_axis=2)
    assert same == (0.5, 0.7, 4.0)
    # a Z,Y,X stack sliced along axis 0: in plane 0.5 and 0.7, the stack's own 2.5 mm slices
    assert model_spacing(trained, (2.5, 0.4, 0.4), model_dims=2, slice_axis=0,
                         trained_slice_axis=2) == (2.5, 0.5, 0.7)
    assert model_spacing(trained, (0.4, 2.5, 0.4), model_dims=2, slice_axis=1,
                         trained_slice_axis=2) == (0.5, 2.5, 0.7)
    assert model_spacing((0.5, 0.7), (2.5, 0.4, 0.4), model_dims=2, slice_axis=0,
                         trained_slice_axis=2) == (2.5, 0.5, 0.7)
    # a 2D image: the in-plane values, whatever the training slice axis
    assert model_spacing((3.0, 0.5, 0.7), (0.4, 0.4), model_dims=2, slice_axis=0) == (0.5, 0.7)
    assert model_spacing(None, (1.0, 1.0, 1.0), model_dims=2, slice_axis=0) is None


def test_segment_slices_along_a_chosen_axis_at_the_in_plane_training_spacing():
    from napari_medseg.core.engine import run
    from napari_medseg.core.pipeline import segment

    net = _Shapes(2)
    ck = _ckpt(2, (16, 16), spacing=(0.5, 0.5, 3.0), slice_axis=2)
    vol = np.random.default_rng(1).random((8, 40, 30)).astype(np.float32)  # Z,Y,X
    seg = run(segment(ck, [vol], (3.0, 0.5, 0.5), model=net, device="cpu", slice_axis=0))
    assert set(net.seen) == {(16, 16)} and seg.labels.shape == vol.shape
    # 8 slices of 40 x 30 at 0.5 mm: 3 x 2 windows of 16 at overlap 0.5 each, not 40 x 5
    from napari_medseg.core.inference import tile_starts

    assert len(net.seen) == 8 * len(tile_starts((40, 30), (16, 16), 0.5))


def test_a_volume_thinner_than_half_a_model_voxel_keeps_one_voxel():
    from napari_medseg.core.engine import run
    from napari_medseg.core.pipeline import segment
    from napari_medseg.core.prepare import prepare_input

    vol = np.random.default_rng(2).random((20, 18, 1)).astype(np.float32)
    prep = prepare_input([vol], (0.3, 0.3, 0.3), method="zscore",
                         target_spacing=(1.0, 1.0, 1.0), crop_foreground=False)
    assert prep.image.shape == (1, 6, 5, 1)
    assert prep.spacing[2] == pytest.approx(0.3)
    seg = run(segment(_ckpt(3, (8, 8, 8), spacing=(1.0, 1.0, 1.0)), [vol], (0.3, 0.3, 0.3),
                      model=_Pointwise(3), device="cpu"))
    assert seg.labels.shape == vol.shape
