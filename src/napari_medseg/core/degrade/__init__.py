"""Synthetic degradations for restoration training: noise, blur, down-sampling.

Each degradation is a small frozen dataclass whose docstring states the
physics it models. All of them

* take a clean array (any number of spatial axes, no channel axis) and
  return a float32 array of the same shape,
* draw their randomness from a :class:`numpy.random.Generator` (pass a seed
  or a generator; the same seed gives the same result),
* express noise levels *relative to a robust intensity scale* of the clean
  image (:func:`robust_scale`, the 99th percentile of the foreground) unless
  ``absolute=True``, so ``rician:0.05`` means "5 % of the bright tissue
  intensity" on any scanner's units,
* compose: :class:`Compose` applies steps in order with one scale computed
  from the clean input, so ``blur:1+rician:0.05`` blurs and then adds noise
  whose sigma is 5 % of the *clean* image's scale.

Specs
-----
The command line and configs name degradations with a small grammar
(:func:`parse_degradation`)::

    spec   := step ("+" step)*
    step   := name [":" arg ("," arg)*]
    arg    := value | key "=" value        (tuples as 1x1x0)

    rician:0.05            Rician noise, sigma 5 % of the robust scale
    gaussian:0.03          additive Gaussian noise
    poisson:200,0.01       Poisson-Gaussian: 200 photons at the scale, 1 % read noise
    blur:1.5               Gaussian PSF, sigma 1.5 voxels (blur:1x1x0 per axis)
    kspace:2,axes=01       keep the central half of k-space along axes 0 and 1
    slices:4,axis=2        4x thicker slices along axis 2, back on the fine grid
    blur:1.0+rician:0.05   compose

``to_spec()`` writes the same grammar back, so a degradation round-trips
through a checkpoint.

The package holds :mod:`.base` (the base class, :class:`Compose`,
:func:`robust_scale`), :mod:`.noise`, :mod:`.resolution` (blur, k-space,
slices) and :mod:`.spec` (parsing, :func:`degrade`, :func:`describe`).
Import from here.
"""

from __future__ import annotations

from napari_medseg.core.degrade.base import Compose, Degradation, SeedLike, robust_scale
from napari_medseg.core.degrade.noise import GaussianNoise, PoissonGaussianNoise, RicianNoise
from napari_medseg.core.degrade.resolution import Blur, KSpaceDownsample, SliceDownsample
from napari_medseg.core.degrade.spec import (
    DEGRADATIONS,
    degrade,
    degrade_patch_margin,
    describe,
    noise_sigma,
    parse_degradation,
)

__all__ = [
    "DEGRADATIONS",
    "Blur",
    "Compose",
    "Degradation",
    "GaussianNoise",
    "KSpaceDownsample",
    "PoissonGaussianNoise",
    "RicianNoise",
    "SliceDownsample",
    "degrade",
    "parse_degradation",
    "robust_scale",
]
