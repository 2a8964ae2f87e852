"""Predicting part of an image: which model voxels a region of the input grid needs.

:func:`~napari_medseg.core.pipeline.segment` prepares the whole image (normalisation,
body crop, resampling) and, for a ``region``, runs the model only on the slab of the
model grid that the region is resampled from, plus context. These helpers do that
geometry; they know nothing of models.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["check_region", "interpolate_axis", "region_context", "region_slab"]


def check_region(region: Sequence[int], shape: Sequence[int]) -> tuple[int, int, int]:
    """``(axis, start, stop)`` as ints, after checking it lies within ``shape``.

    Raises
    ------
    ValueError
        Not three integers, or not within the image.
    """
    try:
        ax, lo, hi = (int(v) for v in region)
    except (TypeError, ValueError):
        raise ValueError(f"region must be (axis, start, stop), got {region!r}.") from None
    if not 0 <= ax < len(shape) or not 0 <= lo < hi <= shape[ax]:
        raise ValueError(f"region {tuple(region)} does not lie within the image "
                         f"{tuple(shape)}: give (axis, start, stop) with 0 <= start < stop <= "
                         "the axis's length.")
    return ax, lo, hi


def region_context(patch: Sequence[int], model_dims: int, image_dims: int, axis: int,
                   slice_axis: int) -> int:
    """Model voxels of context each side of a region along ``axis``.

    None where a 2D model slices a volume along ``axis`` (its slices are independent),
    else half the patch along that axis.
    """
    if model_dims == 2 and image_dims == 3:
        if axis == slice_axis:
            return 0
        return int(patch[[i for i in range(3) if i != slice_axis].index(axis)]) // 2
    return int(patch[axis]) // 2


def region_slab(n_input: int, n_model: int, start: int, stop: int, context: int
                ) -> tuple[np.ndarray, tuple[int, int]]:
    """The model-grid slab that input indices ``start:stop`` along one axis need.

    Parameters
    ----------
    n_input, n_model : int
        The axis's length on the input grid (cropped) and on the model grid.
    start, stop : int
        The wanted input indices.
    context : int
        Model voxels to add each side; the slab is then at least ``2 * context`` long
        where the axis allows, as a whole-image window would be.

    Returns
    -------
    coords : np.ndarray
        For each wanted index, the model-grid coordinate that resampling back (a
        linear zoom in grid mode, :func:`~napari_medseg.core.resample.resample_to_shape`)
        reads it from.
    slab : (int, int)
        Model-grid ``(first, stop)`` indices to predict.
    """
    coords = np.clip((np.arange(start, stop) + 0.5) * (n_model / n_input) - 0.5, 0,
                     n_model - 1)
    p0, p1 = int(np.floor(coords[0])), int(np.ceil(coords[-1])) + 1
    s0, s1 = max(0, p0 - context), min(n_model, p1 + context)
    if context and s1 - s0 < 2 * context:
        s0, s1 = max(0, min(s0, s1 - 2 * context)), min(n_model, max(s1, s0 + 2 * context))
    return coords, (s0, s1)


def interpolate_axis(arr: np.ndarray, axis: int, coords: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``arr`` at ``coords`` along ``axis`` (exact at integers).

    ``coords`` lie within ``[0, arr.shape[axis] - 1]``; the result is float32.
    """
    i0 = np.floor(coords).astype(np.intp)
    i1 = np.minimum(i0 + 1, arr.shape[axis] - 1)
    shape = [1] * arr.ndim
    shape[axis] = len(coords)
    w = (coords - i0).astype(np.float32).reshape(shape)
    out = np.take(arr, i0, axis=axis) * (1 - w) + np.take(arr, i1, axis=axis) * w
    return out.astype(np.float32)
