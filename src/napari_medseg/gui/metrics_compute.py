"""What the Metrics widget computes, as plain functions and job generators (no Qt).

Split in two so a correction shows its Dice at once:

* :func:`overlap_part` -- volume Dice per class, per-slice Dice along the
  viewed axis, volume difference, the TP/FP/FN map. Vectorised counting: a
  few tenths of a second for 512x512x400 (``benchmarks/metrics_recompute.py``),
  milliseconds for a typical volume, so small volumes run it in the GUI thread.
* :func:`distance_job` -- HD95 and NSD (surface distance transforms: seconds
  on a large volume), always in a worker thread.

Restoration (:func:`restoration_job`): the readout and the SSIM and absolute
error maps, in a worker thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_medseg.core import metrics as M
from napari_medseg.core.data import fills_its_extent, labelled_slices, painted_axis

#: Volumes up to this many voxels compute :func:`overlap_part` in the GUI thread (measured:
#: ~15-30 ms for 4M voxels on 2 shared cores); bigger ones in the worker.
SYNC_MAX_VOXELS = 1 << 22


@dataclass(frozen=True, eq=False)
class OverlapPart:
    """The fast segmentation numbers of one recompute (``token`` orders recomputes)."""

    token: int
    labels: tuple[int, ...]
    volume_dice: dict[int, float | None]
    volume_diff: dict[int, dict[str, Any]]
    slices: M.SliceDice | None
    axis: int | None
    overlap: np.ndarray
    map_label: int | None
    seconds: float
    scored: str = ""  # what a sparse reference left in the score ("" when all of it)


@dataclass(frozen=True, eq=False)
class DistancePart:
    """HD95 and NSD per class (``evaluate_segmentation``'s report) of recompute ``token``."""

    token: int
    report: dict[str, Any]
    seconds: float
    tolerance_mm: float = 1.0


@dataclass(frozen=True, eq=False)
class RestorationResult:
    """Readout (``evaluate_restoration``'s keys), maps and per-slice errors."""

    token: int
    report: dict[str, Any]
    ssim_map: np.ndarray
    abs_error: np.ndarray
    per_slice: dict[str, np.ndarray] | None
    axis: int | None
    win_size: int
    seconds: float


def as_labels(a: np.ndarray) -> np.ndarray:
    """Integer labels of a Labels layer's array (float data is rounded, as the CLI does)."""
    a = np.asarray(a)
    return a if a.dtype.kind in "biu" else np.rint(a).astype(np.int64)


def labelled_part(pred: np.ndarray, ref: np.ndarray, *, slices: bool = True
                  ) -> tuple[np.ndarray, np.ndarray, str]:
    """``pred`` and ``ref`` with what the reference leaves unlabelled taken out of the score.

    Both arrays are set to 0 on the reference's voxels of value -1 (unlabelled, as
    ``napari-medseg evaluate`` treats them: never a class of their own) and, with
    ``slices``, on a 3D reference's slices without any label along the axis it looks
    painted along: a reference painted on a few slices (as the training widget's sparse
    labels are) says nothing about its other slices, and scored as it is, a perfect
    prediction gets false positives on every unpainted slice. Also returns what was left
    out, for the status line.
    """
    p, r = as_labels(pred), as_labels(ref)
    drop = r < 0
    said = (f"{int(drop.sum())} unlabelled (-1) reference voxel(s) not scored"
            if drop.any() else "")
    found = painted_axis(r) if slices and r.ndim == 3 else None
    if found is not None:
        axis = found[0]
        keep = labelled_slices(r, axis)
        idx: list[Any] = [slice(None)] * r.ndim
        idx[axis] = ~keep
        drop = drop.copy()
        drop[tuple(idx)] = True
        said = f"scored on the {int(keep.sum())} of {keep.size} slices (axis {axis}) " \
               "the reference labels"
        if keep.sum() > 1 and fills_its_extent(r, axis):
            # no gaps between labelled slices: a fully labelled reference, whose false
            # positives beyond the structure this would hide
            said += (" -- but it looks fully labelled (no unpainted slices within it); "
                     "untick 'reference labels some slices only' to count false positives "
                     "beyond it")
    if drop.any():
        p, r = np.where(drop, 0, p), np.where(drop, 0, r)
    return p, r, said


def overlap_part(pred: np.ndarray, ref: np.ndarray, *, spacing: Sequence[float],
                 axis: int | None, map_label: int | None, token: int = 0,
                 sparse: bool = False) -> OverlapPart:
    """Dice (volume and per slice), volume difference and TP/FP/FN map of ``pred`` vs ``ref``.

    Reference voxels of value -1 are unlabelled and never scored; ``sparse``: nor are the
    reference's unpainted slices (:func:`labelled_part`).
    """
    t0 = time.perf_counter()
    p, r, said = labelled_part(pred, ref, slices=sparse)
    if axis is not None and p.ndim >= 2:
        sd: M.SliceDice | None = M.per_slice_dice(p, r, axis=axis)
        labels = sd.labels
        vdice, vdiff = sd.volume_dice(), sd.volume_difference(spacing)
    else:
        sd = None
        vdice = M.dice_per_class(p, r)
        labels = tuple(vdice)
        vdiff = M.volume_difference(p, r, spacing=spacing, labels=labels)
    if map_label is not None and map_label not in labels:
        map_label = None  # the class vanished (painted away): show every class
    ov = M.overlap_map(p, r, label=map_label)
    return OverlapPart(token, tuple(labels), vdice, vdiff, sd, axis if sd is not None else None,
                       ov, map_label, time.perf_counter() - t0, said)


def overlap_job(pred: np.ndarray, ref: np.ndarray, *, spacing: Sequence[float],
                axis: int | None, map_label: int | None, token: int, sparse: bool = False
                ) -> Callable[[Callable[[], bool]], Generator[Any, None, OverlapPart]]:
    """JobRunner factory running :func:`overlap_part` in the worker."""
    def factory(should_stop: Callable[[], bool]) -> Generator[Any, None, OverlapPart]:
        yield from ()
        return overlap_part(pred, ref, spacing=spacing, axis=axis, map_label=map_label,
                            token=token, sparse=sparse)
    return factory


def present_labels(pred: np.ndarray, ref: np.ndarray) -> list[int]:
    """The non-zero labels of either array (a full pass over both: keep it off the GUI
    thread for big volumes)."""
    p, r = as_labels(pred), as_labels(ref)
    return [int(v) for v in np.union1d(np.unique(p), np.unique(r)) if v != 0]


def distance_job(pred: np.ndarray, ref: np.ndarray, *, spacing: Sequence[float],
                 tolerance_mm: float, token: int, labels: Sequence[int] | None = None,
                 sparse: bool = False
                 ) -> Callable[[Callable[[], bool]], Generator[Any, None, DistancePart]]:
    """JobRunner factory: HD95 and NSD per class via ``evaluate_segmentation``.

    ``labels`` None: every non-zero label of either array, found in the worker.
    ``sparse``: only what the reference labels (:func:`labelled_part`)."""
    def factory(should_stop: Callable[[], bool]) -> Generator[Any, None, DistancePart]:
        yield from ()
        t0 = time.perf_counter()
        p, r, _ = labelled_part(pred, ref, slices=sparse)
        todo = present_labels(p, r) if labels is None else list(labels)
        rep = M.evaluate_segmentation(p, r, spacing=spacing, labels=todo,
                                      tolerance_mm=tolerance_mm)
        return DistancePart(token, rep, time.perf_counter() - t0, tolerance_mm)
    return factory



def restoration_job(pred: np.ndarray, ref: np.ndarray, *, axis: int | None, token: int
                    ) -> Callable[[Callable[[], bool]], Generator[Any, None, RestorationResult]]:
    """JobRunner factory: ``evaluate_restoration``'s numbers plus the SSIM and error maps."""
    def factory(should_stop: Callable[[], bool]) -> Generator[Any, None, RestorationResult]:
        yield from ()
        t0 = time.perf_counter()
        p, r = np.asarray(pred, np.float64), np.asarray(ref, np.float64)
        win = M.ssim_window(r.shape)
        if win < 3:
            raise ValueError(f"images of shape {r.shape} are too small for SSIM (3 pixels a "
                             "side at least); pick larger images.")
        dr = float(r.max() - r.min()) if r.size else 0.0
        dr = dr if dr > 0 else 1.0  # evaluate_restoration's default
        mean, smap = M.ssim(p, r, data_range=dr, win_size=win, full=True)  # type: ignore[misc]
        report = {"mae": M.mae(p, r), "mse": M.mse(p, r), "nmse": M.nmse(p, r),
                  "nmse_variance": M.nmse_variance(p, r), "psnr": M.psnr(p, r, data_range=dr),
                  "ssim": float(mean), "data_range": dr}
        err = M.absolute_error_map(p, r)
        per = M.per_slice_errors(p, r, axis=axis, data_range=dr) if axis is not None else None
        return RestorationResult(token, report, smap, err, per, axis, win,
                                 time.perf_counter() - t0)
    return factory
