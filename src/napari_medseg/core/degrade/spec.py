"""Degradation specs (``"blur:1.0+rician:0.05"``): parsing, applying and describing them.

The grammar is in the :mod:`napari_medseg.core.degrade` package docstring.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np

from napari_medseg.core.degrade.base import Compose, Degradation, SeedLike, _fmt
from napari_medseg.core.degrade.noise import GaussianNoise, PoissonGaussianNoise, RicianNoise
from napari_medseg.core.degrade.resolution import Blur, KSpaceDownsample, SliceDownsample

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
