"""How long the Metrics widget's recompute takes on a large volume, against a naive reference.

A 512x512x400 pair of label volumes (generated blobs: 3 classes, the
prediction a shifted, dilated and partly erased copy of the reference) is
scored the way the widget does after an edit:

* ours: ``per_slice_dice`` (per-slice *and* volume Dice per class, one
  vectorised bincount pass) + ``overlap_map`` (TP/FP/FN) + ``volume_difference``
  from the same counts;
* reference: ``dice_per_class`` for the volume, a Python loop over the slices
  calling the existing ``dice`` for each class, and the TP/FP/FN map with
  plain whole-array numpy boolean ops.

The results are checked equal, then timed side by side (best of ``--repeat``)
and printed with their ratio. HD95/NSD (``evaluate_segmentation``'s surface
distances, run in the widget's second worker) are timed separately, once, on
a centred 128^3 crop by default: on the whole 512x512x400 pair of large
blobs they take minutes (``--distances-crop 0``).

Usage::

    python benchmarks/metrics_recompute.py            # 512x512x400, ~1-2 min on 2 cores
    python benchmarks/metrics_recompute.py --shape 256 256 200 --repeat 3
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage

from napari_medseg.core.metrics import (
    dice,
    dice_per_class,
    evaluate_segmentation,
    overlap_map,
    per_slice_dice,
)


def make_pair(shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Reference: smoothed random blobs thresholded into 3 classes; prediction: a perturbed copy."""
    rng = np.random.default_rng(seed)
    small = tuple(max(4, s // 16) for s in shape)
    field = ndimage.zoom(rng.standard_normal(small).astype(np.float32),
                         [s / q for s, q in zip(shape, small)], order=1)[tuple(
                             slice(0, s) for s in shape)]
    ref = np.zeros(shape, np.uint8)
    ref[field > 0.6] = 1
    ref[field > 1.1] = 2
    ref[field < -1.2] = 3
    pred = np.roll(ref, 2, axis=1)
    pred[ndimage.binary_dilation(pred == 2, iterations=1) & (pred == 0)] = 2
    z = shape[0] // 3
    pred[z:z + 8][pred[z:z + 8] == 1] = 0  # a few slices where class 1 is missed
    return pred, ref


def ours(pred: np.ndarray, ref: np.ndarray, axis: int) -> tuple:
    sd = per_slice_dice(pred, ref, axis=axis)
    vol = sd.volume_dice()
    vd = sd.volume_difference((1.0,) * pred.ndim)
    return vol, sd.dice, overlap_map(pred, ref), vd


def naive(pred: np.ndarray, ref: np.ndarray, axis: int) -> tuple:
    vol = dice_per_class(pred, ref)
    labels = list(vol)
    per = np.full((len(labels), pred.shape[axis]), np.nan)
    for s in range(pred.shape[axis]):
        ps, rs = np.take(pred, s, axis=axis), np.take(ref, s, axis=axis)
        for k, v in enumerate(labels):
            d = dice(ps == v, rs == v)
            per[k, s] = np.nan if d is None else d
    return vol, per, naive_map(pred, ref)


def best(fn, *args, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(*args)
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(400, 512, 512),
                    help="volume shape (slices first); default 400 x 512 x 512")
    ap.add_argument("--axis", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--distances", action=argparse.BooleanOptionalAction, default=True,
                    help="also time HD95 + NSD (default: on a crop, see --distances-crop)")
    ap.add_argument("--distances-crop", type=int, default=128, metavar="N",
                    help="time HD95/NSD on the centred N^3 crop (0: the whole volume, which "
                    "takes minutes at 512x512x400)")
    args = ap.parse_args()
    shape = tuple(args.shape)
    t0 = time.perf_counter()
    pred, ref = make_pair(shape)
    print(f"volume {shape} uint8 ({pred.size / 1e6:.0f} M voxels), classes "
          f"{sorted(set(np.unique(ref).tolist()) - {0})}, generated in "
          f"{time.perf_counter() - t0:.1f} s; slicing along axis {args.axis}")
    _, (vol, per, m, _) = best(ours, pred, ref, args.axis, repeat=1)
    _, (vol_r, per_r, m_r) = best(naive, pred, ref, args.axis, repeat=1)
    assert vol == vol_r, (vol, vol_r)
    np.testing.assert_allclose(per, per_r, rtol=1e-12)
    np.testing.assert_array_equal(m, m_r)
    print("results identical: volume Dice, per-slice Dice, TP/FP/FN map")
    print(f"volume Dice: {', '.join(f'{k}: {v:.4f}' for k, v in vol.items())}")
    print(f"{'recompute after an edit (best of ' + str(args.repeat) + ')':<44} {'ours':>8} "
          f"{'naive':>8} {'ratio':>7}")
    parts = [("volume + per-slice Dice per class",
              lambda: per_slice_dice(pred, ref, axis=args.axis),
              lambda: naive_dice_only(pred, ref, args.axis)),
             ("TP/FP/FN map", lambda: overlap_map(pred, ref), lambda: naive_map(pred, ref))]
    tot_a = tot_b = 0.0
    for name, a, b in parts:
        ta, _ = best(a, repeat=args.repeat)
        tb, _ = best(b, repeat=args.repeat)
        tot_a, tot_b = tot_a + ta, tot_b + tb
        print(f"  {name:<42} {ta:7.2f}s {tb:7.2f}s {tb / ta:6.1f}x")
    print(f"  {'total':<42} {tot_a:7.2f}s {tot_b:7.2f}s {tot_b / tot_a:6.1f}x")
    if args.distances:
        # Surface distances scale with the structures' bounding boxes, not the voxel count
        # alone: timed on a centred crop of --distances-crop voxels a side unless 0.
        c = args.distances_crop
        box = tuple(slice(max(0, (s - c) // 2), max(0, (s - c) // 2) + c) if c else slice(None)
                    for s in shape)
        pc, rc = pred[box], ref[box]
        t0 = time.perf_counter()
        rep = evaluate_segmentation(pc, rc, spacing=(1.0,) * pred.ndim)
        print(f"HD95 + NSD on {pc.shape} ({pc.size / 1e6:.0f} M voxels; evaluate_segmentation, "
              f"the widget's second worker): {time.perf_counter() - t0:.2f} s; HD95 mm "
              + ", ".join(f"{k}: {v:.2f}" for k, v in rep["hd95_mm"].items()))


def naive_dice_only(pred: np.ndarray, ref: np.ndarray, axis: int) -> None:
    vol = dice_per_class(pred, ref)
    for s in range(pred.shape[axis]):
        ps, rs = np.take(pred, s, axis=axis), np.take(ref, s, axis=axis)
        for v in vol:
            dice(ps == v, rs == v)


def naive_map(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    pm, rm = pred != 0, ref != 0
    m = np.zeros(pred.shape, np.uint8)
    m[pm & rm & (pred == ref)] = 1
    m[pm & ~rm] = 2
    m[~pm & rm] = 3
    m[pm & rm & (pred != ref)] = 4
    return m


if __name__ == "__main__":
    main()
