"""Noise degradations: Rician (MR magnitude), additive Gaussian, Poisson-Gaussian."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from napari_medseg.core.degrade.base import Degradation, _check_nonneg

@dataclass(frozen=True)
class RicianNoise(Degradation):
    r"""Rician noise of MR magnitude images.

    Physics: the scanner measures a complex signal whose real and imaginary
    channels each carry independent zero-mean Gaussian thermal noise of
    standard deviation :math:`\sigma`; the magnitude image is
    :math:`m = \sqrt{(A + n_r)^2 + n_i^2}` for true magnitude :math:`A \ge 0`
    (the phase does not matter: the noise is circularly symmetric). ``m``
    follows a Rice distribution. Where :math:`A = 0` (air) it is Rayleigh with
    mean :math:`\sigma\sqrt{\pi/2} \approx 1.2533\sigma` and standard deviation
    :math:`\sigma\sqrt{2 - \pi/2}`: noise *raises* dark regions (the Rician
    bias); where :math:`A \gg \sigma` it is nearly Gaussian,
    :math:`N(\sqrt{A^2+\sigma^2}, \sigma^2)`.

    Parameters
    ----------
    sigma : float
        Standard deviation of each Gaussian channel, as a fraction of the
        robust scale (or in image units with ``absolute=True``).
    absolute : bool
        Treat ``sigma`` as image units.
    """

    sigma: float = 0.05
    absolute: bool = False
    name: ClassVar[str] = "rician"

    def __post_init__(self) -> None:
        _check_nonneg("rician sigma", self.sigma)

    def apply(self, image: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
        s = self.sigma * (1.0 if self.absolute else scale)
        re = np.abs(image) + rng.normal(0.0, s, image.shape).astype(np.float32)
        im = rng.normal(0.0, s, image.shape).astype(np.float32)
        return np.sqrt(re * re + im * im)


@dataclass(frozen=True)
class GaussianNoise(Degradation):
    r"""Additive white Gaussian noise: :math:`y = x + n`, :math:`n \sim N(0, \sigma^2)`.

    Models thermal/electronic noise on images whose values are a linear
    reconstruction (CT Hounsfield units after filtered back-projection at
    moderate dose, real-valued MR, high-count microscopy). Zero-mean, so
    unlike Rician noise it adds no bias.

    Parameters
    ----------
    sigma : float
        Standard deviation relative to the robust scale (or absolute).
    absolute : bool
    """

    sigma: float = 0.05
    absolute: bool = False
    name: ClassVar[str] = "gaussian"

    def __post_init__(self) -> None:
        _check_nonneg("gaussian sigma", self.sigma)

    def apply(self, image: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
        s = self.sigma * (1.0 if self.absolute else scale)
        return image + rng.normal(0.0, s, image.shape).astype(np.float32)


@dataclass(frozen=True)
class PoissonGaussianNoise(Degradation):
    r"""Photon (shot) noise plus Gaussian read noise (fluorescence, low-dose X-ray).

    Physics: a detector counts photons; the count in a pixel with expected
    count :math:`\lambda` is Poisson, variance :math:`\lambda`; the electronics
    then add Gaussian read noise. With the image's robust scale :math:`s`
    corresponding to ``peak`` expected photons,

    .. math::
        y = \frac{s}{p}\,\mathrm{Poisson}\!\left(\frac{p\,\max(x,0)}{s}\right)
            + N(0, (\sigma s)^2)

    so :math:`E[y] = x` (for :math:`x \ge 0`) and
    :math:`\mathrm{Var}[y] = x s / p + (\sigma s)^2`: signal-dependent noise,
    relatively strongest in dark regions. Fewer photons (smaller ``peak``)
    means more noise.

    Parameters
    ----------
    peak : float
        Expected photon count at the robust scale (> 0).
    sigma : float
        Read-noise standard deviation relative to the scale (absolute units
        with ``absolute=True``; ``peak`` always refers to the scale).
    absolute : bool
    """

    peak: float = 100.0
    sigma: float = 0.0
    absolute: bool = False
    name: ClassVar[str] = "poisson"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.peak) and self.peak > 0):
            raise ValueError(f"poisson peak (photons at the intensity scale) must be > 0, "
                             f"got {self.peak!r}.")
        _check_nonneg("poisson read-noise sigma", self.sigma)

    def apply(self, image: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
        lam = np.maximum(image, 0).astype(np.float64) * (self.peak / scale)
        y = rng.poisson(lam).astype(np.float32) * np.float32(scale / self.peak)
        if self.sigma > 0:
            s = self.sigma * (1.0 if self.absolute else scale)
            y += rng.normal(0.0, s, image.shape).astype(np.float32)
        return y
