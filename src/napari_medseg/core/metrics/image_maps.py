"""Where a restoration errs: the absolute-error map and per-slice error curves.

Complements :mod:`napari_medseg.core.metrics.image` (whose :func:`ssim`
already returns the SSIM map with ``full=True``). Arguments are ``(pred,
target)``, ``target`` being the clean reference.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from napari_medseg.core.metrics.image import check_pair

__all__ = ["absolute_error_map", "per_slice_errors"]


def absolute_error_map(pred: Any, target: Any) -> np.ndarray:
    """``|pred - target|`` per voxel, float32 (the difference is taken in float64).

    Its mean is :func:`~napari_medseg.core.metrics.mae`.

    Raises
    ------
    ValueError
        If the shapes differ or an array is not real-valued.
    """
    p, t = check_pair(pred, target)
    out = np.empty(p.shape, np.float32)
    if p.ndim == 0 or p.size == 0:
        out[...] = abs(float(p) - float(t)) if p.size else 0
        return out
    plane = int(np.prod(p.shape[1:], dtype=np.int64))
    step = max(1, (1 << 20) // max(plane, 1))  # float64 temporaries of a few MB, in cache
    for s in range(0, p.shape[0], step):
        d = p[s:s + step].astype(np.float64) - t[s:s + step]
        np.abs(d, out=d)
        out[s:s + step] = d
    return out


def per_slice_errors(pred: Any, target: Any, *, axis: int = 0,
                     data_range: float | None = None) -> dict[str, np.ndarray]:
    """MAE, MSE and PSNR of every slice along ``axis``.

    Parameters
    ----------
    pred, target : array_like
        Images of one shape, 2D or more.
    axis : int, default 0
    data_range : float, optional
        R of the PSNR; defaults to the whole reference's ``max - min`` (one R
        for all slices, so the curve compares like with like), 1.0 for a
        constant reference.

    Returns
    -------
    dict of str to np.ndarray
        ``{"mae", "mse", "psnr"}``, each ``(n_slices,)`` float64; PSNR is
        ``inf`` on a slice restored exactly. ``"data_range"`` holds R as a
        0-d array.
    """
    p, t = check_pair(pred, target)
    if p.ndim < 2:
        raise ValueError(f"per-slice errors need 2 or more dimensions, got shape {p.shape}.")
    if not -p.ndim <= axis < p.ndim:
        raise ValueError(f"axis {axis} is out of range for shape {p.shape}; pass an axis in "
                         f"[0, {p.ndim - 1}].")
    axis %= p.ndim
    if data_range is None:
        data_range = float(np.max(t)) - float(np.min(t)) if t.size else 0.0
        if not data_range > 0:
            data_range = 1.0
    if not (data_range > 0 and math.isfinite(data_range)):
        raise ValueError(f"data_range must be a positive number, got {data_range!r}.")
    others = tuple(a for a in range(p.ndim) if a != axis)
    d = p.astype(np.float64) - t
    mae_s = np.mean(np.abs(d), axis=others)
    d *= d
    mse_s = np.mean(d, axis=others)
    with np.errstate(divide="ignore"):
        psnr_s = np.where(mse_s > 0, 10.0 * np.log10(data_range**2 / np.maximum(mse_s, 1e-300)),
                          np.inf)
    return {"mae": mae_s, "mse": mse_s, "psnr": psnr_s,
            "data_range": np.asarray(float(data_range))}
