"""Choose the foreground-first threshold on held-out folds, then score it on the test case.

Nothing is trained. ``fewlabel_brats.py --test CASE --save-pred DIR_CASE`` writes
ours' tumour probability (``1 - p(background)``) for the held-out case as
``DIR_CASE/ours_seed<S>_tumour_prob.nii.gz``. This script reads those maps for
the folds given with ``--choose`` and ``--score`` (a folder ``<root>/<case>``
per case), prints the whole-tumour Dice of every run at each threshold, picks
the threshold with the best mean Dice over the ``--choose`` runs only (ties go
to the larger threshold, nearer 0.5), and reports the ``--score`` runs at that
threshold next to 0.5.

Why below 0.5 can be right: Dice rewards recall and precision alike, and for
calibrated probabilities the Dice-optimal threshold is about half the
attainable Dice (Lipton et al., 2014), so ~0.45 for a Dice of 0.9. A network
trained with Dice + CE is not calibrated, hence the choice on data.

Usage::

    python benchmarks/brats_threshold.py --root preds --choose pat0001 pat0002 pat0003 \\
        --score pat0004
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fewlabel_brats import CASES, DATA, load_volume

THRESHOLDS = (0.30, 0.35, 0.40, 0.45, 0.50)


def dice_by_threshold(prob: np.ndarray, ref: np.ndarray,
                      thresholds: Sequence[float] = THRESHOLDS) -> list[float]:
    """Whole-tumour Dice of ``prob > t`` against the boolean ``ref`` for each ``t``."""
    from napari_medseg.core.metrics import dice

    return [float(dice(prob > t, ref) or 0.0) for t in thresholds]


def runs(root: Path, case: str) -> dict[str, list[float]]:
    """Dice per threshold of every saved run (``ours_seed<S>_tumour_prob``) of ``case``."""
    from napari_medseg.core import io

    ref = load_volume(case).labels > 0
    out = {}
    for f in sorted((root / case).glob("ours_seed*_tumour_prob.nii.gz")):
        prob = np.asarray(io.read_spatial(f).data)
        out[f.name.split("_tumour")[0]] = dice_by_threshold(prob, ref)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, required=True,
                   help="folder with one sub-folder per held-out case (its --save-pred DIR)")
    p.add_argument("--choose", nargs="+", choices=CASES, required=True)
    p.add_argument("--score", nargs="+", choices=CASES, required=True)
    p.add_argument("--json", type=Path, help="write every Dice and the choice here")
    args = p.parse_args(argv)
    if set(args.choose) & set(args.score):
        p.error("--choose and --score must not share a case: the choice must not see the score")
    if not all((DATA / n / "labels.nii.gz").exists() for n in CASES):
        print(f"BraTS 2013 data not found at {DATA}.", file=sys.stderr)
        return 2
    table = {c: runs(args.root, c) for c in (*args.choose, *args.score)}
    missing = [c for c, r in table.items() if not r]
    if missing:
        print(f"no ours_seed*_tumour_prob.nii.gz under {args.root}/<case> for {missing}",
              file=sys.stderr)
        return 2
    head = " ".join(f"{t:>6.2f}" for t in THRESHOLDS)
    print(f"whole-tumour Dice by threshold\n{'case / run':>28} {head}")
    for case, rs in table.items():
        role = "choose" if case in args.choose else "score"
        for run, d in rs.items():
            print(f"{case + ' ' + run + ' (' + role + ')':>28} " + " ".join(f"{x:6.3f}" for x in d))
    mean = np.mean([d for c in args.choose for d in table[c].values()], axis=0)
    best = max(range(len(THRESHOLDS)), key=lambda i: (round(float(mean[i]), 6), THRESHOLDS[i]))
    t = THRESHOLDS[best]
    i05 = THRESHOLDS.index(0.5)
    print(f"{'mean (choose)':>28} " + " ".join(f"{x:6.3f}" for x in mean))
    print(f"chosen on {', '.join(args.choose)}: threshold {t:.2f} "
          f"(mean {mean[best]:.4f} vs {mean[i05]:.4f} at 0.5)")
    scored = {c: {r: {"chosen": d[best], "0.5": d[i05]} for r, d in table[c].items()}
              for c in args.score}
    for c, rs in scored.items():
        at_t = [v["chosen"] for v in rs.values()]
        at_5 = [v["0.5"] for v in rs.values()]
        print(f"{c}: {np.mean(at_t):.3f} ± {np.std(at_t):.3f} at {t:.2f} vs "
              f"{np.mean(at_5):.3f} ± {np.std(at_5):.3f} at 0.5 ({len(at_t)} runs)")
    if args.json:
        args.json.write_text(json.dumps({
            "thresholds": list(THRESHOLDS), "choose": args.choose, "score": args.score,
            "dice": table, "chosen": t, "scored": scored}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
