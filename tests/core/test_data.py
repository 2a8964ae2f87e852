"""Label mapping, normalisation, case preparation, patch sampling, augmentation."""

import numpy as np
import pytest
import torch

from napari_medseg.core.config import TrainConfig
from napari_medseg.core.data import UNLABELLED, Case, LabelMapping, check_image
from napari_medseg.core.normalize import apply_normalization, fit_normalization
from napari_medseg.core.prepare import model_spacing, prepare_case, prepare_input
from napari_medseg.core.sampling import PatchSampler


def test_label_values_round_trip():
    lab = np.array([[0, 1, 2], [4, 4, -1]])
    m = LabelMapping.from_labels([lab])
    assert m.values == (0, 1, 2, 4)
    cls = m.to_classes(lab)
    np.testing.assert_array_equal(cls, [[0, 1, 2], [3, 3, -1]])
    back = m.to_values(np.where(cls < 0, 0, cls))
    np.testing.assert_array_equal(back, [[0, 1, 2], [4, 4, 0]])


def test_float_labels_map_and_unknown_value_errors():
    m = LabelMapping((0, 1, 2, 4))
    np.testing.assert_array_equal(m.to_classes(np.array([0.0, 4.0, 2.0], np.float32)), [0, 3, 2])
    with pytest.raises(ValueError, match=r"\[3\] are not among the known values"):
        m.to_classes(np.array([0, 3]))


def test_float_labels_stored_slightly_off_map_to_their_value():
    # A scaled header can store 1 as 0.99999994; truncating it would make a class 0.
    lab = np.array([0.0, 0.99999994, 2.0000002, -1.0], np.float32)
    m = LabelMapping.from_labels([lab])
    assert m.values == (0, 1, 2)
    np.testing.assert_array_equal(m.to_classes(lab), [0, 1, 2, -1])


@pytest.mark.parametrize(("labels", "kwargs", "said"), [
    (np.array([0, 1, 2, 4, -1]), {}, None),
    (np.array([0.0, 1.0, 0.9999999, -1.0], np.float32), {}, None),
    (np.array([True, False]), {}, None),
    (np.array([0.0, np.nan]), {}, "holds NaN or infinite values"),
    (np.array([0.0, -np.inf]), {}, "holds NaN or infinite values"),
    (np.array([0.0, 1.5]), {}, "not whole numbers (e.g. 1.5)"),
    (np.array([0, -2]), {}, "holds the value -2"),
    (np.array([0, -1]), {"allow_unlabelled": False}, "holds the value -1"),
    (np.arange(256), {}, "holds 256 distinct values (at most 255 classes)"),
    (np.arange(255), {}, None),
    (np.array(["a", "b"]), {}, "not numbers"),
])
def test_label_values_problem_says_what_is_wrong(labels, kwargs, said):
    from napari_medseg.core.data import label_values_problem

    got = label_values_problem(labels, **kwargs)
    assert got is None if said is None else said in got, got


def test_percentile_normalisation_is_robust_to_outliers():
    rng = np.random.default_rng(0)
    img = rng.normal(100, 10, size=(1, 40, 40, 10)).astype(np.float32)
    img[0, 0, 0, 0] = 1e6
    out = apply_normalization(img, fit_normalization(img, "percentile"))
    assert abs(float(np.median(out))) < 0.1
    assert out.max() < 5


def test_zscore_inside_mask():
    img = np.zeros((1, 20, 20), np.float32)
    img[0, 5:15, 5:15] = np.linspace(1, 3, 100).reshape(10, 10)
    out = apply_normalization(img, fit_normalization(img, "zscore"))
    inside = out[0, 5:15, 5:15]
    assert inside.mean() == pytest.approx(0, abs=1e-5)
    assert inside.std() == pytest.approx(1, abs=1e-4)


def test_no_normalisation_keeps_values():
    rng = np.random.default_rng(0)
    img = rng.normal(3, 2, size=(2, 12, 12, 6)).astype(np.float32)
    img[0, 0, 0, 0] = 1e6  # no clipping either
    norms = fit_normalization(img, "none")
    assert len(norms) == 2
    np.testing.assert_array_equal(apply_normalization(img, norms), img)


def test_median_iqr_by_hand():
    # 1..100 inside the mask: quartiles 25.75 and 75.25, median 50.5 (numpy's linear rule).
    img = np.zeros((1, 20, 20), np.float32)
    img[0, 5:15, 5:15] = np.arange(1, 101, dtype=np.float32).reshape(10, 10)
    (n,) = fit_normalization(img, "median_iqr")
    assert n.mean == pytest.approx(50.5)
    assert n.std == pytest.approx((75.25 - 25.75) / 1.3489795)
    assert (n.lo, n.hi) == pytest.approx(tuple(np.percentile(np.arange(1, 101), [0.5, 99.5])))


def test_median_iqr_keeps_lesion_contrast_as_the_lesion_grows():
    # Normal tissue N(0, 1) with a bright lesion (value 4) taking 2% or 12% of the voxels:
    # the lesion's normalised contrast against normal tissue should depend little on its size.
    rng = np.random.default_rng(0)
    contrast = {}
    for method in ("percentile", "median_iqr"):
        for share in (0.02, 0.12):
            v = rng.normal(0, 1, 20_000).astype(np.float32)
            lesion = np.zeros(v.size, bool)
            lesion[: int(share * v.size)] = True
            v[lesion] = 4 + rng.normal(0, 0.2, lesion.sum())
            out = apply_normalization(v[None], fit_normalization(v[None], method))[0]
            contrast[method, share] = float(np.median(out[lesion]) - np.median(out[~lesion]))
    pct = contrast["percentile", 0.02] / contrast["percentile", 0.12]
    iqr = contrast["median_iqr", 0.02] / contrast["median_iqr", 0.12]
    # Here 1.42 vs 1.17: the quartiles move too, but less than half as much.
    assert pct > 1.3
    assert iqr - 1 < 0.5 * (pct - 1)
    assert contrast["median_iqr", 0.02] == pytest.approx(4, abs=0.3)


def test_median_iqr_falls_back_when_most_voxels_share_a_value():
    img = np.zeros((1, 10, 10), np.float32)
    img[0, :2] = np.arange(1, 21).reshape(2, 10)  # 80% of the image is one value
    (n,) = fit_normalization(img, "median_iqr", mask=np.ones((10, 10), bool))
    assert n.std > 0 and np.isfinite(n.std)


def test_unknown_normalisation_names_the_choices():
    with pytest.raises(ValueError, match="'percentile', 'zscore', 'median_iqr' or 'none'"):
        fit_normalization(np.ones((1, 4, 4), np.float32), "minmax")


def test_check_image_errors():
    with pytest.raises(ValueError, match="t1c has shape .* but flair has"):
        check_image([np.zeros((4, 4, 4)), np.zeros((4, 4, 3))], ["flair", "t1c"])
    bad = np.zeros((4, 4, 4))
    bad[1, 1, 1] = np.nan
    with pytest.raises(ValueError, match="t1c contains 1 NaN"):
        check_image([np.zeros((4, 4, 4)), bad], ["flair", "t1c"])


def test_prepare_case_crops_to_body_and_resamples(phantom):
    mapping = LabelMapping.from_labels([phantom.labels])
    img = phantom.t1.copy()
    img[:6] = 0  # make a zero border: cropped away
    tc = TrainConfig(patch_size=(16, 16, 16), spacing=(2.0, 2.0, 3.0))
    case, prep = prepare_case([img], phantom.labels, phantom.spacing, mapping=mapping, config=tc)
    assert prep.crop[0].start >= 6 - 4
    assert case.image.shape[1:] == case.target.shape
    assert case.spacing == pytest.approx((2.0, 2.0, 3.0), rel=0.05)
    assert set(np.unique(case.target)) <= {-1, 0, 1, 2, 3, 4}
    # Resampling keeps each class's volume in mm^3 (within the rounding of nearest neighbour).
    for k in (2, 3, 4):
        before = (phantom.labels == k).sum() * np.prod(phantom.spacing)
        after = (case.target == k).sum() * np.prod(case.spacing)
        assert after == pytest.approx(before, rel=0.25)


def test_prepare_case_shape_mismatch():
    tc = TrainConfig(patch_size=(8, 8, 8))
    with pytest.raises(ValueError, match=r"image \(4, 4, 4\) and labels \(4, 4, 3\) differ"):
        prepare_case([np.ones((4, 4, 4))], np.zeros((4, 4, 3)), (1, 1, 1),
                     mapping=LabelMapping((0, 1)), config=tc)


def test_sampler_only_centres_on_labelled_voxels():
    img = np.random.default_rng(0).normal(size=(1, 40, 40, 20)).astype(np.float32)
    tgt = np.full((40, 40, 20), UNLABELLED, np.int16)
    tgt[:, :, 7] = 0
    tgt[10:15, 10:15, 7] = 1  # one annotated slice
    s = PatchSampler([Case(img, tgt, (1, 1, 1))], (16, 16), spatial_dims=2, slice_axis=2,
                     fg_oversample=0.5, seed=0)
    x, y = s.sample(16)
    assert x.shape == (16, 1, 16, 16) and y.shape == (16, 16, 16)
    # Every 2D patch comes from the annotated slice, so every patch holds labels.
    assert all((y[i] >= 0).any() for i in range(16))
    assert (y == 1).any()


def test_sampler_pads_small_images_with_unlabelled():
    img = np.ones((2, 6, 6, 6), np.float32)
    tgt = np.zeros((6, 6, 6), np.int16)
    tgt[2:4, 2:4, 2:4] = 1
    s = PatchSampler([Case(img, tgt, (1, 1, 1))], (8, 8, 8), spatial_dims=3, seed=0)
    x, y = s.sample(2)
    assert x.shape == (2, 2, 8, 8, 8)
    assert (y == UNLABELLED).sum() == 2 * (8**3 - 6**3)


def test_sampler_refuses_empty_labels():
    with pytest.raises(ValueError, match="no labelled voxel"):
        PatchSampler([Case(np.ones((1, 4, 4)), np.full((4, 4), -1, np.int16), (1, 1))], (4, 4),
                     spatial_dims=2)


def test_prepare_input_errors_on_spacing_length():
    with pytest.raises(ValueError, match="Spacing"):
        prepare_input([np.ones((4, 4, 4))], (1.0, 1.0), method="percentile", target_spacing=None,
                      crop_foreground=False)


def _brats_like(mean: float, std: float) -> np.ndarray:
    """A 'body' of normal values in a (40, 40, 12) volume, one negative constant outside it."""
    img = np.full((40, 40, 12), -3.6, np.float32)
    img[10:30, 8:28, 2:10] = np.random.default_rng(0).normal(mean, std, (20, 20, 8))
    return img


def test_constant_nonzero_background_is_cropped_and_predicted_as_background():
    """BraTS-like: z-scored inside the brain, one negative constant outside it."""
    from napari_medseg.core.checkpoint import Checkpoint
    from napari_medseg.core.config import ModelConfig
    from napari_medseg.core.engine import run
    from napari_medseg.core.models import build_model
    from napari_medseg.core.pipeline import segment

    img = _brats_like(0.0, 1.0)
    prep = prepare_input([img], (1, 1, 1), method="percentile", target_spacing=None,
                         crop_foreground=True)
    assert prep.crop == (slice(6, 34), slice(4, 32), slice(0, 12))
    mc = ModelConfig(spatial_dims=2, in_channels=1, out_channels=3, base_width=4, depth=2)
    model = build_model(mc)
    with torch.no_grad():  # an untrained model that says "class 2" everywhere
        model.head.bias[:] = torch.tensor([0.0, 0.0, 50.0])
    ck = Checkpoint(model_config=mc, train_config=TrainConfig(patch_size=(16, 16)),
                    mapping=LabelMapping((0, 1, 5)), norms=(), spacing=None,
                    state_dict=model.state_dict())
    seg = run(segment(ck, [img], (1, 1, 1), model=model))
    inside = np.zeros(img.shape, bool)
    inside[10:30, 8:28, 2:10] = True
    assert set(np.unique(seg.labels[~inside])) == {0}
    assert set(np.unique(seg.labels[inside])) == {5}  # class 2 -> the user's label value 5
    assert seg.labels.shape == img.shape


def test_a_slice_is_resampled_with_the_in_plane_spacing_of_a_2d_model(monkeypatch):
    """2D model trained on axis-0 slices at (5, 1, 2) mm: a slice is resampled to (1, 2) mm."""
    from napari_medseg.core import pipeline
    from napari_medseg.core.checkpoint import Checkpoint
    from napari_medseg.core.config import ModelConfig
    from napari_medseg.core.engine import run
    from napari_medseg.core.models import build_model

    ms = model_spacing
    assert ms((5.0, 1.0, 2.0), (1.0, 1.0), model_dims=2, slice_axis=0) == (1.0, 2.0)
    assert ms((5.0, 1.0, 2.0), (1.0, 1.0), model_dims=2, slice_axis=2) == (5.0, 1.0)
    assert ms((5.0, 1.0, 2.0), (3.0, 1.0, 1.0), model_dims=3, slice_axis=0) == (5.0, 1.0, 2.0)
    assert ms(None, (1.0, 1.0), model_dims=2, slice_axis=0) is None
    mc = ModelConfig(spatial_dims=2, in_channels=1, out_channels=2, base_width=4, depth=2)
    model = build_model(mc)
    ck = Checkpoint(model_config=mc,
                    train_config=TrainConfig(patch_size=(16, 16), slice_axis=0,
                                             spacing=(5.0, 1.0, 2.0), crop_foreground=False),
                    mapping=LabelMapping((0, 1)), norms=(), spacing=(5.0, 1.0, 2.0),
                    state_dict=model.state_dict())
    seen = []
    real = pipeline.prepare_input

    def spy(*args, **kwargs):
        seen.append(kwargs["target_spacing"])
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "prepare_input", spy)
    img = np.random.default_rng(0).normal(size=(40, 40)).astype(np.float32)
    seg = run(pipeline.segment(ck, [img], (1.0, 1.0), model=model))
    assert seen == [(1.0, 2.0)]
    assert seg.labels.shape == img.shape


def test_a_2d_model_keeps_each_volume_s_own_slice_spacing():
    """Trained on axis-0 slices at (5, 1, 2) mm (or the in-plane (1, 2)), a 2D model resamples a
    3 mm-slice volume in plane only, in training and prediction: its slice count is unchanged."""
    from napari_medseg.core import pipeline

    ms = model_spacing
    assert ms((5.0, 1.0, 2.0), (3.0, 0.5, 0.5), model_dims=2, slice_axis=0) == (3.0, 1.0, 2.0)
    assert ms((1.0, 2.0), (3.0, 0.5, 0.5), model_dims=2, slice_axis=0) == (3.0, 1.0, 2.0)
    assert ms((1.0, 2.0), (0.5, 0.5, 3.0), model_dims=2, slice_axis=2) == (1.0, 2.0, 3.0)
    img = np.random.default_rng(0).normal(size=(7, 20, 20)).astype(np.float32)
    lab = np.zeros(img.shape, np.int16)
    lab[:, 5:15, 5:15] = 1
    tc = TrainConfig(patch_size=(8, 8), slice_axis=0, spacing=(5.0, 1.0, 1.0),
                     crop_foreground=False)
    case, prep = prepare_case([img], lab, (3.0, 0.5, 0.5), mapping=LabelMapping((0, 1)),
                              config=tc)
    assert case.image.shape[1:] == (7, 10, 10)
    assert prep.spacing == (3.0, 1.0, 1.0)


def test_prepare_input_without_normalisation_only_crops():
    """norm 'none' (images already normalised, as the BraTS volumes are): values pass as they are."""
    img = _brats_like(0.5, 2.0)
    prep = prepare_input([img], (1, 1, 1), method="none", target_spacing=None,
                         crop_foreground=True)
    np.testing.assert_array_equal(prep.image[0], img[prep.crop])
    z = prepare_input([img], (1, 1, 1), method="zscore", target_spacing=None, crop_foreground=True)
    assert not np.allclose(z.image, prep.image)  # the other methods do change them
