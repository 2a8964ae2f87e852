"""Command line: ``napari-medseg demo | train | predict | restore | evaluate | raters``.

The argparse parser (its commands and flags are a contract) and :func:`main`, which
runs one command and turns user errors into exit status 2 with a one-line reason. The
first line above is the ``--help`` description.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

from napari_medseg.cli.common import CliError, check_outputs
from napari_medseg.cli.demo import cmd_demo
from napari_medseg.cli.predict import cmd_predict
from napari_medseg.cli.raters import cmd_raters
from napari_medseg.cli.restore import cmd_restore
from napari_medseg.cli.segment import cmd_evaluate, cmd_train
from napari_medseg.core.config import INTENSITY_NORMS, P_SCALE, RATER_MODES, TrainConfig


def _number(kind: type, ok: Callable[[float], bool], want: str) -> Callable[[str], Any]:
    """An argparse type: ``kind(text)`` for which ``ok`` holds, else argparse names the flag
    and says what it expected (``want``)."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {want}, got {text}")
        return value
    return parse


#: Sizes, epochs, steps; seeds; a held-out fraction; a time limit (0, NaN or inf is a typo).
_count = _number(int, lambda v: v >= 1, "a whole number of 1 or more")
_seed = _number(int, lambda v: v >= 0, "a whole number of 0 or more")
_fraction = _number(float, lambda v: 0.0 <= v < 1.0, "a fraction from 0 up to (not including) 1")
_positive = _number(float, lambda v: math.isfinite(v) and v > 0, "a finite number above 0")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser (public: the commands and flags are a contract)."""
    p = argparse.ArgumentParser(prog="napari-medseg", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="open napari on sample data, or train+predict headless")
    d.add_argument("--headless", action="store_true", help="no viewer: train, predict, print Dice")
    d.add_argument("--seconds", type=_positive, default=20.0, help="training time (headless)")
    d.add_argument("--seed", type=_seed, default=0)
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("train", help="train a segmentation (or, with --task restore, a "
                       "restoration) model from image files",
                       epilog="several raters: napari-medseg train --image I1.nii.gz --label "
                       "R1a.nii.gz R1b.nii.gz R1c.nii.gz --image I2.nii.gz --label R2.nii.gz "
                       "--raters soft --out m.pt (a case may have one label file, another "
                       "several)")
    t.add_argument("--task", choices=("segment", "restore"), default="segment",
                   help="segment: --image/--label pairs; restore: denoising/restoration, see "
                   "--target, --degrade")
    t.add_argument("--image", nargs="+", action="append", metavar="C",
                   help="segment: channel files of one case (repeat --image/--label per case); "
                   "restore: noisy images, one file per case (clean ones with --degrade and no "
                   "--target)")
    t.add_argument("--target", nargs="+", action="append", metavar="CLEAN",
                   help="restore: clean target of each --image, in the same order (supervised "
                   "pairs)")
    t.add_argument("--degrade", metavar="SPEC", help="restore: degrade the (clean) images on the "
                   "fly, e.g. rician:0.05, blur:1.0+rician:0.05, poisson:100, kspace:2, slices:4")
    t.add_argument("--mode", choices=("pairs", "synthetic", "noise2void"),
                   help="restore: default pairs with --target, synthetic with --degrade, else "
                   "noise2void (self-supervised from the noisy images alone)")
    t.add_argument("--perceptual-model", metavar="MODEL.pt", help="restore: model whose encoder "
                   "gives the features of a 'perceptual' loss term (default: a random frozen "
                   "encoder)")
    t.add_argument("--label", action="append", nargs="+", metavar="L", help="label file of "
                   "that case, -1 marks unlabelled voxels; or several files, one per rater of "
                   "that image (see --raters), e.g. --label r1.nii.gz r2.nii.gz r3.nii.gz")
    t.add_argument("--label-mask", action="append", metavar="M", help="optional, one per "
                   "--label group: voxels where M is 0 are unlabelled (sparse annotation), for "
                   "every rater of the group")
    t.add_argument("--raters", choices=RATER_MODES, default="soft", help="segment: how cases "
                   "with several rater files train: soft (default) = learn each class's vote "
                   "fraction as a soft target, so the probabilities show the raters' "
                   "disagreement; sample = each patch takes one rater drawn at random; "
                   "majority = train on the plurality vote (a tie goes to the lower label "
                   "value). Raters abstain where their label is -1 or masked. Cases with one "
                   "label file train the same in every mode")
    t.add_argument("--val-fraction", type=_fraction, default=0.0, help="hold out this "
                   "fraction of the cases (at least one; needs two cases or more) to pick the "
                   "best model; default 0: validate on the training cases' labelled voxels")
    t.add_argument("--out", required=True, metavar="MODEL.pt", help="the model file to write "
                   "(the best weights so far, rewritten as training improves)")
    t.add_argument("--dims", type=int, choices=(2, 3), help="2D or 3D model (default: the "
                   "images' dimensions; 2 trains on slices of 3D volumes, see --slice-axis)")
    t.add_argument("--arch", choices=("unet", "encdec", "fcn"), default="unet")
    t.add_argument("--loss", metavar="LOSS", help="segment: dice_ce, dice_ce_fg "
                   "(plus a Dice of all foreground classes together: for parts of one structure, "
                   "e.g. tumour sub-regions; the default with several foreground values, "
                   "dice_ce with one), dice, ce, bce; "
                   "restore: a weighted sum of l1, mse, ssim, perceptual, adv, e.g. l1+ssim or "
                   "0.8*l1+0.2*ssim (default l1; mse for noise2void)")
    t.add_argument("--minutes", type=_positive, help="training time budget (the best model "
                   "so far is kept); with --epochs, whichever ends first")
    t.add_argument("--epochs", type=_count, help="epochs to train (default 10 without "
                   "--minutes)")
    t.add_argument("--steps-per-epoch", type=_count, default=50, help="optimiser steps per "
                   "epoch; validation follows each epoch")
    t.add_argument("--seed", type=_seed, default=0, help="seeds weights, patches and "
                   "augmentation: the same seed and --epochs give the same model")
    t.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto",
                   help="default: this machine's best (CUDA, then MPS, then CPU)")
    t.add_argument("--patch", type=_count, nargs="+", help="patch size (one value or one per "
                   "axis; segment default 48^3 in 3D, 128^2 in 2D, smaller for smaller images)")
    t.add_argument("--spacing", nargs="+", metavar="MM",
                   help="segment: train at this voxel size in mm (one value or one per axis; a "
                   "2D model resamples in plane only: each volume keeps its slice spacing); "
                   "'native' keeps each volume's grid; 'auto' (the 3D default; 2D: native) "
                   "takes the size at which the patch spans half of the body's longest side, "
                   "never finer than the native grid (e.g. 1.8 mm for a brain, 48^3 patch)")
    t.add_argument("--batch-size", type=_count, help="patches per step (default 2 in 3D, "
                   "8 in 2D)")
    t.add_argument("--width", type=_count, default=16, help="feature maps at the first level")
    t.add_argument("--depth", type=_count, default=4, help="resolution levels")
    t.add_argument("--lr", type=float, help="learning rate (segment 2e-3, restore 1e-3)")
    t.add_argument("--slice-axis", type=int, choices=(0, 1, 2), help="2D: axis to slice 3D "
                   "volumes along (segment: 2; restore: the axis of the coarsest spacing)")
    t.add_argument("--decision", choices=("argmax", "foreground"),
                   help="segment: how probabilities become labels (kept in the model): the most "
                   "probable class, or foreground first (foreground classes together > 0.5, "
                   "then the likeliest of them; the default with several foreground values)")
    t.add_argument("--threshold", type=float, default=0.5, help="segment: foreground "
                   "probability above which a voxel is foreground (decision foreground, and "
                   "bce), in (0, 1), kept in the model; lower outlines more generously")
    t.add_argument("--norm", choices=INTENSITY_NORMS, default="percentile",
                   help="segment: per-channel intensity normalisation inside the body (kept in "
                   "the model): z-score after clipping to the 0.5-99.5th percentiles, plain "
                   "z-score, median/IQR after the same clipping (a large bright lesion "
                   "compresses its own contrast less), or none for images already normalised "
                   "alike")
    t.add_argument("--intensity-jitter", type=_fraction, default=TrainConfig.intensity_jitter,
                   metavar="J", help="segment: augmentation scales each channel of each patch "
                   "by 1 +- J and shifts it by +- J (normalised units); wider for data from "
                   "several scanners or protocols (default %(default)s)")
    t.add_argument("--scale-jitter", type=_fraction, default=TrainConfig.scale_jitter,
                   metavar="Z", help=f"segment: augmentation zooms {P_SCALE:.0%}% of the "
                   "patches by a factor between 1/(1+Z) and 1+Z, for structures whose size "
                   "varies more than the training cases show (default %(default)s: no zoom)")
    t.set_defaults(func=cmd_train)

    r = sub.add_parser("predict", help="segment an image with a trained model")
    r.add_argument("--model", nargs="+", required=True, metavar="MODEL.pt", help="a trained "
                   "model; several (same labels and channels) make an ensemble: labels from "
                   "the mean of their probabilities")
    r.add_argument("--image", nargs="+", required=True, metavar="C")
    r.add_argument("--out", required=True, metavar="LABELS.nii.gz")
    r.add_argument("--probabilities", metavar="P.nii.gz")
    r.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto",
                   help="default: this machine's best (CUDA, then MPS, then CPU), wherever the "
                   "model was trained")
    r.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True,
                   help="average the probabilities over the mirrored inputs (8 passes in 3D, 4 "
                   "in 2D; on by default: +0.008 whole-tumour Dice over three BraTS folds); "
                   "--no-tta predicts once, that many times faster")
    r.add_argument("--decision", choices=("argmax", "foreground"), help="override the model's "
                   "rule for turning probabilities into labels")
    r.add_argument("--threshold", type=float, help="override the model's foreground threshold")
    r.add_argument("--slice-axis", type=int, choices=(0, 1, 2), help="a 2D model on a 3D "
                   "volume: slice along this axis instead of the model's (its training axis; "
                   "2 by default, axial in NIfTI); TIFF stacks are stored Z,Y,X: use 0")
    r.add_argument("--largest-component", action="store_true", help="keep only the largest "
                   "connected region of foreground (all labels together) and set the rest to "
                   "background: for a structure known to be one piece (a single tumour, one "
                   "organ); it deletes all but one of several lesions. The probabilities are "
                   "left as predicted")
    r.set_defaults(func=cmd_predict)

    e = sub.add_parser("evaluate", help="Dice, HD95 and NSD of a prediction against a reference "
                       "(--task restore: MAE, MSE, NMSE, PSNR, SSIM)")
    e.add_argument("--task", choices=("segment", "restore"), default="segment")
    e.add_argument("--pred", required=True)
    e.add_argument("--ref", required=True)
    e.add_argument("--data-range", type=float, help="restore: intensity range R of PSNR/SSIM "
                   "(default: the reference's max - min)")
    e.add_argument("--json", metavar="OUT.json")
    e.add_argument("--tolerance", type=float, default=1.0, help="NSD tolerance in mm")
    e.add_argument("--spacing", type=_positive, nargs="+", metavar="MM", help="pixel/voxel "
                   "size in mm (one value, or one per axis) for distances and sizes, instead of "
                   "the reference file's (PNG/TIFF carry none: 1 mm is assumed without this)")
    e.add_argument("--labels", type=int, nargs="+", metavar="V", help="label values to report "
                   "even when neither file holds them (reported as absent), besides those "
                   "present")
    e.add_argument("--model", metavar="MODEL.pt", help="report every label value this model "
                   "knows, as --labels")
    e.add_argument("--per-slice", action="store_true", help="also Dice of each label on every "
                   "slice (restore: MAE, MSE, PSNR per slice) and the worst slice")
    e.add_argument("--axis", type=int, default=None, metavar="N", help="array axis the slices "
                   "of --per-slice are taken along (default: the last for NIfTI, axial in RAS; the "
                   "first for TIFF/PNG stacks, stored Z,Y,X; a 2D image needs it)")
    e.add_argument("--csv", metavar="OUT.csv", help="write the volume table (and, with "
                   "--per-slice, one row per slice and label) as CSV")
    e.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("restore", help="restore (denoise) an image with a restoration model")
    s.add_argument("--model", required=True, metavar="MODEL.pt")
    s.add_argument("--image", nargs="+", required=True, metavar="C", help="the image (one file "
                   "per channel)")
    s.add_argument("--out", required=True, metavar="OUT.nii.gz", help="restored image, float32, "
                   "in the input's intensity units and on its grid")
    s.add_argument("--ref", metavar="CLEAN", help="optional clean reference: print PSNR/SSIM "
                   "of the input and of the output")
    s.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto",
                   help="default: this machine's best (CUDA, then MPS, then CPU)")
    s.add_argument("--overlap", type=float, help="sliding-window overlap (default: the model's)")
    s.add_argument("--batch-size", type=_count, default=4)
    s.set_defaults(func=cmd_restore)

    q = sub.add_parser("raters", help="agreement of several raters' labels and their consensus "
                       "(STAPLE or majority vote)")
    q.add_argument("--label", nargs="+", metavar="R", help="one label file per rater (NIfTI, "
                   "PNG or TIFF), all of one image grid")
    q.add_argument("--method", choices=("staple", "majority"), default="staple",
                   help="consensus written to --out (STAPLE statistics are reported either way)")
    q.add_argument("--out", required=True, metavar="CONSENSUS", help=".nii.gz (first input's "
                   "affine), .png or .tif")
    q.add_argument("--probabilities", metavar="P", help="float32 STAPLE posterior (majority: "
                   "vote fraction), .nii.gz or .tif; multi-label: one channel per label")
    q.add_argument("--json", metavar="STATS.json", help="pairwise Dice/kappa, Fleiss' kappa, "
                   "per-rater sensitivity/specificity, notes")
    q.add_argument("--foreground", type=int, help="fuse this label value against all others")
    q.add_argument("--tie", choices=("low", "high", "undecided"), default="low",
                   help="majority-vote ties: low = background wins, high = foreground wins, "
                   "undecided = largest label + 1")
    q.add_argument("--max-iter", type=int, default=1000, help="STAPLE EM iteration cap")
    q.add_argument("--tolerance", type=float, default=1e-7, help="STAPLE convergence tolerance")
    q.set_defaults(func=cmd_raters)
    return p


#: Flags naming files a command writes, and files it reads (checked against each other).
OUTPUT_FLAGS = ("out", "probabilities", "json", "csv")
INPUT_FLAGS = ("image", "label", "label_mask", "target", "model", "pred", "ref",
               "perceptual_model")


def _flat(value: object) -> list[str]:
    """A flag's paths: None, a path, or (nested) lists of paths from ``nargs``/``append``."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [p for v in value for p in _flat(v)]
    return [str(value)]


def _check_files(args: argparse.Namespace) -> None:
    """Every command: outputs writable, distinct, and never one of its inputs."""
    outputs = [(f"--{k.replace('_', '-')}", getattr(args, k, None)) for k in OUTPUT_FLAGS]
    inputs = [p for k in INPUT_FLAGS for p in _flat(getattr(args, k, None))]
    check_outputs(outputs, inputs)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for user errors, with a one-line reason)."""
    args = build_parser().parse_args(argv)
    try:
        _check_files(args)
        return int(args.func(args))
    except (CliError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a write that failed after all (disk full, permissions)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # core validation errors already say what to do
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
