"""Synthetic degradations: each one's statistics, determinism, composition and spec parsing."""

import math

import numpy as np
import pytest

from napari_medseg.core.degrade import (
    Blur,
    Compose,
    GaussianNoise,
    KSpaceDownsample,
    PoissonGaussianNoise,
    RicianNoise,
    SliceDownsample,
    degrade,
    degrade_patch_margin,
    describe,
    noise_sigma,
    parse_degradation,
    robust_scale,
)


def _two_level(shape=(200, 200), a=100.0):
    """Left half 0 (air), right half ``a`` (tissue): robust scale is exactly ``a``."""
    x = np.zeros(shape, np.float32)
    x[:, shape[1] // 2:] = a
    return x


def test_robust_scale():
    x = _two_level()
    assert robust_scale(x) == pytest.approx(100.0)
    ramp = np.linspace(0, 1000, 10001).astype(np.float32)
    # Foreground = above the mean (500): its 99th percentile is 995.
    assert robust_scale(ramp) == pytest.approx(995.0, rel=1e-3)
    assert robust_scale(ramp, mask=ramp < 100) == pytest.approx(99.0, rel=1e-2)
    assert robust_scale(np.zeros((5, 5))) == 1.0
    hot = np.full((100, 100), 10.0)
    hot[0, 0] = 1e6  # one hot voxel does not move the scale
    hot[:50] = 0
    assert robust_scale(hot) == pytest.approx(10.0)


def test_rician_on_air_is_rayleigh_and_on_tissue_nearly_gaussian():
    x = _two_level((400, 400), 100.0)
    y = RicianNoise(0.05)(x, seed=0)
    sigma = 5.0  # 5 % of the robust scale 100
    air, tissue = y[:, :200], y[:, 200:]
    assert air.min() >= 0
    assert air.mean() == pytest.approx(sigma * math.sqrt(math.pi / 2), rel=0.01)
    assert air.std() == pytest.approx(sigma * math.sqrt(2 - math.pi / 2), rel=0.02)
    # E[m] ~ sqrt(A^2 + sigma^2) for A >> sigma; sd ~ sigma.
    assert tissue.mean() == pytest.approx(math.sqrt(100**2 + sigma**2), rel=2e-3)
    assert tissue.std() == pytest.approx(sigma, rel=0.02)
    # Second moment is exact for any A: E[m^2] = A^2 + 2 sigma^2.
    assert (tissue.astype(np.float64) ** 2).mean() == pytest.approx(100**2 + 2 * sigma**2,
                                                                    rel=2e-3)


def test_absolute_sigma_and_explicit_scale():
    x = _two_level((300, 300))
    y = RicianNoise(7.0, absolute=True)(x, seed=1)
    assert y[:, :150].mean() == pytest.approx(7.0 * math.sqrt(math.pi / 2), rel=0.02)
    # A patch uses the whole image's scale when it is passed in.
    patch = x[:, :150]  # all air: its own robust scale would fall back to 1.0
    z = degrade(patch, "rician:0.05", seed=2, scale=100.0)
    assert z.mean() == pytest.approx(5.0 * math.sqrt(math.pi / 2), rel=0.02)


def test_gaussian_noise_is_zero_mean():
    x = _two_level((300, 300))
    y = GaussianNoise(0.1)(x, seed=3)
    d = (y - x).astype(np.float64)
    assert abs(d.mean()) < 0.1
    assert d.std() == pytest.approx(10.0, rel=0.02)


def test_poisson_gaussian_mean_and_variance():
    x = np.full((400, 400), 50.0, np.float32)
    x[:, 200:] = 100.0  # scale 100
    y = PoissonGaussianNoise(peak=20, sigma=0.02)(x, seed=4).astype(np.float64)
    for a in (50.0, 100.0):
        part = y[:, :200] if a == 50 else y[:, 200:]
        assert part.mean() == pytest.approx(a, rel=0.01)
        # Var = a * s / peak + (sigma s)^2 with s = 100.
        assert part.var() == pytest.approx(a * 100 / 20 + 2.0**2, rel=0.03)
    # Photon counts: without read noise, values are multiples of scale/peak.
    q = PoissonGaussianNoise(peak=20)(x, seed=5)
    np.testing.assert_allclose(q / 5.0, np.round(q / 5.0), atol=1e-4)


def test_blur_psf_width_and_per_axis():
    x = np.zeros((41, 41, 9), np.float32)
    x[20, 20, 4] = 1.0
    y = Blur((2.0, 2.0, 0.0))(x)
    assert y.sum() == pytest.approx(1.0, rel=1e-5)
    assert np.all(y[:, :, [0, 1, 2, 3, 5, 6, 7, 8]] == 0)  # no blur along z
    prof = y[:, 20, 4] / y[:, 20, 4].sum()
    pos = np.arange(41) - 20
    assert math.sqrt((prof * pos**2).sum()) == pytest.approx(2.0, rel=0.02)
    const = np.full((10, 10), 3.0, np.float32)
    np.testing.assert_allclose(Blur(1.5)(const), 3.0, rtol=1e-6)
    assert Blur(1.5).margin() == 6 and Blur(1.5).local


def test_kspace_truncation_removes_high_frequencies():
    rng = np.random.default_rng(0)
    x = rng.random((64, 48)).astype(np.float32)
    np.testing.assert_allclose(KSpaceDownsample(1.0)(x), x, atol=1e-5)
    y = KSpaceDownsample(4.0, magnitude=False)(x)
    k = np.fft.fftn(y)
    f0, f1 = np.fft.fftfreq(64) * 64, np.fft.fftfreq(48) * 48
    outside = (np.abs(f0)[:, None] > 8) | (np.abs(f1)[None, :] > 6)
    assert np.abs(k[outside]).max() < 1e-3 * np.abs(k).max()
    assert y.mean() == pytest.approx(x.mean(), rel=1e-5)  # DC kept
    # Only the chosen axes lose resolution: axis 0 alone = each column on its own.
    z = KSpaceDownsample(4.0, axes=(0,), magnitude=False)(x)
    col = KSpaceDownsample(4.0, magnitude=False)(x[:, 5])
    np.testing.assert_allclose(z[:, 5], col, atol=1e-5)
    # Magnitude of a real non-negative smooth image ~ the real part.
    smooth = np.outer(np.hanning(64), np.hanning(48)).astype(np.float32) + 1
    np.testing.assert_allclose(KSpaceDownsample(2.0)(smooth),
                               KSpaceDownsample(2.0, magnitude=False)(smooth), atol=1e-4)
    assert not KSpaceDownsample(2.0).local


def test_slice_downsample_box_profile():
    x = np.broadcast_to(np.arange(12, dtype=np.float32), (4, 4, 12)).copy()
    thick = SliceDownsample(4, axis=2, keep_grid=False)(x)
    assert thick.shape == (4, 4, 3)
    np.testing.assert_allclose(thick[0, 0], [1.5, 5.5, 9.5])
    fine = SliceDownsample(4, axis=2)(x)
    assert fine.shape == x.shape
    # A linear ramp survives averaging and linear interpolation between thick-slice centres.
    np.testing.assert_allclose(fine[0, 0, 2:10], x[0, 0, 2:10], atol=1e-5)
    np.testing.assert_allclose(fine[0, 0, :2], 1.5)  # clamped beyond the first centre
    # A partial last group averages what is there.
    part = SliceDownsample(5, axis=0, keep_grid=False)(np.arange(7, dtype=np.float32))
    np.testing.assert_allclose(part, [2.0, 5.5])


def test_seeded_and_composable():
    x = _two_level((64, 64))
    a = degrade(x, "blur:1.0+rician:0.05", seed=7)
    b = degrade(x, "blur:1.0+rician:0.05", seed=7)
    c = degrade(x, "blur:1.0+rician:0.05", seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # Compose = the steps in order, noise relative to the *clean* scale.
    blurred = Blur(1.0)(x)
    rng = np.random.default_rng(7)
    manual = RicianNoise(0.05).apply(blurred, rng, robust_scale(x))
    np.testing.assert_allclose(a, manual, rtol=1e-6)
    assert a.dtype == np.float32 and a.shape == x.shape


def test_spec_parsing_round_trip_and_errors():
    for spec in ("rician:0.05", "gaussian:0.03", "poisson:200,0.01", "blur:1x1x0",
                 "kspace:2,axes=01", "slices:4,axis=2", "blur:1.0+rician:0.05",
                 "rician:12,absolute=true", "none"):
        d = parse_degradation(spec)
        assert parse_degradation(d.to_spec()) == d
    d = parse_degradation("blur:1.0 + rician:0.05")
    assert isinstance(d, Compose) and [type(s) for s in d.steps()] == [Blur, RicianNoise]
    assert parse_degradation("kspace:2,axes=01") == KSpaceDownsample(2.0, axes=(0, 1))
    assert parse_degradation("poisson:peak=50") == PoissonGaussianNoise(peak=50.0)
    assert degrade_patch_margin("blur:1.0+rician:0.05") == 4
    assert degrade_patch_margin("kspace:2+rician:0.05") is None
    assert noise_sigma("blur:1+rician:0.05", 200.0) == pytest.approx(10.0)
    assert "Rician noise (sigma 5% of 200 = 10)" in describe("rician:0.05", scale=200.0)
    with pytest.raises(ValueError, match="speckle.*valid names are rician"):
        parse_degradation("speckle:0.1")
    with pytest.raises(ValueError, match="at most 1 positional"):
        parse_degradation("rician:0.1,0.2")
    with pytest.raises(ValueError, match="no parameter 'beta'"):
        parse_degradation("blur:beta=2")
    with pytest.raises(ValueError, match=">= 0"):
        parse_degradation("rician:-0.1")
    with pytest.raises(ValueError, match="cannot read sigma='abc'"):
        parse_degradation("rician:abc")
    with pytest.raises(ValueError, match="integer >= 1"):
        parse_degradation("slices:0")
    with pytest.raises(ValueError, match="3 values for a 2D image"):
        Blur((1.0, 1.0, 1.0))(np.zeros((8, 8)))
