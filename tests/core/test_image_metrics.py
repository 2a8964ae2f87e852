"""Image-quality metrics: hand-made values, PSNR's formula, SSIM against scikit-image."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from napari_medseg.core.metrics import (
    evaluate_restoration,
    mae,
    mse,
    nmse,
    nmse_variance,
    psnr,
    ssim,
    to_jsonable,
)
from napari_medseg.core.metrics import image as image_metrics


def test_pixel_metrics_by_hand():
    y = np.array([[1.0, 2.0], [3.0, 4.0]])
    x = np.array([[1.0, 2.0], [3.0, 6.0]])  # one error of 2
    assert mae(x, y) == pytest.approx(0.5)
    assert mse(x, y) == pytest.approx(1.0)
    assert nmse(x, y) == pytest.approx(4.0 / 30.0)  # ||x-y||^2 / ||y||^2
    assert nmse_variance(x, y) == pytest.approx(1.0 / 1.25)  # MSE / Var(y)
    m = np.array([[True, True], [True, False]])
    assert mae(x, y, mask=m) == 0 and mse(x, y, mask=m) == 0
    # The variance version ignores offsets; the energy version does not.
    assert nmse_variance(x + 100, y + 100) == pytest.approx(nmse_variance(x, y))
    assert nmse(x + 100, y + 100) < nmse(x, y)
    # Predicting the reference's mean scores NMSE_var = 1.
    assert nmse_variance(np.full_like(y, y.mean()), y) == pytest.approx(1.0)


def test_edge_cases_are_stated_not_nan():
    z = np.zeros((3, 3))
    assert nmse(z, z) == 0.0 and nmse(z + 1, z) == math.inf
    c = np.full((3, 3), 2.0)
    assert nmse_variance(c, c) == 0.0 and nmse_variance(c + 1, c) == math.inf
    assert psnr(c, c, data_range=1.0) == math.inf
    assert to_jsonable({"psnr": math.inf})["psnr"] in ("inf", None)
    with pytest.raises(ValueError, match="mask is empty"):
        mae(c, c, mask=np.zeros((3, 3), bool))
    with pytest.raises(ValueError, match="differ in shape"):
        mse(np.zeros((3, 3)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="data_range"):
        psnr(c, c + 1, data_range=0)
    with pytest.raises(TypeError):
        psnr(c, c + 1)  # data_range is required


def test_psnr_matches_its_formula_and_skimage():
    rng = np.random.default_rng(0)
    y = rng.random((20, 30)) * 200
    x = y + rng.normal(0, 5, y.shape)
    expected = 10 * math.log10(200.0**2 / np.mean((x - y) ** 2))
    assert psnr(x, y, data_range=200) == pytest.approx(expected, rel=1e-12)
    assert psnr(x, y, data_range=200) == pytest.approx(
        peak_signal_noise_ratio(y, x, data_range=200), rel=1e-12)
    # Integer inputs do not overflow.
    yi, xi = y.astype(np.int16), x.astype(np.int16)
    assert psnr(xi, yi, data_range=200) == pytest.approx(
        peak_signal_noise_ratio(yi, xi, data_range=200), rel=1e-9)


def _pair(shape, seed=0, scale=1000.0, noise=30.0):
    rng = np.random.default_rng(seed)
    y = ndi.gaussian_filter(rng.random(shape), 2) * scale + 0.1 * scale
    return y + rng.normal(0, noise, shape), y


@pytest.mark.parametrize("shape", [(48, 40), (40, 36, 20)])
@pytest.mark.parametrize("gaussian", [False, True])
@pytest.mark.parametrize("sample_cov", [True, False])
def test_ssim_matches_skimage_2d_3d(shape, gaussian, sample_cov):
    x, y = _pair(shape)
    kw = dict(data_range=1100.0, gaussian_weights=gaussian, use_sample_covariance=sample_cov)
    ours, smap = ssim(x, y, full=True, **kw)
    ref, rmap = structural_similarity(x, y, full=True, **kw)
    assert abs(ours - ref) < 1e-4
    assert np.abs(smap - rmap).max() < 1e-4
    assert smap.shape == shape and smap.dtype == np.float32


def test_ssim_options_match_skimage():
    x, y = _pair((45, 38, 15), seed=1)
    for kw in (dict(win_size=5), dict(win_size=9, K1=0.02, K2=0.05),
               dict(gaussian_weights=True, sigma=1.0), dict(gaussian_weights=True, win_size=13)):
        ours = ssim(x, y, data_range=900.0, **kw)
        assert abs(ours - structural_similarity(x, y, data_range=900.0, **kw)) < 1e-4, kw
    # channel_axis: per-slice 2D SSIM of an anisotropic volume, averaged.
    ours = ssim(x, y, data_range=900.0, channel_axis=2)
    assert abs(ours - structural_similarity(x, y, data_range=900.0, channel_axis=2)) < 1e-4
    # int16 input (raw MR) -> float64 in skimage, float32 with centring here.
    xi, yi = (x * 3).astype(np.int16), (y * 3).astype(np.int16)
    diff = ssim(xi, yi, data_range=3000) - structural_similarity(xi, yi, data_range=3000)
    assert abs(diff) < 1e-4


def test_ssim_across_slabs_and_borders():
    n = image_metrics.SSIM_SLAB * 2 + 5  # several slabs, a partial one at the end
    x, y = _pair((n, 20, 12), seed=2)
    ours, smap = ssim(x, y, data_range=1100.0, full=True)
    ref, rmap = structural_similarity(x, y, data_range=1100.0, full=True)
    assert abs(ours - ref) < 1e-4 and np.abs(smap - rmap).max() < 1e-4


def test_ssim_properties_and_errors():
    x, y = _pair((30, 30))
    assert ssim(y, y, data_range=1000) == pytest.approx(1.0, abs=1e-6)
    assert ssim(x, y, data_range=1000) == pytest.approx(ssim(y, x, data_range=1000), abs=1e-6)
    with pytest.raises(ValueError, match="win_size 7 exceeds.*<= 5"):
        ssim(np.zeros((5, 30)), np.zeros((5, 30)), data_range=1.0)
    with pytest.raises(ValueError, match="odd"):
        ssim(x, y, data_range=1.0, win_size=6)
    with pytest.raises(ValueError, match="data_range"):
        ssim(x, y, data_range=-1)


@settings(max_examples=25, deadline=None)
@given(st.integers(7, 16), st.integers(7, 16), st.integers(0, 10_000),
       st.floats(0.5, 1e4), st.booleans())
def test_ssim_equals_skimage_property(h, w, seed, scale, gaussian):
    rng = np.random.default_rng(seed)
    y = rng.random((h, w)) * scale
    x = y + rng.normal(0, scale * 0.1, (h, w))
    win = 7
    kw = dict(data_range=scale, gaussian_weights=gaussian, win_size=win)
    if gaussian:
        kw["sigma"] = 0.8  # radius 3: fits the 7 window
    assert abs(ssim(x, y, **kw) - structural_similarity(x, y, **kw)) < 1e-4


def test_evaluate_restoration_reports_everything():
    x, y = _pair((20, 20, 10))
    res = evaluate_restoration(x, y, win_size=5)
    assert set(res) == {"mae", "mse", "nmse", "nmse_variance", "psnr", "ssim", "data_range"}
    assert res["data_range"] == pytest.approx(y.max() - y.min())
    assert res["psnr"] == pytest.approx(psnr(x, y, data_range=res["data_range"]))


def test_ssim_keeps_its_precision_far_from_the_data_range():
    """A prediction offset far beyond the data range (other units): as scikit-image, in [-1, 1]."""
    rng = np.random.default_rng(3)
    target = rng.random((24, 24, 12))
    for pred in (target + 5000.0, target * 0.9 + 0.05):
        ours = ssim(pred, target, data_range=1.0)
        ref = structural_similarity(pred, target, data_range=1.0, win_size=7)
        assert -1.0 <= ours <= 1.0
        assert ours == pytest.approx(ref, rel=1e-4, abs=1e-6)


def test_nan_is_refused_not_returned():
    a = np.ones((9, 9))
    b = a.copy()
    b[4, 4] = np.nan
    for fn in (psnr, ssim):
        with pytest.raises(ValueError, match="pred holds 1 NaN/inf"):
            fn(b, a, data_range=1.0)
    with pytest.raises(ValueError, match="target holds 1 NaN/inf"):
        mae(a, b)
