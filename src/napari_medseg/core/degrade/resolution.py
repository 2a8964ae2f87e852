"""Resolution degradations: Gaussian blur, k-space truncation, thicker slices."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy import ndimage as ndi

from napari_medseg.core.degrade.base import Degradation, _check_nonneg

def _per_axis(value: float | tuple[float, ...], ndim: int, what: str) -> tuple[float, ...]:
    if isinstance(value, tuple):
        if len(value) != ndim:
            raise ValueError(f"{what} has {len(value)} values for a {ndim}D image; give one "
                             f"value or {ndim}.")
        return tuple(float(v) for v in value)
    return (float(value),) * ndim


@dataclass(frozen=True)
class Blur(Degradation):
    r"""Gaussian blur: convolution with the imaging system's point-spread function.

    Physics: a finite-resolution system images :math:`x * h`; a Gaussian PSF
    of standard deviation :math:`\sigma` voxels has full width at half
    maximum :math:`2\sqrt{2\ln 2}\,\sigma \approx 2.355\sigma`. Border voxels
    are extended by mirroring. Deterministic (no randomness drawn).

    Parameters
    ----------
    sigma : float or tuple of float
        PSF standard deviation in voxels, one value or one per axis (0: no
        blur along that axis, e.g. ``(1, 1, 0)`` for in-plane blur).
    """

    sigma: float | tuple[float, ...] = 1.0
    name: ClassVar[str] = "blur"

    def __post_init__(self) -> None:
        for v in self.sigma if isinstance(self.sigma, tuple) else (self.sigma,):
            _check_nonneg("blur sigma", v)

    def margin(self) -> int:
        s = max(self.sigma) if isinstance(self.sigma, tuple) else self.sigma
        return int(math.ceil(4 * float(s)))

    def apply(self, image: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
        sig = _per_axis(self.sigma, image.ndim, "blur sigma")
        return ndi.gaussian_filter(image, sig, mode="reflect", truncate=4.0)


def _axes(value: int | tuple[int, ...] | None, ndim: int) -> tuple[int, ...]:
    if value is None:
        return tuple(range(ndim))
    axes = value if isinstance(value, tuple) else (value,)
    out = tuple(int(a) % ndim if -ndim <= int(a) < ndim else -1 for a in axes)
    if -1 in out or len(set(out)) != len(out):
        raise ValueError(f"axes {value!r} are not distinct axes of a {ndim}D image.")
    return out


@dataclass(frozen=True)
class KSpaceDownsample(Degradation):
    r"""Lower acquired resolution by truncating k-space (MR super-resolution).

    Physics: MR samples the Fourier transform (k-space) of the object; the
    acquired resolution is set by the largest spatial frequency measured.
    Keeping only the central ``1/factor`` of k-space along ``axes`` (a
    symmetric band, so a real image stays real) and zero-filling the rest
    before the inverse FFT gives the image a
    ``factor``-times lower resolution *on the same grid* (sinc interpolation),
    with the Gibbs ringing next to edges that real low-resolution scans show.
    The magnitude of the complex result is returned (as scanners report), or
    its real part with ``magnitude=False``. Deterministic; needs the whole
    image (not local).

    Parameters
    ----------
    factor : float
        Resolution reduction (> 1 to degrade; 1 leaves the image unchanged).
    axes : tuple of int or None
        Axes to truncate (``kspace:2,axes=01`` for in-plane); default all.
    magnitude : bool
    """

    factor: float = 2.0
    axes: tuple[int, ...] | None = None
    magnitude: bool = True
    name: ClassVar[str] = "kspace"
    local: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.factor) and self.factor >= 1):
            raise ValueError(f"kspace factor must be >= 1, got {self.factor!r}.")

    def apply(self, image: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
        axes = _axes(self.axes, image.ndim)
        k = np.fft.fftn(image.astype(np.float64), axes=axes)
        for ax in axes:
            n = image.shape[ax]
            half = max(1, int(round(n / self.factor))) / 2.0
            f = np.abs(np.fft.fftfreq(n) * n)  # integer frequency indices
            # Symmetric band (|f| < half, the edge at half weight): a real image stays real.
            m = (f < half) + 0.5 * (f == half)
            if half >= n / 2:  # the whole band: the Nyquist bin is its own mirror
                m = np.ones(n)
            shape = [1] * image.ndim
            shape[ax] = n
            k = k * m.reshape(shape)
        out = np.fft.ifftn(k, axes=axes)
        return np.abs(out) if self.magnitude else out.real


@dataclass(frozen=True)
class SliceDownsample(Degradation):
    r"""Thick slices: a ``factor``-times coarser slice spacing along one axis.

    Physics: a 2D multi-slice acquisition excites slabs; each measured slice
    integrates the signal over its thickness (a box slice profile). Here
    consecutive groups of ``factor`` fine slices are averaged (partial-volume
    effect), and, with ``keep_grid`` (default), the thick slices are put back
    on the fine grid by linear interpolation between their centres, so input
    and target share one grid for training. Deterministic; needs the whole
    image along ``axis`` (not local).

    Parameters
    ----------
    factor : int
        Fine slices per thick slice (>= 1).
    axis : int
        The slice axis (default the last).
    keep_grid : bool
        Interpolate back to the input's shape; False returns the thick slices.
    """

    factor: int = 2
    axis: int = -1
    keep_grid: bool = True
    name: ClassVar[str] = "slices"
    local: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if int(self.factor) != self.factor or self.factor < 1:
            raise ValueError(f"slices factor must be an integer >= 1, got {self.factor!r}.")

    def apply(self, image: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
        ax = _axes((self.axis,), image.ndim)[0]
        f = int(self.factor)
        n = image.shape[ax]
        x = np.moveaxis(image, ax, 0).astype(np.float32)
        starts = np.arange(0, n, f)
        thick = np.add.reduceat(x, starts, axis=0)
        counts = np.minimum(f, n - starts).astype(np.float32)
        thick = thick / counts.reshape(-1, *([1] * (x.ndim - 1)))
        if not self.keep_grid:
            return np.moveaxis(thick, 0, ax)
        centres = starts + (counts - 1) / 2.0
        pos = np.arange(n, dtype=np.float64)
        idx = np.clip(np.searchsorted(centres, pos, side="right") - 1, 0, len(centres) - 1)
        nxt = np.minimum(idx + 1, len(centres) - 1)
        span = np.where(nxt > idx, centres[nxt] - centres[idx], 1.0)
        w = np.clip((pos - centres[idx]) / span, 0.0, 1.0).astype(np.float32)
        w = w.reshape(-1, *([1] * (x.ndim - 1)))
        out = (1 - w) * thick[idx] + w * thick[nxt]
        return np.moveaxis(out, 0, ax)
