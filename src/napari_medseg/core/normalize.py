"""Per-channel intensity normalisation, fitted inside the body and stored with a model.

The statistics are fitted once per image (at training and at prediction time alike)
and kept in checkpoints as :class:`ChannelNorm` records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ChannelNorm:
    """Per-channel intensity normalisation: clip to [lo, hi], then (x - mean) / std."""

    lo: float
    hi: float
    mean: float
    std: float

    def to_dict(self) -> dict[str, float]:
        """JSON-friendly form for checkpoints."""
        return {"lo": self.lo, "hi": self.hi, "mean": self.mean, "std": self.std}


def foreground_mask(image: np.ndarray) -> np.ndarray:
    """Voxels inside the body: where any channel differs from its background value.

    Skull-stripped MR is constant outside the brain: 0, or a negative constant
    once z-scored inside the brain (BraTS). A channel's background value is
    its corner voxel's value when at least 10% of the voxels share it; when no
    channel has such a background (raw images, noisy phantoms) the whole image
    counts.
    """
    fg = np.zeros(image.shape[1:], bool)
    found = False
    corner = (0,) * (image.ndim - 1)
    for c in range(image.shape[0]):
        differs = image[c] != image[c][corner]
        if differs.mean() < 0.9:
            fg |= differs
            found = True
    if not found or fg.sum() < 10:
        return np.ones(image.shape[1:], bool)
    return fg


#: Interquartile range of a standard normal distribution.
IQR_PER_STD = 1.3489795


def fit_normalization(image: np.ndarray, method: str = "percentile",
                      mask: np.ndarray | None = None) -> tuple[ChannelNorm, ...]:
    """Statistics for each channel of ``image`` (C, *spatial).

    ``percentile``: clip to the 0.5 and 99.5 percentiles inside the mask,
    then z-score with the clipped values (robust to bright outliers).
    ``zscore``: z-score inside the mask, no clipping.
    ``median_iqr``: clip to the same percentiles, then centre on the median and
    divide by the interquartile range / 1.349 (the standard deviation's value
    for normal data). Mean, standard deviation and the 99.5th percentile all
    move with the share and brightness of a lesion; the middle half of the
    voxels is mostly normal tissue, so a large bright tumour compresses its own
    contrast against other cases far less (about 17% rather than 42% for a
    lesion growing from 2% to 12% of the voxels, ``tests/core/test_data.py``).
    ``none``: keep the values (mean 0, std 1, no clipping), for images that are
    already normalised the same way, such as BraTS volumes z-scored by their
    provider: statistics taken again inside the brain include the tumour, so a
    large bright tumour compresses its own contrast against the other cases.
    """
    if method == "none":
        return tuple(ChannelNorm(-np.inf, np.inf, 0.0, 1.0) for _ in range(image.shape[0]))
    m = foreground_mask(image) if mask is None else np.asarray(mask, bool)
    norms = []
    for c in range(image.shape[0]):
        v = image[c][m].astype(np.float64)
        if v.size > 2_000_000:  # percentiles of a large subsample are as good and much faster
            v = v[:: v.size // 1_000_000]
        if method in ("percentile", "median_iqr"):
            lo, hi = (float(x) for x in np.percentile(v, [0.5, 99.5]))
            v = np.clip(v, lo, hi)
        elif method == "zscore":
            lo, hi = -np.inf, np.inf
        else:
            raise ValueError(f"Unknown normalisation {method!r}; use 'percentile', 'zscore', "
                             "'median_iqr' or 'none'.")
        if method == "median_iqr":
            q1, centre, q3 = (float(x) for x in np.percentile(v, [25, 50, 75]))
            scale = (q3 - q1) / IQR_PER_STD
            if scale <= 1e-8:  # over half the voxels share one value: fall back to the spread
                scale = float(v.std())
        else:
            centre, scale = float(v.mean()), float(v.std())
        norms.append(ChannelNorm(lo, hi, centre, scale if scale > 1e-8 else 1.0))
    return tuple(norms)


def apply_normalization(image: np.ndarray, norms: Sequence[ChannelNorm]) -> np.ndarray:
    """Normalise (C, *spatial) with stored statistics; returns float32."""
    if image.shape[0] != len(norms):
        raise ValueError(f"Image has {image.shape[0]} channels but the normalisation was fitted "
                         f"on {len(norms)}; pass the same channels as in training.")
    out = np.empty(image.shape, np.float32)
    for c, n in enumerate(norms):
        x = image[c].astype(np.float32, copy=False)
        if np.isfinite(n.lo) or np.isfinite(n.hi):
            x = np.clip(x, n.lo, n.hi)
        out[c] = (x - n.mean) / n.std
    return out


def norms_from_dicts(items: Sequence[dict[str, Any]]) -> tuple[ChannelNorm, ...]:
    """Inverse of :meth:`ChannelNorm.to_dict` for a list."""
    keys = ("lo", "hi", "mean", "std")
    return tuple(ChannelNorm(**{k: float(d[k]) for k in keys}) for d in items)
