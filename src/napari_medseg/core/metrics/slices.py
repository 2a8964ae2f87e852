"""Per-slice Dice, volume difference, TP/FP/FN maps and the worst slice.

The pieces a viewer needs to show *where* a segmentation disagrees with its
reference, computed for a whole volume in a few vectorised passes (no Python
loop over slices): every voxel's ``(slice, pred label, reference label)``
triple is encoded as one integer and counted with :func:`numpy.bincount`.
The volume-wide Dice per class is the sum of the per-slice counts, so one
pass gives both (and equals :func:`~napari_medseg.core.metrics.dice_per_class`).

Edge cases
----------
* A class absent from both masks of a slice has no Dice there: the
  :attr:`SliceDice.dice` array holds ``NaN`` in exactly those places (and
  :attr:`SliceDice.defined` is False); it is never 0 or 1.
* :func:`worst_slice` skips such slices -- there is nothing to correct on a
  slice where neither mask has the class -- and returns ``None`` when no
  slice has it. Ties go to the lowest slice index.
* :func:`volume_difference` gives the relative difference ``None`` when
  the class is absent in both volumes and ``inf`` when only the reference
  lacks it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from napari_medseg.core.metrics.overlap import (
    _as_labels,
    _check_spacing,
    _label_index,
    _label_stats,
    _present_values,
    _resolve_labels,
)

__all__ = [
    "SliceDice",
    "per_slice_dice",
    "worst_slice",
    "overlap_map",
    "volume_difference",
    "NONE",
    "TP",
    "FP",
    "FN",
    "WRONG_CLASS",
    "OVERLAP_NAMES",
]

#: Codes of :func:`overlap_map`.
NONE, TP, FP, FN, WRONG_CLASS = 0, 1, 2, 3, 4
OVERLAP_NAMES = {NONE: "none", TP: "true positive", FP: "false positive",
                 FN: "false negative", WRONG_CLASS: "wrong class"}

# Voxels per bincount call: bounds the int64 copy bincount makes of its input
# (8 bytes a voxel) and keeps the pass in cache-friendly pieces.
_CHUNK_VOXELS = 1 << 19
# Voxels per chunk of overlap_map (its uint8 temporaries then stay in cache).
_MAP_CHUNK_VOXELS = 1 << 20
# Largest label span counted raw (value - lo); wider label sets are mapped to
# compact indices first.
_RAW_SPAN = 64
# Largest (slices x classes^2) histogram; beyond it three linear-size
# bincounts replace the full per-slice confusion matrix.
_MAX_CONFUSION_BINS = 1 << 22


@dataclass(frozen=True, eq=False)
class SliceDice:
    """Voxel counts and Dice of each class on each slice along one axis.

    Attributes
    ----------
    labels : tuple of int
        Class values, in row order.
    axis : int
        The array axis the slices are taken along.
    inter, npred, nref : np.ndarray
        ``(n_labels, n_slices)`` int64: ``|P & T|``, ``|P|`` and ``|T|`` per
        class and slice.
    """

    labels: tuple[int, ...]
    axis: int
    inter: np.ndarray
    npred: np.ndarray
    nref: np.ndarray

    @property
    def n_slices(self) -> int:
        return int(self.inter.shape[1])

    @property
    def defined(self) -> np.ndarray:
        """``(n_labels, n_slices)`` bool: the class is in either mask of the slice."""
        return (self.npred + self.nref) > 0

    @property
    def dice(self) -> np.ndarray:
        """``(n_labels, n_slices)`` float64 Dice; ``NaN`` where both masks lack the class."""
        den = (self.npred + self.nref).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = 2.0 * self.inter / den
        out[den == 0] = np.nan
        return out

    def row(self, label: int) -> int:
        """Row of ``label`` in the arrays; ValueError naming the known labels."""
        try:
            return self.labels.index(int(label))
        except ValueError:
            raise ValueError(f"label {label} was not scored; the scored labels are "
                             f"{list(self.labels)}.") from None

    def volume_dice(self) -> dict[int, float | None]:
        """Dice of each class over the whole volume (as :func:`dice_per_class`)."""
        i, a, b = self.inter.sum(1), self.npred.sum(1), self.nref.sum(1)
        return {v: (None if a[k] + b[k] == 0 else 2.0 * int(i[k]) / int(a[k] + b[k]))
                for k, v in enumerate(self.labels)}

    def volume_difference(self, spacing: Sequence[float]) -> dict[int, dict[str, Any]]:
        """:func:`volume_difference` from these counts (no second pass over the data)."""
        unit = size_unit(len(spacing))
        voxel = voxel_size(spacing)
        return {v: _vol_diff(int(self.npred[k].sum()), int(self.nref[k].sum()), voxel, unit)
                for k, v in enumerate(self.labels)}

    def mean_dice(self) -> np.ndarray:
        """``(n_slices,)`` mean Dice over the classes defined on each slice (NaN if none)."""
        d = self.dice
        n = np.sum(~np.isnan(d), axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, np.nansum(d, axis=0) / np.maximum(n, 1), np.nan)


def _offset_shape(ndim: int, axis: int) -> list[int]:
    return [-1 if a == axis else 1 for a in range(ndim)]


def _code_dtype(n_codes: int) -> type[np.integer[Any]]:
    if n_codes <= 1 << 16:
        return np.uint16
    if n_codes <= 1 << 31:
        return np.int32
    return np.int64


def _chunks(n0: int, plane: int, voxels: int = 0) -> Iterable[tuple[int, int]]:
    step = max(1, (voxels or _CHUNK_VOXELS) // max(plane, 1))
    for s in range(0, n0, step):
        yield s, min(n0, s + step)


def _per_slice_hist(a: np.ndarray, b: np.ndarray | None, k: int, axis: int,
                    n_slices: int) -> np.ndarray:
    """``(n_slices, k[, k])`` counts of ``a`` (and ``b``) values in ``[0, k)`` per slice.

    Works through axis-0 chunks (contiguous) whatever ``axis`` is; the slice
    index enters the code as a broadcast offset, so nothing is transposed.
    """
    bins = k * k if b is not None else k
    total = n_slices * bins
    dtype = _code_dtype(total)
    out = np.zeros(total, np.int64)
    plane = int(np.prod(a.shape[1:], dtype=np.int64))
    for s, e in _chunks(a.shape[0], plane):
        code = a[s:e].astype(dtype)
        if b is not None:
            code *= dtype(k)
            code += b[s:e].astype(dtype, copy=False)
        if axis == 0:
            offs = (np.arange(e - s, dtype=dtype) * dtype(bins)).reshape(
                _offset_shape(a.ndim, 0))
            code += offs
            out[s * bins:e * bins] += np.bincount(code.ravel(), minlength=(e - s) * bins)
        else:
            offs = (np.arange(n_slices, dtype=dtype) * dtype(bins)).reshape(
                _offset_shape(a.ndim, axis))
            code += offs
            out += np.bincount(code.ravel(), minlength=total)
    return out.reshape((n_slices, k, k) if b is not None else (n_slices, k))


def per_slice_dice(pred: npt.ArrayLike, target: npt.ArrayLike, *, axis: int = 0,
                   labels: Iterable[int] | None = None) -> SliceDice:
    """Dice of each class on every slice along ``axis``, in one vectorised pass.

    Parameters
    ----------
    pred, target : array_like of int
        Label arrays of one shape, 2D or more (bool counts as ``{0, 1}``).
    axis : int, default 0
        Axis to slice along (negative values count from the end).
    labels : iterable of int, optional
        Classes to score, in order; defaults to the nonzero values present in
        either array (background ``0`` only when listed).

    Returns
    -------
    SliceDice
        Counts and Dice per class and slice; ``.dice`` is ``NaN`` where a
        class is in neither mask of a slice, ``.volume_dice()`` equals
        :func:`~napari_medseg.core.metrics.dice_per_class`.

    Raises
    ------
    ValueError
        If the shapes differ, an array is not integer, it has fewer than two
        dimensions or ``axis`` is out of range.
    """
    p, t = _as_labels(pred, target)
    if p.ndim < 2:
        raise ValueError(f"per-slice Dice needs arrays of 2 or more dimensions, got shape "
                         f"{p.shape}; use dice_per_class for a single slice.")
    if not -p.ndim <= axis < p.ndim:
        raise ValueError(f"axis {axis} is out of range for {p.ndim}D arrays of shape "
                         f"{p.shape}; pass an axis in [0, {p.ndim - 1}].")
    axis %= p.ndim
    n_slices = p.shape[axis]
    if p.size == 0:
        labs = _resolve_labels(labels, lambda: np.zeros(0, np.int64))
        z = np.zeros((len(labs), n_slices), np.int64)
        return SliceDice(tuple(labs), axis, z, z.copy(), z.copy())
    lo = min(int(p.min()), int(t.min()), 0)
    span = max(int(p.max()), int(t.max())) - lo + 1
    if span <= _RAW_SPAN and n_slices * span * span <= _MAX_CONFUSION_BINS:
        # Raw values: no relabelling pass. Rows/columns are value - lo.
        pa = p if lo == 0 else p.astype(np.int64) - lo
        ta = t if lo == 0 else t.astype(np.int64) - lo
        conf = _per_slice_hist(pa, ta, span, axis, n_slices)
        rows, cols = conf.sum(axis=2), conf.sum(axis=1)  # (S, span)
        labs = _resolve_labels(labels, lambda: np.flatnonzero((rows + cols).sum(0)) + lo)
        idx = np.asarray([v - lo for v in labs], np.intp)
        ok = (idx >= 0) & (idx < span)
        safe = np.where(ok, idx, 0)
        diag = conf[:, safe, safe].T  # (n, S)
        inter = np.where(ok[:, None], diag, 0)
        npred = np.where(ok[:, None], rows[:, safe].T, 0)
        nref = np.where(ok[:, None], cols[:, safe].T, 0)
        return SliceDice(tuple(labs), axis, inter, npred, nref)
    labs = _resolve_labels(labels, lambda: np.union1d(_present_values(p), _present_values(t)))
    n = len(labs)
    pi, ti = _label_index(p, labs), _label_index(t, labs)
    if n_slices * (n + 1) ** 2 <= _MAX_CONFUSION_BINS:
        conf = _per_slice_hist(pi, ti, n + 1, axis, n_slices)
        inter = np.diagonal(conf, axis1=1, axis2=2)[:, 1:].T
        npred, nref = conf.sum(axis=2)[:, 1:].T, conf.sum(axis=1)[:, 1:].T
    else:  # many classes: three (slices x classes) histograms instead of slices x classes^2
        npred = _per_slice_hist(pi, None, n + 1, axis, n_slices)[:, 1:].T
        nref = _per_slice_hist(ti, None, n + 1, axis, n_slices)[:, 1:].T
        same = np.where(pi == ti, pi, 0)
        inter = _per_slice_hist(same, None, n + 1, axis, n_slices)[:, 1:].T
    return SliceDice(tuple(labs), axis, np.ascontiguousarray(inter, np.int64),
                     np.ascontiguousarray(npred, np.int64), np.ascontiguousarray(nref, np.int64))


def worst_slice(sd: SliceDice, *, label: int | None = None) -> int | None:
    """Slice with the lowest Dice, among the slices where either mask has the class.

    Parameters
    ----------
    sd : SliceDice
    label : int, optional
        The class; ``None`` ranks slices by the mean Dice of the classes
        defined on each (:meth:`SliceDice.mean_dice`).

    Returns
    -------
    int or None
        The slice index (the lowest one on ties); ``None`` when no slice has
        the class. Slices where both masks lack it are never chosen: their
        Dice is undefined and there is nothing there to correct.
    """
    d = sd.mean_dice() if label is None else sd.dice[sd.row(label)]
    if d.size == 0 or np.all(np.isnan(d)):
        return None
    return int(np.nanargmin(d))


def overlap_map(pred: npt.ArrayLike, target: npt.ArrayLike, *,
                label: int | None = None) -> np.ndarray:
    """Where the prediction agrees with the reference, as one uint8 code per voxel.

    Parameters
    ----------
    pred, target : array_like of int
        Label arrays of one shape.
    label : int, optional
        Score this class alone (``pred == label`` against ``target ==
        label``). ``None`` scores every nonzero label at once.

    Returns
    -------
    np.ndarray of uint8
        :data:`NONE` (0) neither mask, :data:`TP` (1) both, :data:`FP` (2)
        prediction only, :data:`FN` (3) reference only. With ``label=None``
        a voxel both label nonzero but differently is :data:`WRONG_CLASS`
        (4), not a true positive.

    Raises
    ------
    ValueError
        If the shapes differ or an array is not integer.
    """
    p, t = _as_labels(pred, target)
    out = np.empty(p.shape, np.uint8)
    if p.ndim == 0 or p.size == 0:
        out[...] = NONE if p.size == 0 else _overlap_scalar(int(p), int(t), label)
        return out
    plane = int(np.prod(p.shape[1:], dtype=np.int64))
    # Small axis-0 chunks keep every temporary in cache: ~6x faster than whole-array passes.
    for s, e in _chunks(p.shape[0], plane, _MAP_CHUNK_VOXELS):
        a, b, o = p[s:e], t[s:e], out[s:e]
        pm = (a != 0) if label is None else (a == label)
        tm = (b != 0) if label is None else (b == label)
        pu, tu = pm.view(np.uint8), tm.view(np.uint8)
        # 2 * pred + 3 * ref - 4 * both: FP 2, FN 3, TP 5 - 4 = 1.
        np.multiply(pu, np.uint8(FP), out=o)
        o += tu * np.uint8(FN)
        both = pm & tm
        o -= both.view(np.uint8) * np.uint8(FP + FN - TP)
        if label is None:
            both &= a != b
            o[both] = WRONG_CLASS
    return out


def _overlap_scalar(p: int, t: int, label: int | None) -> int:
    pm, tm = (p != 0, t != 0) if label is None else (p == label, t == label)
    if pm and tm:
        return WRONG_CLASS if label is None and p != t else TP
    return FP if pm else FN if tm else NONE


def size_unit(ndim: int) -> str:
    """How a class's size is reported: ``"ml"`` in a volume, ``"mm2"`` (an area) in a 2D
    image -- a 2D image has no thickness to make a volume of."""
    return "mm2" if ndim == 2 else "ml"


def unit_of(volume_diff: Mapping[Any, Mapping[str, Any]]) -> str:
    """The :func:`size_unit` a :func:`volume_difference` result is in (``"ml"`` if empty)."""
    return next((u for vd in volume_diff.values() for u in ("ml", "mm2")
                 if f"pred_{u}" in vd), "ml")


def voxel_size(spacing: Sequence[float]) -> float:
    """One voxel's size in :func:`size_unit`'s unit (1 ml = 1000 mm^3)."""
    v = float(np.prod(spacing))
    return v if size_unit(len(spacing)) == "mm2" else v / 1000.0


def _vol_diff(npred: int, nref: int, voxel: float, unit: str) -> dict[str, Any]:
    ps, rs = npred * voxel, nref * voxel
    if nref:
        rel: float | None = (npred - nref) / nref
    else:
        rel = None if npred == 0 else math.inf
    return {f"pred_{unit}": ps, f"ref_{unit}": rs, f"diff_{unit}": ps - rs,
            f"abs_diff_{unit}": abs(ps - rs), "relative": rel}


def volume_difference(pred: npt.ArrayLike, target: npt.ArrayLike, *, spacing: Sequence[float],
                      labels: Iterable[int] | None = None) -> dict[int, dict[str, Any]]:
    """Volume of each class in both arrays and their difference, in ml (area in mm^2 in 2D).

    Parameters
    ----------
    pred, target : array_like of int
        Label arrays of one shape.
    spacing : sequence of float
        Voxel size in mm per axis (1 ml = 1000 mm^3).
    labels : iterable of int, optional
        Classes; defaults to the nonzero values present in either array.

    Returns
    -------
    dict
        ``{label: {"pred_ml", "ref_ml", "diff_ml" (pred - ref, signed),
        "abs_diff_ml", "relative" ((pred - ref) / ref)}}``; for 2D arrays the sizes
        are areas, ``"pred_mm2"`` etc. (:func:`size_unit`). ``relative`` is
        ``None`` when the class is absent in both and ``inf`` when only the
        reference lacks it (write JSON through ``to_jsonable``).
    """
    p, t = _as_labels(pred, target)
    sp = _check_spacing(spacing, p.ndim)
    labs, _, npred, nref = _label_stats(p, t, labels)
    unit, voxel = size_unit(p.ndim), voxel_size(sp)
    return {v: _vol_diff(int(npred[k]), int(nref[k]), voxel, unit) for k, v in enumerate(labs)}
