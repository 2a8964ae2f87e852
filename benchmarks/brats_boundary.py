"""Where the whole-tumour boundary lies in the BraTS cases, and what our grid does to it.

A diagnostic for ``fewlabel_brats.py``; nothing is trained. For each case of
``../shared/data/brats2013`` (read in place) it prints:

* **labels through the training grid**: the reference labels taken to the
  training spacing (in the brain's bounding box, as ``prepare_case`` does) and
  back to 1 mm (as ``segment`` does with probabilities), scored against
  themselves: the whole-tumour Dice a perfect model could reach at that spacing.
  ``vote`` is :func:`~napari_medseg.core.resample.resample_labels` (a centred vote),
  ``nearest`` the nearest-neighbour sampling it replaced.
* **where each annotator drew the boundary**: the median FLAIR of the outer 2 mm
  of the whole tumour ("shell"), of the 2 mm of brain just outside it ("ring")
  and of brain over 10 mm away ("normal"), in the provider's values, after our
  normalisation (``percentile`` inside the brain, the benchmark's recipe) and
  after MONAI's ``NormalizeIntensity(nonzero=True)`` (the reference recipe's).
* with ``--pred``: for predicted label files of the test case (from
  ``fewlabel_brats.py --save-pred DIR``), whole-tumour Dice, predicted/reference
  volume, precision, recall, which reference classes the missed voxels belong
  to, how many lie within 3 mm of the reference boundary, and their FLAIR.

Usage::

    python benchmarks/brats_boundary.py
    python benchmarks/brats_boundary.py --spacing 2 1.5 --pred preds/*.nii.gz
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from fewlabel_brats import CASES, DATA, TEST, Volume, load_volume

REGIONS = ("shell", "ring", "normal")


def through_grid(vol: Volume, spacing: float, how: str) -> float:
    """Whole-tumour Dice of the labels taken to ``spacing`` mm and back (``how``: vote/nearest)."""
    from napari_medseg.core.config import TrainConfig
    from napari_medseg.core.data import LabelMapping
    from napari_medseg.core.resample import resample_to_shape
    from napari_medseg.core.metrics import dice
    from napari_medseg.core.prepare import prepare_case

    mapping = LabelMapping.from_labels([vol.labels])
    case, prep = prepare_case(vol.channels, vol.labels, vol.spacing, mapping=mapping,
                              config=TrainConfig(spacing=(spacing,) * 3), name=vol.name)
    target = case.target
    if how == "nearest":
        classes = mapping.to_classes(vol.labels)[prep.crop]
        f = [n / m for n, m in zip(target.shape, prep.cropped_shape)]
        target = ndi.zoom(classes, f, order=0, grid_mode=True, mode="nearest")[
            tuple(slice(0, n) for n in target.shape)]
    onehot = np.stack([target == k for k in range(mapping.num_classes)]).astype(np.float32)
    up = resample_to_shape(onehot, prep.cropped_shape).argmax(0)
    full = np.zeros(vol.labels.shape, bool)
    full[prep.crop] = up > 0
    return float(dice(full, vol.labels > 0))


def normalised_flair(vol: Volume) -> dict[str, np.ndarray]:
    """FLAIR as the provider gave it, after our normalisation, after MONAI's."""
    from napari_medseg.core.prepare import prepare_input

    flair = vol.channels[0]
    prep = prepare_input(vol.channels, vol.spacing, method="percentile", target_spacing=None,
                         crop_foreground=True)
    ours = np.full(flair.shape, np.nan, np.float32)
    ours[prep.crop] = prep.image[0]
    nz = flair != 0  # NormalizeIntensity(nonzero=True): the constant outside the brain counts
    monai = (flair - flair[nz].mean()) / flair[nz].std()
    return {"provider": flair, "ours": ours, "monai": monai}


def regions(vol: Volume) -> dict[str, np.ndarray]:
    """Outer 2 mm of the whole tumour, 2 mm of brain outside it, brain over 10 mm away."""
    from napari_medseg.core import io

    brain = np.asarray(io.read_spatial(DATA / vol.name / "brainmask.nii.gz").data) > 0
    wt = vol.labels > 0
    sp = vol.spacing
    depth = ndi.distance_transform_edt(wt, sampling=sp)
    away = ndi.distance_transform_edt(~wt, sampling=sp)
    return {"shell": wt & (depth <= 2), "ring": ~wt & brain & (away <= 2),
            "normal": ~wt & brain & (away > 10)}


def describe_prediction(path: Path, test: Volume, flair: dict[str, np.ndarray]) -> str:
    """One line: Dice, volumes, precision/recall, where and what the missed voxels are."""
    from napari_medseg.core import io

    pred = np.rint(np.asarray(io.read_spatial(path).data)).astype(np.int16) > 0
    ref = test.labels > 0
    tp, fn, fp = (pred & ref).sum(), (ref & ~pred).sum(), (pred & ~ref).sum()
    missed = ref & ~pred
    depth = ndi.distance_transform_edt(ref, sampling=test.spacing)
    by_class = ", ".join(f"{k}: {(missed & (test.labels == k)).sum() / max(fn, 1):.0%}"
                         for k in (1, 2, 3, 4))
    levels = " ".join(f"{n} {np.nanmedian(v[missed]):.2f}" for n, v in flair.items())
    return (f"{path.name}: WT Dice {2 * tp / (2 * tp + fn + fp):.3f}, volume "
            f"{pred.sum() / ref.sum():.2f}x the reference, precision {tp / max(tp + fp, 1):.3f}, "
            f"recall {tp / (tp + fn):.3f}; missed {fn} voxels (by reference class {by_class}), "
            f"{(missed & (depth <= 3)).sum() / max(fn, 1):.0%} within 3 mm of the reference "
            f"boundary; their FLAIR median: {levels}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spacing", type=float, nargs="+", default=[2.0],
                   help="training spacings (mm) to take the labels through")
    p.add_argument("--pred", type=Path, nargs="*", default=[],
                   help="predicted label files of the test case (fewlabel_brats.py --save-pred)")
    p.add_argument("--test", choices=CASES, default=TEST, help="the case --pred predicts")
    args = p.parse_args(argv)
    if not all((DATA / n / "labels.nii.gz").exists() for n in CASES):
        print(f"BraTS 2013 data not found at {DATA}; this diagnostic reads ../shared/data in "
              "place and cannot run without it.", file=sys.stderr)
        return 2

    print("labels through the training grid and back: whole-tumour Dice (vote / nearest)")
    vols = {n: load_volume(n) for n in CASES}
    for n, vol in vols.items():
        cells = [f"{sp:g} mm {through_grid(vol, sp, 'vote'):.3f} / "
                 f"{through_grid(vol, sp, 'nearest'):.3f}" for sp in args.spacing]
        print(f"  {n}{' (test)' if n == args.test else ''}: " + "; ".join(cells))

    print("median FLAIR where each annotator drew the whole tumour's boundary "
          "(shell: its outer 2 mm; ring: 2 mm of brain outside; normal: brain > 10 mm away)")
    flair_test: dict[str, np.ndarray] = {}
    for n, vol in vols.items():
        flair = normalised_flair(vol)
        masks = regions(vol)
        cells = [f"{scale}: " + " ".join(f"{r} {np.nanmedian(v[masks[r]]):5.2f}" for r in REGIONS)
                 for scale, v in flair.items()]
        print(f"  {n}{' (test)' if n == args.test else ''}: " + " | ".join(cells))
        if n == args.test:
            flair_test = flair
    for path in args.pred:
        print("  " + describe_prediction(path, vols[args.test], flair_test))
    return 0


if __name__ == "__main__":
    sys.exit(main())
