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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np
from scipy import ndimage as ndi

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

SeedLike = int | np.random.Generator | None


def _rng(seed: SeedLike) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def robust_scale(image: np.ndarray, *, mask: np.ndarray | None = None,
                 percentile: float = 99.0) -> float:
    """A robust "bright tissue" intensity of an image, the unit of relative noise levels.

    The ``percentile`` (99th) of the voxel values inside ``mask``; without a
    mask, inside the foreground taken as the voxels above the image's mean
    (for MR magnitude the background is dark air, so "above the mean" is the
    head or body). Robust to a few hot voxels, unlike the maximum.

    Parameters
    ----------
    image : numpy.ndarray
        Clean image, any shape.
    mask : numpy.ndarray of bool, optional
        Foreground; default ``image > image.mean()``.
    percentile : float
        Which percentile of the foreground.

    Returns
    -------
    float
        The scale (> 0). Falls back to the maximum absolute value, then 1.0,
        for images whose foreground percentile is 0 (an all-zero image).
    """
    x = np.asarray(image, dtype=np.float64)
    if mask is None:
        m = x > x.mean()
    else:
        m = np.asarray(mask, bool)
        if m.shape != x.shape:
            raise ValueError(f"mask {m.shape} and image {x.shape} differ in shape.")
    v = np.abs(x[m]) if m.any() else np.abs(x.reshape(-1))
    if v.size > 2_000_000:
        v = v[:: v.size // 1_000_000]
    s = float(np.percentile(v, percentile)) if v.size else 0.0
    if not s > 0:
        s = float(np.abs(x).max()) if x.size else 0.0
    return s if s > 0 else 1.0


@dataclass(frozen=True)
class Degradation:
    """Base class: ``deg(image, seed=..., scale=...)`` returns the degraded float32 image.

    Subclasses implement :meth:`apply` and set :attr:`name` (the spec name).
    ``local`` is False for degradations that need the whole image (k-space,
    slice grids); local ones can be applied to a patch with a margin of
    :meth:`margin` voxels and cropped.
    """

    name: ClassVar[str] = ""
    local: ClassVar[bool] = True

    def apply(self, image: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
        raise NotImplementedError

    def margin(self) -> int:
        """Voxels of context a local degradation needs around a patch."""
        return 0

    def __call__(self, image: np.ndarray, *, seed: SeedLike = None,
                 scale: float | None = None) -> np.ndarray:
        """Degrade ``image``; ``scale`` defaults to :func:`robust_scale` of it."""
        x = np.asarray(image, dtype=np.float32)
        s = robust_scale(x) if scale is None else float(scale)
        return np.asarray(self.apply(x, _rng(seed), s), dtype=np.float32)

    def steps(self) -> tuple[Degradation, ...]:
        """The elementary degradations, in order."""
        return (self,)

    def to_spec(self) -> str:
        """The spec string that :func:`parse_degradation` turns back into this object."""
        first = DEGRADATIONS[self.name][1][0]
        args = [_fmt(getattr(self, first))]
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name != first and f.default != v:
                args.append(f"{f.name}={_fmt(v)}")
        return self.name + ":" + ",".join(args)


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, tuple):
        return "x".join(_fmt(e) for e in v)
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _check_nonneg(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")


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


@dataclass(frozen=True)
class Compose(Degradation):
    """Apply degradations in order; noise levels use the *clean* input's scale.

    Local when every step is local (its margin is the sum of the steps').
    """

    parts: tuple[Degradation, ...] = ()
    name: ClassVar[str] = "compose"

    @property
    def local(self) -> bool:  # type: ignore[override]
        return all(p.local for p in self.parts)

    def margin(self) -> int:
        return sum(p.margin() for p in self.parts)

    def steps(self) -> tuple[Degradation, ...]:
        return tuple(s for p in self.parts for s in p.steps())

    def apply(self, image: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
        for p in self.parts:
            image = np.asarray(p.apply(image, rng, scale), dtype=np.float32)
        return image

    def to_spec(self) -> str:
        return "+".join(p.to_spec() for p in self.parts) or "none"


#: Spec name -> (class, positional parameter names).
DEGRADATIONS: dict[str, tuple[type[Degradation], tuple[str, ...]]] = {
    "rician": (RicianNoise, ("sigma",)),
    "gaussian": (GaussianNoise, ("sigma",)),
    "poisson": (PoissonGaussianNoise, ("peak", "sigma")),
    "blur": (Blur, ("sigma",)),
    "kspace": (KSpaceDownsample, ("factor", "axes")),
    "slices": (SliceDownsample, ("factor", "axis")),
}


def _convert(cls: type[Degradation], key: str, text: str, step: str) -> Any:
    ftypes = {f.name: str(f.type) for f in fields(cls)}
    if key not in ftypes:
        raise ValueError(f"{step!r}: {cls.name} has no parameter {key!r}; it takes "
                         f"{', '.join(ftypes)}.")
    t = ftypes[key]
    try:
        if key == "axes":
            return tuple(int(c) for c in text.replace("x", ""))
        if t.startswith("bool"):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        if t.startswith("int"):
            return int(text)
        if "x" in text:
            return tuple(float(v) for v in text.split("x"))
        return float(text)
    except ValueError:
        raise ValueError(f"{step!r}: cannot read {key}={text!r} as {t}.") from None


def parse_degradation(spec: str | Degradation) -> Degradation:
    """Turn a spec such as ``"blur:1.0+rician:0.05"`` into a degradation.

    Parameters
    ----------
    spec : str or Degradation
        See the module docstring for the grammar; a :class:`Degradation`
        passes through. ``"none"`` or ``""`` is the identity (an empty
        :class:`Compose`).

    Returns
    -------
    Degradation
        A single step, or a :class:`Compose` for several.

    Raises
    ------
    ValueError
        Unknown name, too many or unreadable arguments, or a value out of
        range; the message quotes the offending step and lists valid names.
    """
    if isinstance(spec, Degradation):
        return spec
    if not isinstance(spec, str):
        raise ValueError(f"A degradation spec is a string like 'rician:0.05', got {spec!r}.")
    text = spec.strip()
    if text.lower() in ("", "none"):
        return Compose(())
    parts: list[Degradation] = []
    for step in text.split("+"):
        step = step.strip()
        name, _, argtext = step.partition(":")
        name = name.strip().lower()
        if name not in DEGRADATIONS:
            raise ValueError(f"Unknown degradation {name!r} in {spec!r}; valid names are "
                             f"{', '.join(DEGRADATIONS)} (e.g. 'rician:0.05' or "
                             "'blur:1.0+rician:0.05').")
        cls, positional = DEGRADATIONS[name]
        kwargs: dict[str, Any] = {}
        args = [a.strip() for a in argtext.split(",") if a.strip()] if argtext else []
        for i, a in enumerate(args):
            if "=" in a:
                k, _, v = a.partition("=")
                k = k.strip()
            else:
                if i >= len(positional):
                    raise ValueError(f"{step!r}: {name} takes at most {len(positional)} "
                                     f"positional value(s) ({', '.join(positional)}).")
                k, v = positional[i], a
            kwargs[k] = _convert(cls, k, v.strip(), step)
        try:
            parts.append(cls(**kwargs))
        except TypeError as exc:
            raise ValueError(f"{step!r}: {exc}") from None
    return parts[0] if len(parts) == 1 else Compose(tuple(parts))


def degrade(image: np.ndarray, spec: str | Degradation, *, seed: SeedLike = None,
            scale: float | None = None) -> np.ndarray:
    """Degrade a clean image with a spec or a :class:`Degradation`.

    Parameters
    ----------
    image : numpy.ndarray
        Clean image (spatial axes only).
    spec : str or Degradation
    seed : int, numpy.random.Generator or None
        Same seed, same result.
    scale : float or None
        Intensity scale for relative noise levels; default
        :func:`robust_scale` of ``image``. Pass the whole volume's scale when
        degrading patches of it, so every patch gets the same noise level.

    Returns
    -------
    numpy.ndarray
        float32, the shape of ``image``.
    """
    return parse_degradation(spec)(image, seed=seed, scale=scale)


def noise_sigma(spec: str | Degradation, scale: float) -> float | None:
    """Absolute noise sigma of the (last) noise step of a spec, or None without noise."""
    sig = None
    for s in parse_degradation(spec).steps():
        if isinstance(s, (RicianNoise, GaussianNoise)):
            sig = s.sigma * (1.0 if s.absolute else scale)
    return sig


def describe(spec: str | Degradation, *, scale: float | None = None) -> str:
    """One human line, e.g. ``"blur (sigma 1 vox), Rician noise (sigma 5% of 812 = 40.6)"``."""
    out = []
    for s in parse_degradation(spec).steps():
        if isinstance(s, (RicianNoise, GaussianNoise)):
            kind = "Rician" if isinstance(s, RicianNoise) else "Gaussian"
            if s.absolute:
                out.append(f"{kind} noise (sigma {s.sigma:g})")
            else:
                tail = f" of {scale:.4g} = {s.sigma * scale:.4g}" if scale is not None else ""
                out.append(f"{kind} noise (sigma {100 * s.sigma:g}%{tail})")
        elif isinstance(s, PoissonGaussianNoise):
            out.append(f"Poisson-Gaussian noise ({s.peak:g} photons at scale, read sigma "
                       f"{s.sigma:g})")
        elif isinstance(s, Blur):
            out.append(f"blur (sigma {_fmt(s.sigma)} vox)")
        elif isinstance(s, KSpaceDownsample):
            out.append(f"k-space truncation x{s.factor:g}")
        elif isinstance(s, SliceDownsample):
            out.append(f"{s.factor}x thicker slices (axis {s.axis})")
    return ", ".join(out) or "none"


def degrade_patch_margin(spec: str | Degradation) -> int | None:
    """Context (voxels) needed to degrade a patch on its own; None for whole-image degradations."""
    d = parse_degradation(spec)
    return d.margin() if d.local else None
