"""The ``raters`` command: agreement of several raters' label files and their consensus."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from napari_medseg.cli.common import CliError, all_or_nothing, placed_apart
from napari_medseg.core import io


def cmd_raters(args: argparse.Namespace) -> int:
    from napari_medseg.core.metrics import to_jsonable
    from napari_medseg.core.raters import (
        RaterVotes,
        majority_vote,
        rater_report,
        rater_scores,
        staple,
    )

    paths: list[str] = list(args.label or [])
    if not paths:
        raise CliError("Give at least one rater's label file: --label R1.nii.gz R2.nii.gz ...")
    for target in (args.out, args.probabilities):
        if target and not io.is_supported(target):
            raise CliError(f"{target}: unsupported output type; use .nii.gz, .png or .tif.")
    if args.probabilities and args.probabilities.lower().endswith(".png"):
        raise CliError(f"{args.probabilities}: PNG stores integers only; write probabilities "
                       "as .tif or .nii.gz.")
    vols = [io.read_spatial(p) for p in paths]
    ref = vols[0]
    for v in vols:
        d = v.data
        if v.data.shape != ref.data.shape:
            raise CliError(f"{v.path} has shape {d.shape} but {ref.path} has {ref.data.shape}; "
                           "every rater must label the same image grid (resample the masks "
                           "onto one grid).")
        if d.dtype.kind == "f" and (not np.all(np.isfinite(d)) or np.any(d != np.rint(d))):
            raise CliError(f"{v.path}: holds non-integer values (dtype {d.dtype}); expected a "
                           "label mask. Threshold probability maps first.")
        if d.dtype.kind not in "biuf":
            raise CliError(f"{v.path}: dtype {d.dtype} is not a label mask.")
    if ref.data.ndim == 3 and str(args.out).lower().endswith(".png"):
        raise CliError(f"{args.out}: PNG holds 2D images; write a 3D consensus as .nii.gz or .tif.")
    for v in vols[1:]:
        if placed_apart(ref, v):  # voxels pair by index: raters elsewhere would seem to agree
            raise CliError(f"{v.path} and {ref.path} have the same shape but different "
                           "affines (orientation, voxel size or origin): they label different "
                           "places. Resample the masks onto one grid first.")
    names = [Path(p).name for p in paths]
    if len(set(names)) != len(names):
        names = [str(p) for p in paths]
    t0 = time.perf_counter()
    try:
        votes = RaterVotes.from_raters([v.data for v in vols], foreground=args.foreground)
    except ValueError as exc:
        raise CliError(f"{exc} (rater j is the j-th --label file, from 0)") from exc
    report = rater_report(votes, names=names, method=args.method, tie=args.tie,
                          max_iter=args.max_iter, tol=args.tolerance)
    if args.method == "staple":
        res = staple(votes, max_iter=args.max_iter, tol=args.tolerance)
        consensus, prob = res.consensus, res.probability
    else:
        consensus = majority_vote(votes, tie=args.tie)
        fr = votes.votes() / float(votes.n_raters)
        prob = votes.expand((fr[:, 1] if votes.binary else fr).astype(np.float32))
    elapsed = time.perf_counter() - t0

    n = votes.n_raters
    kind = "binary" if votes.binary else "multi-label"
    print(f"{n} rater(s), {votes.n_voxels} voxels, labels {report['labels']} ({kind}), "
          f"{votes.n_patterns} vote patterns")
    fk = report["fleiss_kappa"]
    print(f"disagreement on {100 * report['disagreement_fraction']:.2f}% of voxels; Fleiss' kappa "
          f"{'undefined' if fk is None else f'{fk:.3f}'}")
    off = [x for j, row in enumerate(report["pairwise_dice"]) for m, x in enumerate(row)
           if m > j and x is not None]
    if off:
        print(f"pairwise Dice {min(off):.3f}-{max(off):.3f} (mean {np.mean(off):.3f})")
    sens, spec = report["staple"]["sensitivity"], report["staple"]["specificity"]
    width = max(len(x) for x in names)
    print(f"{'rater':<{width}}  {'sens':>6} {'spec':>7} {'dice->consensus':>15}")
    if not votes.binary:
        print("(multi-label: sensitivity/specificity are means over the nonzero labels; per "
              "label in --json)")
    sens_j, spec_j = rater_scores(sens, spec, report["labels"])
    for j, nm in enumerate(names):
        s_j, p_j = float(sens_j[j]), float(spec_j[j])
        d_j = report["dice_to_consensus"][j]
        d_txt = "n/a" if d_j is None else f"{d_j:.3f}"
        print(f"{nm:<{width}}  {s_j:6.3f} {p_j:7.4f} {d_txt:>15}")
    st = report["staple"]
    state = "converged" if st["converged"] else "NOT converged: raise --max-iter"
    print(f"STAPLE: {st['iterations']} EM iterations ({state}); consensus by {args.method} "
          f"({elapsed:.2f}s)")
    for note in report["notes"]:
        print(f"note: {note}")
    with all_or_nothing([args.out, args.probabilities]) as tmp:  # never half an output set
        io.write_volume(tmp[args.out], consensus, ref.affine)
        if args.probabilities:
            if prob.ndim == ref.data.ndim + 1 and io.is_nifti(args.probabilities):
                prob = np.moveaxis(prob, 0, -1)  # NIfTI: labels along the 4th axis
                if prob.ndim == 3:  # a 2D image: X x Y x 1 x K, as predict writes it
                    prob = prob[:, :, None, :]
            io.write_volume(tmp[args.probabilities], prob, ref.affine)
    print(f"wrote {args.out}")
    if args.probabilities:
        what = "STAPLE posterior" if args.method == "staple" else "vote fraction"
        order = "" if votes.binary else f", label order {report['labels']}"
        print(f"wrote {args.probabilities} ({what}{order})")
    if args.json:
        report = dict(report)
        report["inputs"] = [str(p) for p in paths]
        report["out"] = str(args.out)
        Path(args.json).write_text(json.dumps(to_jsonable(report), indent=2, allow_nan=False))
        print(f"wrote {args.json}")
    return 0
