"""Segmentation commands: ``train`` (``--task segment``) and ``evaluate``.

``predict`` lives in :mod:`napari_medseg.cli.predict`.

``train --task restore`` and ``evaluate --task restore`` hand over to
:mod:`napari_medseg.cli.restore`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_medseg.cli.common import (
    CliError,
    _evaluate_axis,
    _load_model,
    _print_event,
    _read_channels,
    _read_pred_ref,
)
from napari_medseg.cli.restore import cmd_evaluate_restore, cmd_train_restore
from napari_medseg.core import io


SEG_LOSS_NAMES = ("dice_ce", "dice_ce_fg", "dice", "ce", "bce")  # config.SEG_LOSSES


def cmd_train(args: argparse.Namespace) -> int:
    if args.val_fraction and len(args.image or []) < 2:
        raise CliError("--val-fraction holds out whole cases to validate on; it needs two "
                       "--image cases or more (with one, training validates on its labelled "
                       "voxels: leave --val-fraction out).")
    if args.task == "restore":
        return cmd_train_restore(args)
    for flag in ("target", "degrade", "mode", "perceptual_model"):
        if getattr(args, flag):
            raise CliError(f"--{flag.replace('_', '-')} is for restoration; add --task restore.")
    if args.loss is not None and args.loss not in SEG_LOSS_NAMES:
        raise CliError(f"--loss {args.loss!r} is not a segmentation loss "
                       f"({', '.join(SEG_LOSS_NAMES)}); restoration losses such as 'l1+ssim' "
                       "need --task restore.")
    args.lr = 2e-3 if args.lr is None else args.lr
    args.slice_axis = 2 if args.slice_axis is None else args.slice_axis
    from napari_medseg.cli.train_input import prepare_cases, rater_summary, read_label_groups
    from napari_medseg.core.config import ModelConfig, TrainConfig
    from napari_medseg.core.data import LabelMapping, fingerprint, training_classes_problem
    from napari_medseg.core.engine import fit, run

    images: list[list[str]] = args.image or []
    labels: list[list[str]] = args.label or []
    if not images or len(images) != len(labels):
        raise CliError(f"Give one --label per --image group (got {len(images)} --image and "
                       f"{len(labels)} --label); e.g. --image flair1.nii.gz t1c1.nii.gz --label "
                       "lab1.nii.gz --image flair2.nii.gz t1c2.nii.gz --label lab2.nii.gz. "
                       "Several raters of one image go in one group: --label r1.nii.gz r2.nii.gz")
    n_ch = {len(g) for g in images}
    if len(n_ch) != 1:
        raise CliError(f"Every case needs the same number of channels; got {sorted(n_ch)}.")
    vols = [_read_channels(g) for g in images]
    nd = vols[0][0].data.ndim
    dims = args.dims or (3 if nd == 3 else 2)
    if dims > nd:
        raise CliError(f"--dims 3 needs 3D images; {vols[0][0].path} is {nd}D. Use --dims 2.")
    groups = read_label_groups(vols, labels, args.label_mask or [])
    mapping = LabelMapping.from_labels([lv.data for g in groups for lv in g])
    if training_classes_problem(mapping.values):
        for lv in (lv for g in groups for lv in g):  # name the file that has them
            problem = training_classes_problem(np.unique(lv.data).tolist())
            if problem:
                raise CliError(f"{lv.path} {problem}")
        raise CliError(f"The label files together {training_classes_problem(mapping.values)}")
    if args.loss == "bce" and mapping.num_classes != 2:
        raise CliError(f"--loss bce needs one foreground value; labels have "
                       f"{list(mapping.values)}.")
    chosen: list[str] = []  # the defaults taken from the data, to print
    several = mapping.num_classes > 2
    if args.loss is None:
        args.loss = "dice_ce_fg" if several else "dice_ce"
        chosen.append(f"loss {args.loss}")
    if args.decision is None:
        args.decision = "foreground" if several else "argmax"
        chosen.append(f"decision {args.decision}")
    if several and chosen:
        chosen[-1] += (f" ({mapping.num_classes - 1} foreground values, learnt and decided as "
                       "parts of one structure; --loss dice_ce --decision argmax treats them "
                       "apart)")
    spacing, patch = _spacing_and_patch(args, vols, dims, chosen)
    limits: dict[str, float | int | None] = {"epochs": args.epochs, "minutes": args.minutes}
    if args.epochs is None and args.minutes is None:
        del limits["epochs"]  # TrainConfig's default number of epochs
        chosen.append(f"{TrainConfig.epochs} epochs of {args.steps_per_epoch} steps (no "
                      "--epochs or --minutes)")
    batch = args.batch_size if args.batch_size is not None else (2 if dims == 3 else 8)
    tc = TrainConfig(patch_size=patch, batch_size=batch,
                     loss=args.loss, **limits, steps_per_epoch=args.steps_per_epoch, seed=args.seed,
                     device=args.device, lr=args.lr, spacing=spacing, slice_axis=args.slice_axis,
                     val_fraction=args.val_fraction, decision=args.decision, raters=args.raters,
                     intensity_norm=args.norm, threshold=args.threshold,
                     intensity_jitter=args.intensity_jitter, scale_jitter=args.scale_jitter)
    out_ch = 1 if args.loss == "bce" else mapping.num_classes
    mc = ModelConfig(arch=args.arch, spatial_dims=dims, in_channels=len(images[0]),
                     out_channels=out_ch, base_width=args.width, depth=args.depth)
    cases, norms = prepare_cases(vols, groups, mapping=mapping, config=tc)
    fps = [fingerprint(v.data) for g in vols for v in g]
    # Under torchrun only rank 0 reports (each rank would print the same lines).
    main_rank = os.environ.get("RANK", "0") == "0"
    if main_rank:
        print(f"{len(cases)} case(s), {mc.in_channels} channel(s), label values "
              f"{list(mapping.values)}, {dims}D {args.arch}, patch {patch}", flush=True)
        if chosen:
            print("from the data: " + "; ".join(chosen), flush=True)
        summary = rater_summary(groups, tc.raters)
        if summary:
            print(summary, flush=True)
    before = Path(args.out).stat().st_mtime_ns if Path(args.out).exists() else None
    training = fit(cases, model_config=mc, train_config=tc, mapping=mapping, norms=norms,
                   checkpoint_path=args.out, channel_names=[Path(p).name for p in images[0]],
                   fingerprints=fps)
    try:
        res = run(training, _print_event if main_rank else None)
    except KeyboardInterrupt:
        # Ctrl-C inside a training step: the loop wrote the best weights so far (or the
        # current ones before any validation) to --out on its way out. Between steps (here,
        # printing): closing the paused generator does the same.
        training.close()
        if main_rank:
            now = Path(args.out).stat().st_mtime_ns if Path(args.out).exists() else None
            print(f"interrupted: {args.out} holds this run's best model so far" if now != before
                  else f"interrupted before the first validation: {args.out} left as it was",
                  file=sys.stderr)
        raise
    if not main_rank:
        return 0
    best = "n/a" if res.best_dice is None else f"{res.best_dice:.3f}"
    print(f"saved {args.out} ({res.steps} steps, best validation dice {best})")
    return 0


def _spacing_and_patch(args: argparse.Namespace, vols: Sequence[Sequence[io.Volume]], dims: int,
                       chosen: list[str]) -> tuple[tuple[float, ...] | None, tuple[int, ...]]:
    """``--spacing`` (numbers, ``native`` or ``auto``) and ``--patch``, defaults filled in.

    ``auto`` (the 3D default) is :func:`~napari_medseg.core.plan.auto_spacing` for the
    patch; a default patch then fits the first case's body at the training spacing. The
    body is that of each case's first channel (skull-stripped or not, it holds the
    anatomy). What was filled in is appended to ``chosen``.
    """
    from napari_medseg.core.plan import (
        PATCH_2D,
        PATCH_3D,
        PATCH_MULTIPLE,
        auto_spacing,
        body_extent_mm,
        default_patch,
    )

    nd = vols[0][0].data.ndim
    words = [str(w) for w in args.spacing] if args.spacing else [
        "auto" if dims == 3 and nd == 3 else "native"]
    spacing: tuple[float, ...] | None = None
    patch = tuple(args.patch) * (dims if len(args.patch) == 1 else 1) if args.patch else None
    if patch is not None and len(patch) != dims:
        raise CliError(f"--patch {' '.join(map(str, args.patch))}: give one size or {dims} "
                       f"(one per axis of the {dims}D model).")
    # Only auto spacing and a default patch need the bodies (a mask of every volume).
    extents = ([body_extent_mm(np.asarray(g[0].data)[None], g[0].spacing) for g in vols]
               if words == ["auto"] or patch is None else [])
    if words == ["auto"]:
        if dims != 3 or nd != 3:
            raise CliError("--spacing auto is for 3D models on 3D images; give a size in mm or "
                           "'native'.")
        plan_patch = patch or (PATCH_3D,) * 3
        spacing = auto_spacing(extents, [g[0].spacing for g in vols], plan_patch)
        longest = float(np.median([max(e) for e in extents]))
        mm = "native" if spacing is None else "x".join(f"{s:g}" for s in spacing) + " mm"
        chosen.append(f"spacing {mm} (auto: the body's longest side is {longest:.0f} mm, "
                      f"a {max(plan_patch)}-voxel patch spans half of it"
                      + (" at the native size)" if spacing is None else ")"))
    elif words != ["native"]:
        try:
            spacing = tuple(float(w) for w in words)
        except ValueError:
            raise CliError(f"--spacing {' '.join(words)}: give sizes in mm (one value or one "
                           "per axis), 'native' or 'auto'.") from None
        if len(spacing) == 1:
            spacing = spacing * nd
        if len(spacing) != nd or min(spacing) <= 0:
            raise CliError(f"--spacing {' '.join(words)}: give one size in mm above 0 or {nd} "
                           f"(one per axis of the {nd}D images), 'native' or 'auto'.")
    if patch is None:
        grid = spacing or vols[0][0].spacing
        patch = default_patch(tuple(max(1, round(e / s)) for e, s in zip(extents[0], grid)),
                              dims, slice_axis=args.slice_axis,
                              cap=PATCH_3D if dims == 3 else PATCH_2D, multiple=PATCH_MULTIPLE)
        chosen.append(f"patch {'x'.join(map(str, patch))}")
    return spacing, patch


def _fmt_cell(v: float | None, width: int, digits: int = 3) -> str:
    if v is None or v != v:  # undefined (None or NaN): the class is in neither mask
        return f"{'-':>{width}}"
    return f"{v:{width}.{digits}f}"


def _evaluate_spacing(args: argparse.Namespace, ref: Any) -> tuple[float, ...]:
    """``--spacing`` (one value for every axis, or one per axis), else the reference's;
    says so when a PNG/TIFF reference leaves the pixel size unknown."""
    nd = ref.data.ndim
    if args.spacing:
        if len(args.spacing) not in (1, nd):
            raise CliError(f"--spacing takes one value or {nd} (one per axis of {ref.path}, "
                           f"shape {ref.data.shape}); got {len(args.spacing)}.")
        return tuple(float(s) for s in (args.spacing * nd if len(args.spacing) == 1
                                         else args.spacing))
    if not io.is_nifti(ref.path):
        print(f"note: {Path(ref.path).suffix.lstrip('.').upper()} files carry no pixel size: "
              "a pixel is taken as 1 mm, so distances and sizes are in pixels; pass --spacing "
              "to give it", file=sys.stderr)
    return tuple(ref.spacing)


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.task == "restore":
        if args.labels or args.model:
            raise CliError("--labels and --model name label values of a segmentation; leave "
                           "them out with --task restore.")
        if args.spacing:
            raise CliError("--spacing sets the voxel size of segmentation distances and "
                           "volumes; restoration metrics (PSNR, SSIM) do not use it.")
        return cmd_evaluate_restore(args)
    if args.data_range is not None:
        raise CliError("--data-range is for --task restore (PSNR/SSIM).")
    from napari_medseg.core.metrics import (
        evaluate_segmentation,
        per_slice_dice,
        segmentation_columns,
        segmentation_rows,
        size_unit,
        to_jsonable,
        volume_difference,
        worst_slice,
        write_csv,
    )

    pred, ref = _read_pred_ref(args, "predict")
    if not args.spacing and not np.allclose(pred.spacing, ref.spacing, rtol=1e-3):
        print(f"warning: spacings differ ({pred.spacing} vs {ref.spacing}); using the "
              "reference's", file=sys.stderr)
    axis = _evaluate_axis(args, ref)
    from napari_medseg.core.data import UNLABELLED, label_values_problem

    for vol, unlabelled in ((pred, False), (ref, True)):
        problem = label_values_problem(vol.data, allow_unlabelled=unlabelled)
        if problem:
            raise CliError(f"{vol.path} {problem}. evaluate compares label maps (whole numbers: "
                           "0 background, 1, 2, ... the classes); for images use --task "
                           "restore.")
    p = np.rint(pred.data).astype(np.int64)
    r = np.rint(ref.data).astype(np.int64)
    ignored = r == UNLABELLED
    if ignored.any():
        # Sparse references: what lies where nobody labelled counts for no class.
        print(f"{int(ignored.sum())} voxels of {args.ref} are unlabelled (-1) and not scored",
              file=sys.stderr)
        p, r = np.where(ignored, 0, p), np.where(ignored, 0, r)
    wanted: list[int] | None = None  # None: the values present
    if args.labels or args.model:
        named = set(args.labels or [])
        if args.model:
            ckpt = _load_model(args.model, "segment", "--model names a segmentation model, whose "
                               "label values evaluate reports.")
            named |= set(ckpt.mapping.values)
        present = set(np.unique(p).tolist()) | set(np.unique(r).tolist())
        wanted = sorted((named | present) - {0})
    spacing = _evaluate_spacing(args, ref)
    res = evaluate_segmentation(p, r, spacing=spacing, labels=wanted,
                                tolerance_mm=args.tolerance)
    labels = [int(k) for k in res["dice"]]
    sd = per_slice_dice(p, r, axis=axis, labels=labels) if axis is not None else None
    vd = sd.volume_difference(spacing) if sd is not None else \
        volume_difference(p, r, spacing=spacing, labels=labels)
    unit = size_unit(p.ndim)
    print(f"{'label':>6} {'dice':>7} {'hd95_mm':>9} {'nsd':>7} {'pred_' + unit:>10} "
          f"{'ref_' + unit:>10} {'diff_' + unit:>10}")
    if not res["dice"]:
        print("  no labels in either file: both are all background (nothing to score)")
    for k in res["dice"]:
        d, h, n = res["dice"][k], res["hd95_mm"][k], res["nsd"][k]
        if d is None:
            print(f"{k:>6}  absent in both prediction and reference")
            continue
        v = vd[int(k)]
        print(f"{k:>6} {d:7.3f} {h:9.2f} {n:7.3f} {v['pred_' + unit]:10.3f} "
              f"{v['ref_' + unit]:10.3f} {v['diff_' + unit]:+10.3f}")
    if sd is not None:
        dice_s = sd.dice
        shown = np.flatnonzero(sd.defined.any(axis=0))
        print(f"per-slice Dice along axis {axis} ({len(shown)} of {sd.n_slices} slices hold a "
              "label; '-': label in neither mask of the slice)")
        print(f"{'slice':>6} " + " ".join(f"{'dice_' + str(v):>8}" for v in sd.labels))
        for s in shown:
            print(f"{s:>6} " + " ".join(_fmt_cell(dice_s[k, s], 8) for k in range(len(labels))))
        for v in sd.labels:
            w = worst_slice(sd, label=v)
            if w is not None:
                print(f"worst slice for label {v}: {w} (Dice {dice_s[sd.row(v), w]:.3f})")
    if args.csv:
        write_csv(args.csv, segmentation_rows(res, volume_diff=vd, slices=sd),
                  segmentation_columns(unit))
        print(f"wrote {args.csv}")
    if args.json:
        res = dict(res)
        res["pred"], res["ref"] = str(args.pred), str(args.ref)
        res["spacing_mm"] = list(spacing)
        res["volume_difference"] = {str(k): v for k, v in vd.items()}
        if sd is not None:
            res["per_slice"] = {"axis": axis, "dice": {
                str(v): [None if x != x else float(x) for x in sd.dice[k]]
                for k, v in enumerate(sd.labels)}}
        Path(args.json).write_text(json.dumps(to_jsonable(res), indent=2))
        print(f"wrote {args.json}")
    return 0
