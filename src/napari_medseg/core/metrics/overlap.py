"""Segmentation overlap metrics, with distances in millimetres.

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
  :func:`to_jsonable` before ``json.dump``.

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

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

__all__ = [
    "dice",
    "dice_per_class",
    "hausdorff_distance",
    "hausdorff95",
    "normalized_surface_dice",
    "evaluate_segmentation",
    "to_jsonable",
]

# Largest label value for which a lookup table / bincount is used instead of
# sorting (np.unique / np.searchsorted).
_LUT_MAX = 1 << 20
# Largest label value + 1 for which raw (pred, target) pairs are bincounted.
_RAW_MAX = 1024

Box = tuple[slice, ...]


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
    return (p if p.dtype == bool else p != 0), (t if t.dtype == bool else t != 0)


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


# --------------------------------------------------------------------------- surfaces


def _bounding_box(mask: np.ndarray) -> Box | None:
    """Tight bounding box of a boolean mask, or None if empty."""
    box: list[slice] = []
    for ax in range(mask.ndim):
        other = tuple(i for i in range(mask.ndim) if i != ax)
        hit = np.flatnonzero(np.any(mask, axis=other)) if other else np.flatnonzero(mask)
        if hit.size == 0:
            return None
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def _union_box(a: Box | None, b: Box | None, shape: tuple[int, ...], margin: int = 1) -> Box:
    boxes = [x for x in (a, b) if x is not None]
    return tuple(
        slice(
            max(min(bx[ax].start for bx in boxes) - margin, 0),
            min(max(bx[ax].stop for bx in boxes) + margin, shape[ax]),
        )
        for ax in range(len(shape))
    )


def _surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels: mask XOR its erosion (cross structure, outside = background)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _surface_distances(
    p: np.ndarray, t: np.ndarray, spacing: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray] | None | str:
    """Directed surface distances (pred->target, target->pred) in mm.

    Returns None when both masks are empty and ``"one_empty"`` when exactly
    one is empty.
    """
    bp, bt = _bounding_box(p), _bounding_box(t)
    if bp is None and bt is None:
        return None
    if bp is None or bt is None:
        return "one_empty"
    box = _union_box(bp, bt, p.shape)
    sp, st = _surface(p[box]), _surface(t[box])
    # distance_transform_edt gives each nonzero voxel its distance to the
    # nearest zero, so the surface of interest is set to zero.
    dist_to_t = ndimage.distance_transform_edt(~st, sampling=spacing)
    dist_to_p = ndimage.distance_transform_edt(~sp, sampling=spacing)
    return dist_to_t[sp], dist_to_p[st]


def _hd_from_distances(d_pt: np.ndarray, d_tp: np.ndarray, percentile: float) -> float:
    return float(max(np.percentile(d_pt, percentile), np.percentile(d_tp, percentile)))


def _nsd_from_distances(d_pt: np.ndarray, d_tp: np.ndarray, tolerance_mm: float) -> float:
    within = np.count_nonzero(d_pt <= tolerance_mm) + np.count_nonzero(d_tp <= tolerance_mm)
    return int(within) / (d_pt.size + d_tp.size)


def _check_percentile(percentile: float) -> float:
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}; use 95 for HD95.")
    return float(percentile)


def _check_tolerance(tolerance_mm: float) -> float:
    if not (math.isfinite(tolerance_mm) and tolerance_mm >= 0):
        raise ValueError(
            f"tolerance_mm must be a finite distance >= 0 in mm, got {tolerance_mm}."
        )
    return float(tolerance_mm)


def hausdorff_distance(
    pred_mask: npt.ArrayLike,
    target_mask: npt.ArrayLike,
    *,
    spacing: Sequence[float],
    percentile: float = 100.0,
) -> float | None:
    """Symmetric (percentile) Hausdorff distance between mask surfaces, in mm.

    The larger of the two directed ``percentile``-th percentiles of the
    surface-to-surface distances (``np.percentile``, linear interpolation), as
    in MONAI's ``compute_hausdorff_distance``. ``percentile=100`` is the
    classical Hausdorff distance of the two surfaces.

    Parameters
    ----------
    pred_mask, target_mask : array_like
        Masks of the same shape (2D, 3D, any ndim); nonzero is foreground.
    spacing : sequence of float
        Voxel size in mm along each array axis (``len(spacing) == ndim``).
    percentile : float, default 100
        Percentile of each directed distance distribution, in ``[0, 100]``.

    Returns
    -------
    float or None
        Distance in mm; ``float("inf")`` when exactly one mask is empty (the
        structure was missed -- JSON writers must handle it, see
        :func:`to_jsonable`); ``None`` when both are empty.

    Raises
    ------
    ValueError
        If the shapes differ, or ``spacing`` does not give one positive value
        per axis.
    """
    p, t = _as_masks(pred_mask, target_mask)
    sp = _check_spacing(spacing, p.ndim)
    q = _check_percentile(percentile)
    d = _surface_distances(p, t, sp)
    if d is None:
        return None
    if isinstance(d, str):
        return math.inf
    return _hd_from_distances(d[0], d[1], q)


def hausdorff95(
    pred_mask: npt.ArrayLike,
    target_mask: npt.ArrayLike,
    *,
    spacing: Sequence[float],
) -> float | None:
    """95th-percentile symmetric Hausdorff distance (HD95) in mm.

    ``max(P95(d(S_pred -> S_target)), P95(d(S_target -> S_pred)))`` over the
    surface voxels ``S = mask XOR erode(mask)``; the count-based definition of
    MONAI (each surface voxel weighs the same).

    Parameters
    ----------
    pred_mask, target_mask : array_like
        Masks of the same shape (2D, 3D, any ndim); nonzero is foreground.
    spacing : sequence of float
        Voxel size in mm along each array axis (``len(spacing) == ndim``).

    Returns
    -------
    float or None
        HD95 in mm; ``float("inf")`` when exactly one mask is empty;
        ``None`` when both are empty (absent in both).

    Raises
    ------
    ValueError
        If the shapes differ or ``spacing`` is malformed.

    See Also
    --------
    hausdorff_distance : any percentile, including the maximum.
    """
    return hausdorff_distance(pred_mask, target_mask, spacing=spacing, percentile=95.0)


def normalized_surface_dice(
    pred_mask: npt.ArrayLike,
    target_mask: npt.ArrayLike,
    *,
    spacing: Sequence[float],
    tolerance_mm: float = 1.0,
) -> float | None:
    """Normalised surface Dice (NSD) at a tolerance in mm.

    The fraction of the surface voxels of both masks that lie within
    ``tolerance_mm`` of the other mask's surface (Nikolov et al. 2021,
    approximated on voxel surfaces by counting surface voxels instead of
    weighting surface elements by area)::

        (|{s in S_p : d(s, S_t) <= tol}| + |{s in S_t : d(s, S_p) <= tol}|)
        / (|S_p| + |S_t|)

    Parameters
    ----------
    pred_mask, target_mask : array_like
        Masks of the same shape (2D, 3D, any ndim); nonzero is foreground.
    spacing : sequence of float
        Voxel size in mm along each array axis.
    tolerance_mm : float, default 1.0
        Acceptable surface deviation in mm (inclusive).

    Returns
    -------
    float or None
        NSD in ``[0, 1]``; ``0.0`` when exactly one mask is empty; ``None``
        when both are empty.

    Raises
    ------
    ValueError
        If the shapes differ, ``spacing`` is malformed or ``tolerance_mm`` is
        negative.
    """
    p, t = _as_masks(pred_mask, target_mask)
    sp = _check_spacing(spacing, p.ndim)
    tol = _check_tolerance(tolerance_mm)
    d = _surface_distances(p, t, sp)
    if d is None:
        return None
    if isinstance(d, str):
        return 0.0
    return _nsd_from_distances(d[0], d[1], tol)


# --------------------------------------------------------------------------- report


def evaluate_segmentation(
    pred: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    spacing: Sequence[float],
    labels: Iterable[int] | None = None,
    tolerance_mm: float = 1.0,
) -> dict[str, Any]:
    """Dice, HD95, NSD and volumes for each label of two label arrays.

    Parameters
    ----------
    pred, target : array_like of int
        Label arrays of the same shape (2D or 3D).
    spacing : sequence of float
        Voxel size in mm along each array axis.
    labels : iterable of int, optional
        Label values to evaluate; defaults to the nonzero values present in
        either array (background ``0`` only when listed).
    tolerance_mm : float, default 1.0
        NSD tolerance in mm.

    Returns
    -------
    dict
        ``{"dice": {"<v>": float|None}, "hd95_mm": {"<v>": float|None},
        "nsd": {"<v>": float|None}, "absent": [v, ...],
        "volume_ml": {"<v>": {"pred": ml, "ref": ml}}}``, keyed by the label
        value as a string. Labels absent in both arrays get ``None`` metrics
        and are listed in ``"absent"``; a label present in only one array gets
        Dice 0, NSD 0 and HD95 ``inf``. Volumes are voxel counts times the
        voxel volume, in ml (1 ml = 1000 mm^3); for 2D inputs the slice is
        taken as 1 mm thick (so the value is the area in mm^2 / 1000).
        ``inf`` is not valid JSON: write the result through
        :func:`to_jsonable`.

    Raises
    ------
    ValueError
        If the shapes differ, an array is not integer, ``spacing`` is
        malformed or ``tolerance_mm`` is negative.
    """
    p, t = _as_labels(pred, target)
    sp = _check_spacing(spacing, p.ndim)
    tol = _check_tolerance(tolerance_mm)
    labs, inter, npred, nref = _label_stats(p, t, labels)
    result: dict[str, Any] = {"dice": {}, "hd95_mm": {}, "nsd": {}, "absent": [], "volume_ml": {}}
    n = len(labs)
    if n == 0:
        return result
    dices = _dice_from_counts(labs, inter, npred, nref)
    voxel_ml = float(np.prod(sp)) / 1000.0
    # Bounding boxes of every label in one pass per array.
    pi, ti = _label_index(p, labs), _label_index(t, labs)
    boxes_p = ndimage.find_objects(pi, max_label=n)
    boxes_t = ndimage.find_objects(ti, max_label=n)
    for k, v in enumerate(labs, start=1):
        key = str(v)
        result["dice"][key] = dices[v]
        result["volume_ml"][key] = {
            "pred": int(npred[k - 1]) * voxel_ml,
            "ref": int(nref[k - 1]) * voxel_ml,
        }
        bp, bt = boxes_p[k - 1], boxes_t[k - 1]
        if bp is None and bt is None:
            result["absent"].append(v)
            result["hd95_mm"][key] = None
            result["nsd"][key] = None
            continue
        if bp is None or bt is None:
            result["hd95_mm"][key] = math.inf
            result["nsd"][key] = 0.0
            continue
        box = _union_box(bp, bt, p.shape)
        d = _surface_distances(pi[box] == k, ti[box] == k, sp)
        assert isinstance(d, tuple)  # both non-empty here
        result["hd95_mm"][key] = _hd_from_distances(d[0], d[1], 95.0)
        result["nsd"][key] = _nsd_from_distances(d[0], d[1], tol)
    return result


def to_jsonable(d: Any) -> Any:
    """Copy a metrics result into plain JSON-safe Python objects.

    ``inf``/``-inf``/``nan`` become the strings ``"inf"``/``"-inf"``/``"nan"``,
    ``None`` stays ``None`` (JSON ``null``), numpy scalars and arrays become
    Python numbers and lists, tuples become lists and mapping keys become
    strings.

    Parameters
    ----------
    d : object
        A (nested) dict / list / number, e.g. from :func:`evaluate_segmentation`.

    Returns
    -------
    object
        The same structure, safe for ``json.dumps(..., allow_nan=False)``.
    """
    if isinstance(d, Mapping):
        return {str(k): to_jsonable(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [to_jsonable(v) for v in d]
    if isinstance(d, np.ndarray):
        return [to_jsonable(v) for v in d.tolist()]
    if isinstance(d, (bool, np.bool_)):
        return bool(d)
    if isinstance(d, (int, np.integer)):
        return int(d)
    if isinstance(d, (float, np.floating)):
        x = float(d)
        if math.isnan(x):
            return "nan"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return x
    return d
