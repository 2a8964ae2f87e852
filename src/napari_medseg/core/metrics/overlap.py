"""Segmentation overlap metrics, with distances in millimetres.

Dice lives here, with the input checks and label counting every overlap metric
shares; surface distances (HD95, NSD) are in
:mod:`napari_medseg.core.metrics.surface`, the per-label report in
:mod:`napari_medseg.core.metrics.report`.

All functions take ``(pred, target)`` in that order and keep options
keyword-only. Nothing here returns NaN: the edge cases are part of each
function's contract.

Empty-mask policy (shared by every overlap metric)
--------------------------------------------------
* **both empty** -- the structure is *absent in both*; the metric is
  undefined and the function returns ``None``. Callers report the structure
  as absent (``evaluate_segmentation`` lists it under ``"absent"``) rather
  than averaging a made-up 1.0 or 0.0 into a mean.
* **exactly one empty** -- the structure was missed (or hallucinated):
  Dice and NSD are ``0.0``, the Hausdorff distance is ``float("inf")``.
  ``inf`` is a valid Python float but not valid JSON; pass results through
  :func:`~napari_medseg.core.metrics.to_jsonable` before ``json.dump``.

Surfaces and distances
----------------------
The surface of a mask is ``mask XOR binary_erosion(mask)`` with the
face-connected (cross) structuring element and voxels outside the array
counted as background -- the definition used by MONAI's
``get_mask_edges``. Distances from each surface voxel of one mask to the
nearest surface voxel of the other come from
``scipy.ndimage.distance_transform_edt(..., sampling=spacing)``, so they are
Euclidean distances in millimetres between voxel centres. Arrays are cropped
to the union bounding box of both masks (plus a one-voxel margin) first, which
gives identical surfaces and distances at a fraction of the cost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "dice",
    "dice_per_class",
]

# Largest label value for which a lookup table / bincount is used instead of
# sorting (np.unique / np.searchsorted).
_LUT_MAX = 1 << 20
# Largest label value + 1 for which raw (pred, target) pairs are bincounted.
_RAW_MAX = 1024


# --------------------------------------------------------------------------- checks


def _check_same_shape(pred: np.ndarray, target: np.ndarray) -> None:
    if pred.shape != target.shape:
        raise ValueError(
            f"Prediction {pred.shape} and target {target.shape} differ in shape; "
            "resample the prediction onto the target grid (or crop/pad both to the "
            "same grid) before computing metrics."
        )


def _check_spacing(spacing: Sequence[float] | npt.ArrayLike, ndim: int) -> tuple[float, ...]:
    sp = np.atleast_1d(np.asarray(spacing, dtype=float))
    if sp.ndim != 1 or sp.size != ndim:
        raise ValueError(
            f"spacing must give one voxel size in mm per array axis ({ndim} values for "
            f"{ndim}D arrays), got {tuple(sp.ravel().tolist())}; pass e.g. "
            f"spacing={(1.0,) * ndim}."
        )
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(
            f"spacing must hold positive finite voxel sizes in mm, got {tuple(sp.tolist())}."
        )
    return tuple(float(s) for s in sp)


def _as_masks(
    pred_mask: npt.ArrayLike, target_mask: npt.ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred_mask)
    t = np.asarray(target_mask)
    _check_same_shape(p, t)
    for name, a in (("pred", p), ("target", t)):
        _check_binary_float(name, a)
    return (p if p.dtype == bool else p != 0), (t if t.dtype == bool else t != 0)


def _check_binary_float(name: str, a: np.ndarray) -> None:
    """Float masks must hold 0 and 1 only: "nonzero is foreground" would count a NaN of a
    diverged model, or every voxel of a probability map, as foreground without a word."""
    if a.dtype.kind != "f":
        return
    bad = int(np.count_nonzero(~np.isfinite(a)))
    if bad:
        raise ValueError(f"{name} holds {bad} NaN/inf value(s); a mask must be finite. Fill or "
                         "mask them before measuring.")
    if np.any((a != 0) & (a != 1)):
        raise ValueError(f"{name} is a float array with values other than 0 and 1 (a "
                         "probability map?); threshold it first, e.g. pred > 0.5.")


def _as_labels(pred: npt.ArrayLike, target: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred)
    t = np.asarray(target)
    _check_same_shape(p, t)
    for name, a in (("pred", p), ("target", t)):
        if a.dtype.kind not in "biu":
            raise ValueError(
                f"{name} must be an integer label array, got dtype {a.dtype}; cast it with "
                "np.rint(x).astype(np.int32) (nibabel's get_fdata() returns floats: "
                "use np.asarray(img.dataobj) for labels)."
            )
    if p.dtype == bool:
        p = p.view(np.uint8)
    if t.dtype == bool:
        t = t.view(np.uint8)
    return p, t


# --------------------------------------------------------------------------- Dice


def dice(pred_mask: npt.ArrayLike, target_mask: npt.ArrayLike) -> float | None:
    """Dice similarity coefficient of two binary masks.

    ``2 |P & T| / (|P| + |T|)``.

    Parameters
    ----------
    pred_mask, target_mask : array_like
        Masks of the same shape, any number of dimensions; nonzero is foreground.

    Returns
    -------
    float or None
        Dice in ``[0, 1]``; ``0.0`` when exactly one mask is empty;
        ``None`` when both are empty (structure absent in both -- report it as
        such instead of counting it as 0 or 1).

    Raises
    ------
    ValueError
        If the shapes differ.
    """
    p, t = _as_masks(pred_mask, target_mask)
    denom = np.count_nonzero(p) + np.count_nonzero(t)
    if denom == 0:
        return None
    return 2.0 * int(np.count_nonzero(p & t)) / int(denom)


def _present_values(a: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an integer array (bincount when cheap)."""
    if a.size == 0:
        return np.zeros(0, dtype=np.int64)
    lo, hi = int(a.min()), int(a.max())
    if lo >= 0 and hi < _LUT_MAX:
        return np.flatnonzero(np.bincount(a.ravel()))
    return np.unique(a).astype(np.int64)


def _resolve_labels(
    labels: Iterable[int] | None, present: Callable[[], np.ndarray]
) -> list[int]:
    if labels is None:
        return [int(v) for v in present() if v != 0]
    out: list[int] = []
    for v in labels:
        if isinstance(v, (bool, np.bool_)) or int(v) != v:
            raise ValueError(f"labels must be integer label values, got {v!r}.")
        if int(v) not in out:
            out.append(int(v))
    return out


def _label_index(a: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """Map ``a`` to 1..n for ``labels[0..n-1]`` and 0 for any other value."""
    n = len(labels)
    dtype = np.uint8 if n < 255 else np.int32
    if a.size == 0 or n == 0:
        return np.zeros(a.shape, dtype=dtype)
    lo, hi = int(a.min()), int(a.max())
    if lo >= 0 and hi < _LUT_MAX:
        lut = np.zeros(hi + 1, dtype=dtype)
        for k, v in enumerate(labels, start=1):
            if 0 <= v <= hi:
                lut[v] = k
        return lut[a]
    order = np.argsort(labels)
    sorted_labels = np.asarray(labels, dtype=np.int64)[order]
    pos = np.searchsorted(sorted_labels, a)
    pos_c = np.minimum(pos, n - 1)
    hit = sorted_labels[pos_c] == a
    idx = np.where(hit, (order + 1)[pos_c], 0)
    return idx.astype(dtype)


def _pair_counts(p: np.ndarray, t: np.ndarray, k: int, offset: int = 0) -> np.ndarray:
    """(k, k) counts of (p - offset, t - offset) pairs, values in [0, k); one bincount."""
    if offset == 0 and k * k <= 1 << 16:
        dtype: type[np.integer[Any]] = np.uint16
    elif k * k <= 1 << 31:
        dtype = np.int32
    else:
        dtype = np.intp
    pairs = p.astype(dtype).ravel()
    if offset:
        pairs -= dtype(offset)
    pairs *= dtype(k)
    pairs += t.ravel().astype(dtype, copy=False)
    if offset:
        pairs -= dtype(offset)
    return np.bincount(pairs, minlength=k * k).reshape(k, k)


def _label_stats(
    p: np.ndarray, t: np.ndarray, labels: Iterable[int] | None
) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
    """Labels and, per label, |P & T|, |P| and |T| voxel counts.

    When the label values span fewer than ``_RAW_MAX`` integers (the usual
    case) the raw pairs ``(pred - lo) * K + (target - lo)`` are counted in one
    ``np.bincount``; other label sets are first mapped to compact indices.
    """
    if p.size == 0:
        labs = _resolve_labels(labels, lambda: np.zeros(0, dtype=np.int64))
        z = np.zeros(len(labs), dtype=np.int64)
        return labs, z, z.copy(), z.copy()
    lo = min(int(p.min()), int(t.min()), 0)
    k = max(int(p.max()), int(t.max())) - lo + 1
    if k <= _RAW_MAX:
        conf = _pair_counts(p, t, k, offset=lo)
        rows, cols = conf.sum(axis=1), conf.sum(axis=0)
        labs = _resolve_labels(labels, lambda: np.flatnonzero(rows + cols) + lo)
        idx = np.asarray([v - lo if 0 <= v - lo < k else -1 for v in labs], dtype=np.intp)
        ok = idx >= 0
        safe = np.where(ok, idx, 0)
        inter = np.where(ok, conf[safe, safe], 0)
        return labs, inter, np.where(ok, rows[safe], 0), np.where(ok, cols[safe], 0)
    labs = _resolve_labels(
        labels, lambda: np.union1d(_present_values(p), _present_values(t))
    )
    n = len(labs)
    conf = _pair_counts(_label_index(p, labs), _label_index(t, labs), n + 1)
    diag = np.diagonal(conf)[1:]
    return labs, diag, conf.sum(axis=1)[1:], conf.sum(axis=0)[1:]


def _dice_from_counts(
    labs: Sequence[int], inter: np.ndarray, npred: np.ndarray, nref: np.ndarray
) -> dict[int, float | None]:
    out: dict[int, float | None] = {}
    for v, i, a, b in zip(labs, inter.tolist(), npred.tolist(), nref.tolist()):
        out[v] = None if a + b == 0 else 2.0 * i / (a + b)
    return out


def dice_per_class(
    pred: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    labels: Iterable[int] | None = None,
) -> dict[int, float | None]:
    """Dice of each label of two integer label arrays, in one pass.

    Parameters
    ----------
    pred, target : array_like of int
        Label arrays of the same shape. Any integer values are allowed
        (e.g. BraTS ``{0, 1, 2, 4}``, or negative values); bool arrays count
        as ``{0, 1}``.
    labels : iterable of int, optional
        Label values to score, in the order wanted. Defaults to the union of
        the nonzero values present in either array; background ``0`` is
        scored only when listed.

    Returns
    -------
    dict of int to float or None
        ``{label: dice}``; ``None`` for a label absent in both arrays,
        ``0.0`` for a label present in only one.

    Raises
    ------
    ValueError
        If the shapes differ or an array is not of integer dtype.

    Notes
    -----
    When the label values span fewer than 1024 integers, the pairs
    ``pred * K + target`` are counted with a single ``np.bincount`` (tens of
    ms for a 240x240x155 volume), which also yields the labels present;
    other label sets are mapped to compact indices first (slower: a sort).
    """
    p, t = _as_labels(pred, target)
    return _dice_from_counts(*_label_stats(p, t, labels))
