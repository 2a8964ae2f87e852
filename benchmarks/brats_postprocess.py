"""Score saved BraTS predictions with and without keeping the largest tumour component.

Nothing is trained. ``fewlabel_brats.py --test CASE --save-pred ROOT/CASE`` writes
each run's predicted label values for the held-out case as
``ROOT/CASE/<method>_seed<S>.nii.gz`` (ours: before any post-processing). This
script reads them and scores them as saved and after each clean-up of
``results/brats_postprocess_protocol.md``:
P1 :func:`~napari_medseg.core.postprocess.keep_largest_component`,
P2 :func:`~napari_medseg.core.postprocess.fill_holes`, and P1 then P2. It prints,
per run, the whole-tumour Dice and the tumour-class mean of each, the voxels each
clean-up changed, and per method the mean change over the cases given.

Usage::

    python benchmarks/brats_postprocess.py --root preds --cases pat0001 pat0002 pat0003
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fewlabel_brats import CASES, load_volume, score


VARIANTS = ("P1", "P2", "P1+P2")


def study(root: Path, cases: Sequence[str]) -> list[dict[str, object]]:
    """One row per saved run: Dice as saved and after each clean-up, and what it changed."""
    from napari_medseg.core import io
    from napari_medseg.core.postprocess import fill_holes, keep_largest_component

    rows: list[dict[str, object]] = []
    for case in cases:
        ref = load_volume(case).labels
        for f in sorted((root / case).glob("*_seed*.nii.gz")):
            if f.name.endswith("_prob.nii.gz"):
                continue
            method, seed = f.name[: -len(".nii.gz")].rsplit("_seed", 1)
            pred = np.rint(np.asarray(io.read_spatial(f).data)).astype(np.int16)
            p1 = keep_largest_component(pred)
            p2 = fill_holes(pred)
            p12 = fill_holes(p1.labels)
            row: dict[str, object] = {"case": case, "method": method, "seed": int(seed)}
            for name, lab, changed in (("raw", pred, 0), ("P1", p1.labels, p1.voxels),
                                       ("P2", p2.labels, p2.voxels),
                                       ("P1+P2", p12.labels, p1.voxels + p12.voxels)):
                wt, per = score(lab, ref)
                row[name] = {"wt": wt, "tm": _mean(per), "changed_voxels": changed}
            rows.append(row)
    return rows


def _mean(per: dict[int, float | None]) -> float:
    vals = [d for d in per.values() if d is not None]
    return float(np.mean(vals)) if vals else float("nan")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, required=True, help="folder with one folder per case")
    p.add_argument("--cases", nargs="+", choices=CASES, required=True)
    p.add_argument("--json", type=Path, help="write the rows here")
    args = p.parse_args(argv)
    rows = study(args.root, args.cases)
    if not rows:
        print(f"no saved predictions under {args.root}/<case>/", file=sys.stderr)
        return 2
    print(f"{'case':>8} {'method':>8} {'seed':>4} {'':>6} {'WT Dice':>8} {'tumour mean':>11} "
          f"{'changed voxels':>14}")
    for r in rows:
        for name in ("raw", *VARIANTS):
            v: Any = r[name]
            print(f"{r['case']:>8} {r['method']:>8} {r['seed']:>4} {name:>6} {v['wt']:8.4f} "
                  f"{v['tm']:11.4f} {v['changed_voxels']:>14}")
    for method in sorted({str(r["method"]) for r in rows}):
        sel: list[Any] = [r for r in rows if r["method"] == method]
        raw = np.array([r["raw"]["wt"] for r in sel])
        for name in VARIANTS:
            d = np.array([r[name]["wt"] for r in sel]) - raw
            print(f"{method} {name}: {len(sel)} runs, WT Dice {raw.mean():.4f} -> "
                  f"{raw.mean() + d.mean():.4f} (change mean {d.mean():+.4f}, "
                  f"worst {d.min():+.4f}, best {d.max():+.4f})")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
