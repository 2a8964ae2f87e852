"""The degradation base class, its composition and the robust intensity scale.

:class:`Degradation` is what every step subclasses; :class:`Compose` chains
steps with one scale taken from the clean input; :func:`robust_scale` is the
unit of relative noise levels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np

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
        from napari_medseg.core.degrade.spec import DEGRADATIONS  # the table names every class

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
