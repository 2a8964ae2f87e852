"""Where the windows of a sliding window go, and how much each voxel of a window counts
(nnU-Net's evenly spread tiles and Gaussian importance map)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

__all__ = ["gaussian_importance", "tile_starts"]


def _axis_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Window starts along one axis (nnU-Net's evenly spread steps)."""
    if size <= patch:
        return [0]  # the caller pads this axis to ``patch``
    target_step = max(1.0, patch * (1.0 - overlap))
    n_steps = math.ceil((size - patch) / target_step) + 1
    step = (size - patch) / (n_steps - 1)
    return [int(round(step * i)) for i in range(n_steps)]


def tile_starts(
    shape: Sequence[int], patch_size: Sequence[int], overlap: float
) -> list[tuple[int, ...]]:
    """Start positions of the windows that tile an image.

    Along each axis the windows are spread evenly, the first at 0 and the last
    flush with the end, with neighbours overlapping by at least
    ``overlap * patch`` voxels (at least one voxel of step). Along an axis
    shorter than the patch there is a single window at 0: the caller pads
    that axis to the patch size (see
    :func:`~napari_medseg.core.inference.sliding_window`).

    Parameters
    ----------
    shape : sequence of int
        Spatial shape of the image.
    patch_size : sequence of int
        Spatial window size, one value per axis of ``shape``.
    overlap : float
        Fraction of the window shared with its neighbour, in ``[0, 1)``.

    Returns
    -------
    list of tuple of int
        One start per window, the last axis varying fastest.

    Raises
    ------
    ValueError
        If the lengths differ, a size is not positive, or ``overlap`` is
        outside ``[0, 1)``.
    """
    shape = tuple(int(s) for s in shape)
    patch_size = tuple(int(p) for p in patch_size)
    if len(shape) != len(patch_size):
        raise ValueError(
            f"patch_size {patch_size} has {len(patch_size)} values but the image shape "
            f"{shape} has {len(shape)} spatial axes; give one patch size per axis."
        )
    if min(shape, default=1) < 1 or min(patch_size, default=1) < 1:
        raise ValueError(
            f"Image shape {shape} and patch_size {patch_size} must be positive."
        )
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}.")
    per_axis = [_axis_starts(s, p, overlap) for s, p in zip(shape, patch_size)]
    return list(itertools.product(*per_axis))


def gaussian_importance(
    patch_size: Sequence[int], *, sigma_scale: float = 0.125, min_value: float = 1e-4
) -> np.ndarray:
    """Importance map that weighs a window's centre above its border.

    A separable Gaussian centred on the window with standard deviation
    ``sigma_scale * patch_size`` per axis, scaled to a maximum of 1 and
    clamped below at ``min_value`` so that no voxel has zero weight (every
    voxel is then defined even when it lies only on window borders).

    Parameters
    ----------
    patch_size : sequence of int
        Spatial window size.
    sigma_scale : float
        Standard deviation as a fraction of the window size (nnU-Net: 1/8).
    min_value : float
        Smallest weight, relative to the centre's 1.

    Returns
    -------
    numpy.ndarray
        float32 array of shape ``patch_size``, symmetric under mirroring,
        maximal (1) at the centre voxel(s).
    """
    if sigma_scale <= 0:
        raise ValueError(f"sigma_scale must be > 0, got {sigma_scale}.")
    if not 0.0 < min_value <= 1.0:
        raise ValueError(f"min_value must be in (0, 1], got {min_value}.")
    weight = np.ones((), dtype=np.float64)
    for p in patch_size:
        p = int(p)
        if p < 1:
            raise ValueError(f"patch_size must be positive, got {tuple(patch_size)}.")
        x = np.arange(p, dtype=np.float64) - (p - 1) / 2.0
        sigma = sigma_scale * p
        g = np.exp(-0.5 * (x / sigma) ** 2)
        weight = np.multiply.outer(weight, g)
    weight /= weight.max()
    return np.maximum(weight, min_value).astype(np.float32)
