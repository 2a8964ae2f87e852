"""Command line: ``napari-medseg demo | train | predict | restore | evaluate | raters``.

A thin argparse front over the core. It prints the engine's events; it never
imports napari or Qt (the demo's viewer is started through
:mod:`napari_medseg.gui.launch`, imported only when a display is there).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# OpenMP's default busy-wait spins threads between ops; on a shared 2-core machine that made
# a 2D training step 8x slower (4.0 s vs 0.52 s). Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from napari_medseg.core import io  # noqa: E402
from napari_medseg.core.config import RATER_MODES  # noqa: E402


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


SEG_LOSS_NAMES = ("dice_ce", "dice_ce_fg", "dice", "ce", "bce")  # config.SEG_LOSSES


# ---------------------------------------------------------------- train


def _default_patch(shape: Sequence[int], dims: int) -> tuple[int, ...]:
    """Largest power-of-two-friendly patch not bigger than the image (64^3 in 3D, 128^2 in 2D)."""
    target = 64 if dims == 3 else 128
    sizes = list(shape[-dims:]) if dims == 3 else sorted(shape, reverse=True)[:2]
    out = []
    for n in sizes:
        p = min(target, n)
        out.append(max(8, (p // 8) * 8) if n >= 8 else n)
    return tuple(out)


def _print_event(ev: Any, *, every: int = 25) -> None:
    from napari_medseg.core.events import EpochDone, Message, StepDone, Validated

    if isinstance(ev, StepDone) and ev.step % every == 0:
        eta = f", eta {ev.eta_s:.0f}s" if ev.eta_s is not None else ""
        print(f"  step {ev.step}: loss {ev.loss:.4f}{eta}", flush=True)
    elif isinstance(ev, EpochDone):
        print(f"epoch {ev.epoch}: loss {ev.loss:.4f} ({ev.elapsed_s:.0f}s)", flush=True)
    elif isinstance(ev, Validated):
        per = ", ".join(f"{k}: {'absent' if v is None else f'{v:.3f}'}" for k, v in ev.dice.items())
        print(f"  validation dice {ev.mean_dice:.3f} [{per}]{' *best*' if ev.best else ''}",
              flush=True)
    elif isinstance(ev, Message):
        print(ev.text, flush=True)


def cmd_train(args: argparse.Namespace) -> int:
    if args.task == "restore":
        return cmd_train_restore(args)
    for flag in ("target", "degrade", "mode", "perceptual_model"):
        if getattr(args, flag):
            raise CliError(f"--{flag.replace('_', '-')} is for restoration; add --task restore.")
    args.loss = args.loss or "dice_ce"
    if args.loss not in SEG_LOSS_NAMES:
        raise CliError(f"--loss {args.loss!r} is not a segmentation loss "
                       f"({', '.join(SEG_LOSS_NAMES)}); restoration losses such as 'l1+ssim' "
                       "need --task restore.")
    args.lr = 2e-3 if args.lr is None else args.lr
    args.slice_axis = 2 if args.slice_axis is None else args.slice_axis
    from napari_medseg.cli_train import prepare_cases, rater_summary, read_label_groups
    from napari_medseg.core.config import ModelConfig, TrainConfig
    from napari_medseg.core.data import LabelMapping, fingerprint
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
    vols = [[io.read_spatial(p) for p in g] for g in images]
    groups = read_label_groups(vols, labels, args.label_mask or [])
    nd = vols[0][0].data.ndim
    dims = args.dims or (3 if nd == 3 else 2)
    mapping = LabelMapping.from_labels([lv.data for g in groups for lv in g])
    if args.loss == "bce" and mapping.num_classes != 2:
        raise CliError(f"--loss bce needs one foreground value; labels have {list(mapping.values)}.")
    shape = vols[0][0].data.shape
    spacing = tuple(args.spacing) if args.spacing else None
    if spacing is not None and len(spacing) == 1:
        spacing = spacing * nd
    patch = tuple(args.patch) if args.patch else _default_patch(shape, dims)
    if len(patch) == 1:
        patch = patch * dims
    tc = TrainConfig(patch_size=patch, batch_size=args.batch_size or (2 if dims == 3 else 8),
                     loss=args.loss, epochs=args.epochs if args.epochs or not args.minutes else None,
                     minutes=args.minutes, steps_per_epoch=args.steps_per_epoch, seed=args.seed,
                     device=args.device, lr=args.lr, spacing=spacing, slice_axis=args.slice_axis,
                     val_fraction=args.val_fraction, decision=args.decision, raters=args.raters)
    out_ch = 1 if args.loss == "bce" else mapping.num_classes
    mc = ModelConfig(arch=args.arch, spatial_dims=dims, in_channels=len(images[0]),
                     out_channels=out_ch, base_width=args.width, depth=args.depth)
    cases = prepare_cases(vols, groups, mapping=mapping, config=tc)
    fps = [fingerprint(v.data) for g in vols for v in g]
    # Under torchrun only rank 0 reports (each rank would print the same lines).
    main_rank = os.environ.get("RANK", "0") == "0"
    if main_rank:
        print(f"{len(cases)} case(s), {mc.in_channels} channel(s), label values "
              f"{list(mapping.values)}, {dims}D {args.arch}, patch {patch}", flush=True)
        summary = rater_summary(groups, tc.raters)
        if summary:
            print(summary, flush=True)
    res = run(fit(cases, model_config=mc, train_config=tc, mapping=mapping,
                  checkpoint_path=args.out, channel_names=[Path(p).name for p in images[0]],
                  fingerprints=fps), _print_event if main_rank else None)
    if not main_rank:
        return 0
    best = "n/a" if res.best_dice is None else f"{res.best_dice:.3f}"
    print(f"saved {args.out} ({res.steps} steps, best validation dice {best})")
    return 0


def _load_model(path: str, task: str, other_task_hint: str) -> Any:
    """Load a checkpoint for ``task``; a missing, foreign or other-task file is a CliError."""
    from napari_medseg.core.checkpoint import load_checkpoint

    try:
        ckpt = load_checkpoint(path)
    except (ValueError, FileNotFoundError) as exc:
        raise CliError(str(exc)) from exc
    if ckpt.task != task:
        raise CliError(f"{path} is a {ckpt.task!r} model, not a {task!r} model; {other_task_hint}")
    return ckpt


def _read_channels(paths: Sequence[str]) -> list[Any]:
    """Read one image's channel files, which must share one grid."""
    vols = [io.read_spatial(p) for p in paths]
    for v in vols[1:]:
        if v.data.shape != vols[0].data.shape:
            raise CliError(f"{v.path} has shape {v.data.shape} but {vols[0].path} has "
                           f"{vols[0].data.shape}; all channels must share one grid.")
    return vols


# ---------------------------------------------------------------- predict


def cmd_predict(args: argparse.Namespace) -> int:
    from napari_medseg.core.engine import run
    from napari_medseg.core.pipeline import segment

    ckpt = _load_model(args.model, "segment",
                       "use `napari-medseg restore --model ... --image ... --out ...` for "
                       "restoration models.")
    vols = _read_channels(args.image)
    print(f"model: {ckpt.describe()}", flush=True)
    t0 = time.perf_counter()
    last = [0.0]

    def show(ev: Any) -> None:
        if time.perf_counter() - last[0] > 2 or ev.done == ev.total:
            last[0] = time.perf_counter()
            print(f"  {ev.stage} {ev.done}/{ev.total}", flush=True)

    try:
        seg = run(segment(ckpt, [v.data for v in vols], vols[0].spacing, device=args.device,
                          channel_names=[str(v.path) for v in vols], tta=args.tta,
                          decision=args.decision), show)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    ref = vols[0]
    io.write_volume(args.out, seg.labels, ref.affine, header=None)
    print(f"wrote {args.out} (values {sorted(np.unique(seg.labels).tolist())}, "
          f"{time.perf_counter() - t0:.1f}s)")
    if args.probabilities:
        probs = np.moveaxis(seg.probabilities, 0, -1)  # NIfTI: channels last (4th axis)
        io.write_nifti(args.probabilities, probs, ref.affine)
        print(f"wrote {args.probabilities} ({seg.probabilities.shape[0]} channel(s), class order "
              f"{list(ckpt.mapping.values) if seg.probabilities.shape[0] > 1 else ['foreground']})")
    return 0


# ---------------------------------------------------------------- evaluate


def _evaluate_axis(args: argparse.Namespace, ndim: int) -> int | None:
    """The slicing axis of ``--per-slice`` (default: the last axis), or None without it."""
    if args.axis is not None and not args.per_slice:
        raise CliError("--axis chooses the slicing axis of --per-slice; add --per-slice.")
    if not args.per_slice:
        return None
    if ndim < 2:
        raise CliError(f"--per-slice needs 2D or 3D images, got {ndim}D.")
    axis = ndim - 1 if args.axis is None else args.axis
    if not -ndim <= axis < ndim:
        raise CliError(f"--axis {args.axis} is out of range for {ndim}D images; pass "
                       f"0..{ndim - 1}.")
    return axis % ndim


def _fmt_cell(v: float | None, width: int, digits: int = 3) -> str:
    if v is None or v != v:  # undefined (None or NaN): the class is in neither mask
        return f"{'-':>{width}}"
    return f"{v:{width}.{digits}f}"


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.task == "restore":
        return cmd_evaluate_restore(args)
    if args.data_range is not None:
        raise CliError("--data-range is for --task restore (PSNR/SSIM).")
    from napari_medseg.core.metrics import (
        SEGMENTATION_COLUMNS,
        evaluate_segmentation,
        per_slice_dice,
        segmentation_rows,
        to_jsonable,
        volume_difference,
        worst_slice,
        write_csv,
    )

    pred, ref = _read_pred_ref(args, "predict")
    if not np.allclose(pred.spacing, ref.spacing, rtol=1e-3):
        print(f"warning: spacings differ ({pred.spacing} vs {ref.spacing}); using the "
              "reference's", file=sys.stderr)
    axis = _evaluate_axis(args, pred.data.ndim)
    p = np.rint(pred.data).astype(np.int64)
    r = np.rint(ref.data).astype(np.int64)
    res = evaluate_segmentation(p, r, spacing=ref.spacing, tolerance_mm=args.tolerance)
    labels = [int(k) for k in res["dice"]]
    sd = per_slice_dice(p, r, axis=axis, labels=labels) if axis is not None else None
    vd = sd.volume_difference(ref.spacing) if sd is not None else \
        volume_difference(p, r, spacing=ref.spacing, labels=labels)
    print(f"{'label':>6} {'dice':>7} {'hd95_mm':>9} {'nsd':>7} {'pred_ml':>10} {'ref_ml':>10} "
          f"{'diff_ml':>10}")
    for k in res["dice"]:
        d, h, n = res["dice"][k], res["hd95_mm"][k], res["nsd"][k]
        if d is None:
            print(f"{k:>6}  absent in both prediction and reference")
            continue
        v = vd[int(k)]
        print(f"{k:>6} {d:7.3f} {h:9.2f} {n:7.3f} {v['pred_ml']:10.3f} {v['ref_ml']:10.3f} "
              f"{v['diff_ml']:+10.3f}")
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
                  SEGMENTATION_COLUMNS)
        print(f"wrote {args.csv}")
    if args.json:
        res = dict(res)
        res["pred"], res["ref"] = str(args.pred), str(args.ref)
        res["spacing_mm"] = list(ref.spacing)
        res["volume_difference"] = {str(k): v for k, v in vd.items()}
        if sd is not None:
            res["per_slice"] = {"axis": axis, "dice": {
                str(v): [None if x != x else float(x) for x in sd.dice[k]]
                for k, v in enumerate(sd.labels)}}
        Path(args.json).write_text(json.dumps(to_jsonable(res), indent=2))
        print(f"wrote {args.json}")
    return 0


# ---------------------------------------------------------------- restoration


def _print_restore_event(ev: Any, *, every: int = 25) -> None:
    from napari_medseg.core.restoration import RestoreValidated

    if isinstance(ev, RestoreValidated):
        parts = []
        if ev.psnr is not None:
            gain = f" (input {ev.psnr_input:.2f})" if ev.psnr_input is not None else ""
            parts.append(f"PSNR {ev.psnr:.2f} dB{gain}, SSIM {ev.ssim:.4f}")
        if ev.loss is not None:
            parts.append(f"val loss {ev.loss:.4f}")
        print(f"  validation {', '.join(parts)}{' *best*' if ev.best else ''}", flush=True)
    else:
        _print_event(ev, every=every)


def cmd_train_restore(args: argparse.Namespace) -> int:
    from napari_medseg.core.data import fingerprint
    from napari_medseg.core.degrade import describe
    from napari_medseg.core.engine import run
    from napari_medseg.core.restoration import (
        RestoreConfig,
        fit_restoration,
        prepare_restore_case,
        restoration_model_config,
    )

    if args.label or args.label_mask:
        raise CliError("--label is for segmentation; restoration trains from --image (and "
                       "--target or --degrade).")
    if args.spacing:
        raise CliError("--spacing is not supported for restoration: it restores on the "
                       "image's own grid (resample the images first if needed).")
    images = [p for g in (args.image or []) for p in g]
    targets = [p for g in (args.target or []) for p in g]
    if not images:
        raise CliError("Give the images: --image NOISY1.nii.gz [NOISY2.nii.gz ...] (clean "
                       "images with --degrade).")
    mode = args.mode or ("pairs" if targets else "synthetic" if args.degrade else "noise2void")
    if mode == "pairs" and len(targets) != len(images):
        raise CliError(f"Give one --target per --image (got {len(images)} image(s) and "
                       f"{len(targets)} target(s)), in the same order.")
    if mode == "synthetic" and not args.degrade:
        raise CliError("--mode synthetic needs --degrade, e.g. --degrade rician:0.05.")
    if mode == "noise2void" and args.degrade:
        raise CliError("--degrade makes clean images noisy (synthetic mode); noise2void learns "
                       "from noisy images as they are. Drop one of them.")
    if targets and mode == "synthetic":
        raise CliError("With --degrade the --image files are the clean targets; drop --target "
                       "(or drop --degrade to train on the given pairs).")
    vols = [io.read_spatial(p) for p in images]
    tvols = [io.read_spatial(p) for p in targets]
    for v, t in zip(vols, tvols):
        if v.data.shape != t.data.shape:
            raise CliError(f"{v.path} has shape {v.data.shape} but {t.path} has {t.data.shape}; "
                           "register/resample the clean image onto the noisy one's grid.")
    nd = vols[0].data.ndim
    for v in vols[1:]:
        if v.data.ndim != nd:
            raise CliError(f"{v.path} is {v.data.ndim}D but {vols[0].path} is {nd}D; train on "
                           "images of one dimensionality.")
    dims = args.dims or 2
    if dims == 3 and nd == 2:
        raise CliError("A 3D model cannot train on 2D images; use --dims 2.")
    sp = vols[0].spacing
    slice_axis = args.slice_axis
    if slice_axis is None:
        slice_axis = int(np.argmax(sp)) if nd == 3 and max(sp) > 1.5 * min(sp) else 2
    if args.patch:
        patch = tuple(args.patch) * (dims if len(args.patch) == 1 else 1)
    elif dims == 2:
        inplane = [n for a, n in enumerate(vols[0].data.shape) if nd == 2 or a != slice_axis]
        patch = tuple(min(64, max(8, (n // 8) * 8)) if n >= 8 else n for n in inplane)
    else:
        patch = tuple(min(32, max(8, (n // 8) * 8)) if n >= 8 else n for n in vols[0].data.shape)
    loss = args.loss or ("mse" if mode == "noise2void" else "l1")
    try:
        rc = RestoreConfig(mode=mode, degrade=args.degrade or "", loss=loss, patch_size=patch,
                           batch_size=args.batch_size or (8 if dims == 2 else 2),
                           lr=args.lr or 1e-3,
                           epochs=args.epochs or (None if args.minutes else 10),
                           minutes=args.minutes, steps_per_epoch=args.steps_per_epoch,
                           seed=args.seed, device=args.device, slice_axis=slice_axis,
                           val_fraction=args.val_fraction,
                           perceptual_checkpoint=args.perceptual_model)
        mc = restoration_model_config(spatial_dims=dims, in_channels=1, base_width=args.width,
                                      depth=args.depth, mode=mode, arch=args.arch)
        cases = []
        for i, v in enumerate(vols):
            t = tvols[i].data if tvols else None
            cases.append(prepare_restore_case(np.asarray(v.data, np.float32), mode=mode,
                                              target=t, degrade=rc.degrade, spacing=v.spacing,
                                              seed=args.seed + i, name=str(v.path)))
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    what = {"pairs": "supervised from noisy/clean pairs",
            "synthetic": f"supervised from clean images degraded on the fly: "
                         f"{describe(rc.degrade, scale=cases[0].scale)}",
            "noise2void": "self-supervised (Noise2Void blind-spot masking) from the noisy images"}
    print(f"{len(cases)} image(s), {dims}D UNet (residual head: {mc.residual}), patch {patch}"
          + (f", slices along axis {slice_axis}" if dims == 2 and nd == 3 else "")
          + f", loss {rc.loss}; {what[mode]}", flush=True)
    fps = [fingerprint(np.asarray(v.data)) for v in vols + tvols]
    res = run(fit_restoration(cases, model_config=mc, config=rc, checkpoint_path=args.out,
                              channel_names=[Path(images[0]).name], fingerprints=fps),
              _print_restore_event)
    best = "n/a" if res.best_psnr is None else f"{res.best_psnr:.2f} dB"
    print(f"saved {args.out} ({res.steps} steps, best validation PSNR {best})")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from napari_medseg.core.engine import run
    from napari_medseg.core.metrics import psnr, ssim
    from napari_medseg.core.restoration import restore

    ckpt = _load_model(args.model, "restore", "use `napari-medseg predict` for segmentation.")
    if not io.is_supported(args.out) or str(args.out).lower().endswith(".png"):
        raise CliError(f"{args.out}: unsupported output type for a float image; use .nii.gz "
                       "or .tif.")
    vols = _read_channels(args.image)
    n_in = ckpt.model_config.in_channels
    if len(vols) != n_in:
        raise CliError(f"The model restores {n_in}-channel images; got {len(vols)} file(s).")
    mc = ckpt.model_config
    mode = ckpt.extra.get("restore", {}).get("mode", "?")
    print(f"model: {mc.spatial_dims}D {mc.arch} restoration ({mode})", flush=True)
    t0 = time.perf_counter()
    last = [0.0]

    def show(ev: Any) -> None:
        if time.perf_counter() - last[0] > 2 or ev.done == ev.total:
            last[0] = time.perf_counter()
            print(f"  {ev.stage} {ev.done}/{ev.total}", flush=True)

    data = [np.asarray(v.data, np.float32) for v in vols]
    try:
        out = run(restore(ckpt, data[0] if n_in == 1 else data, device=args.device,
                          overlap=args.overlap, batch_size=args.batch_size), show)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    ref = vols[0]
    if n_in > 1 and io.is_nifti(args.out):
        out = np.moveaxis(out, 0, -1)
    io.write_volume(args.out, out.astype(np.float32), ref.affine)
    print(f"wrote {args.out} (float32, {time.perf_counter() - t0:.1f}s)")
    if args.ref:
        clean = io.read_spatial(args.ref).data.astype(np.float32)
        if clean.shape != data[0].shape or n_in != 1:
            raise CliError(f"{args.ref} has shape {clean.shape}; expected {data[0].shape} (one "
                           "channel).")
        dr = float(clean.max() - clean.min()) or 1.0
        for name, img in (("input", data[0]), ("restored", out)):
            print(f"{name:>9}: PSNR {psnr(img, clean, data_range=dr):.2f} dB, SSIM "
                  f"{ssim(img, clean, data_range=dr):.4f} (data range {dr:g})")
    return 0


def _read_pred_ref(args: argparse.Namespace, verb: str) -> tuple[Any, Any]:
    """Read ``--pred`` and ``--ref``, which must share one grid (``verb``: how to fix it)."""
    pred, ref = io.read_spatial(args.pred), io.read_spatial(args.ref)
    if pred.data.shape != ref.data.shape:
        raise CliError(f"{args.pred} has shape {pred.data.shape} but {args.ref} has "
                       f"{ref.data.shape}; {verb} on the reference's grid.")
    return pred, ref


def cmd_evaluate_restore(args: argparse.Namespace) -> int:
    from napari_medseg.core.metrics import (
        RESTORATION_COLUMNS,
        evaluate_restoration,
        per_slice_errors,
        restoration_rows,
        to_jsonable,
        write_csv,
    )

    pred, ref = _read_pred_ref(args, "restore")
    axis = _evaluate_axis(args, pred.data.ndim)
    p = np.asarray(pred.data, np.float64)
    r = np.asarray(ref.data, np.float64)
    if args.data_range is not None and not args.data_range > 0:
        raise CliError(f"--data-range must be > 0, got {args.data_range}.")
    win = min(7, min(r.shape))
    win -= 1 - win % 2
    if win < 3:
        raise CliError(f"{args.ref}: shape {r.shape} is too small for SSIM (needs 3 voxels a "
                       "side).")
    res = evaluate_restoration(p, r, data_range=args.data_range, win_size=win)
    print(f"{'MAE':>8} {res['mae']:.6g}")
    print(f"{'MSE':>8} {res['mse']:.6g}")
    print(f"{'NMSE':>8} {res['nmse']:.6g}  (||pred-ref||^2 / ||ref||^2)")
    print(f"{'NMSE_var':>8} {res['nmse_variance']:.6g}  (MSE / Var(ref))")
    print(f"{'PSNR':>8} {res['psnr']:.4f} dB  (data range {res['data_range']:g})")
    print(f"{'SSIM':>8} {res['ssim']:.6f}  ({r.ndim}D, {win}-voxel window)")
    per = None
    if axis is not None:
        per = per_slice_errors(p, r, axis=axis, data_range=res["data_range"])
        print(f"per-slice errors along axis {axis} (PSNR with data range {res['data_range']:g})")
        print(f"{'slice':>6} {'mae':>12} {'mse':>12} {'psnr_db':>9}")
        for s_, (a, m, q) in enumerate(zip(per["mae"], per["mse"], per["psnr"])):
            print(f"{s_:>6} {a:12.6g} {m:12.6g} {q:9.3f}")
    if args.csv:
        write_csv(args.csv, restoration_rows(res, slices=per, axis=axis), RESTORATION_COLUMNS)
        print(f"wrote {args.csv}")
    if args.json:
        out = dict(res)
        out["pred"], out["ref"] = str(args.pred), str(args.ref)
        out["ssim_window"] = win
        if per is not None:
            out["per_slice"] = {"axis": axis, **{k: per[k] for k in ("mae", "mse", "psnr")}}
        Path(args.json).write_text(json.dumps(to_jsonable(out), indent=2))
        print(f"wrote {args.json}")
    return 0


# ---------------------------------------------------------------- raters


def cmd_raters(args: argparse.Namespace) -> int:
    from napari_medseg.core.metrics import to_jsonable
    from napari_medseg.core.raters import RaterVotes, majority_vote, rater_report, staple

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
        if io.is_nifti(str(v.path)) and not np.allclose(v.affine, ref.affine, atol=1e-3):
            print(f"warning: {v.path} has another affine than {ref.path}; using the first's",
                  file=sys.stderr)
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
        print("(multi-label: sensitivity/specificity are means over the labels; see --json)")
    for j, nm in enumerate(names):
        s_j = sens[j] if votes.binary else float(np.mean(sens[j]))
        p_j = spec[j] if votes.binary else float(np.mean(spec[j]))
        d_j = report["dice_to_consensus"][j]
        d_txt = "n/a" if d_j is None else f"{d_j:.3f}"
        print(f"{nm:<{width}}  {s_j:6.3f} {p_j:7.4f} {d_txt:>15}")
    st = report["staple"]
    state = "converged" if st["converged"] else "NOT converged: raise --max-iter"
    print(f"STAPLE: {st['iterations']} EM iterations ({state}); consensus by {args.method} "
          f"({elapsed:.2f}s)")
    for note in report["notes"]:
        print(f"note: {note}")
    io.write_volume(args.out, consensus, ref.affine)
    print(f"wrote {args.out}")
    if args.probabilities:
        if prob.ndim == ref.data.ndim + 1 and io.is_nifti(args.probabilities):
            prob = np.moveaxis(prob, 0, -1)  # NIfTI: labels along the 4th axis
        io.write_volume(args.probabilities, prob, ref.affine)
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


# ---------------------------------------------------------------- demo


def _has_display() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def run_headless_demo(seconds: float | None = 20.0, *, epochs: int | None = None, seed: int = 0
                      ) -> dict[int, float | None]:
    """Train on one generated phantom, segment another, return Dice per tissue label.

    ``seconds`` bounds the training time; ``epochs`` (25 steps each) bounds the
    work instead, for results that do not depend on the machine's speed.
    """
    from napari_medseg.core.config import ModelConfig, TrainConfig
    from napari_medseg.core.data import LabelMapping
    from napari_medseg.core.engine import fit, run
    from napari_medseg.core.metrics import dice_per_class
    from napari_medseg.core.pipeline import prepare_case, segment
    from napari_medseg.core.sample import PHANTOM_CLASSES, brain_phantom

    train, test = brain_phantom(seed=seed), brain_phantom(seed=seed + 1)
    mapping = LabelMapping.from_labels([train.labels])
    tc = TrainConfig(patch_size=(64, 64), batch_size=8, loss="dice_ce", epochs=epochs,
                     minutes=None if seconds is None else seconds / 60, steps_per_epoch=25,
                     seed=seed, lr=3e-3)
    mc = ModelConfig(spatial_dims=2, in_channels=2, out_channels=mapping.num_classes,
                     base_width=16, depth=4)
    case, _ = prepare_case([train.t1, train.flair], train.labels, train.spacing, mapping=mapping,
                           config=tc, name="phantom seed 0")
    limit = f"{seconds:.0f}s" if seconds is not None else f"{epochs} epochs"
    print(f"demo: training a 2D UNet on a generated brain phantom for {limit}", flush=True)
    res = run(fit([case], model_config=mc, train_config=tc, mapping=mapping,
                  channel_names=["T1", "FLAIR"]), _print_event)
    seg = run(segment(res.checkpoint, [test.t1, test.flair], test.spacing, model=res.model))
    dice = dice_per_class(seg.labels, test.labels, labels=[1, 2, 3, 4])
    print("Dice on an unseen phantom (seed %d):" % (seed + 1))
    for k, d in dice.items():
        print(f"  {PHANTOM_CLASSES[k]:>12}: {'absent' if d is None else f'{d:.3f}'}")
    vals = [d for d in dice.values() if d is not None]
    print(f"mean Dice {np.mean(vals):.3f}")
    return dice


def cmd_demo(args: argparse.Namespace) -> int:
    if not args.headless and _has_display():
        try:
            launch = importlib.import_module("napari_medseg.gui.launch")
        except ImportError as exc:
            print(f"napari/Qt unavailable ({exc}); running the headless demo.", flush=True)
        else:
            return int(launch.open_demo_viewer())
    run_headless_demo(args.seconds, seed=args.seed)
    return 0


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser (public: the commands and flags are a contract)."""
    p = argparse.ArgumentParser(prog="napari-medseg", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="open napari on sample data, or train+predict headless")
    d.add_argument("--headless", action="store_true", help="no viewer: train, predict, print Dice")
    d.add_argument("--seconds", type=float, default=20.0, help="training time (headless)")
    d.add_argument("--seed", type=int, default=0)
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
    t.add_argument("--val-fraction", type=float, default=0.0, help="hold out this fraction of "
                   "the cases (at least one) to pick the best model")
    t.add_argument("--out", required=True, metavar="MODEL.pt")
    t.add_argument("--dims", type=int, choices=(2, 3))
    t.add_argument("--arch", choices=("unet", "encdec", "fcn"), default="unet")
    t.add_argument("--loss", metavar="LOSS", help="segment: dice_ce (default), dice_ce_fg "
                   "(plus a Dice of all foreground classes together: for parts of one structure, "
                   "e.g. tumour sub-regions), dice, ce, bce; "
                   "restore: a weighted sum of l1, mse, ssim, perceptual, adv, e.g. l1+ssim or "
                   "0.8*l1+0.2*ssim (default l1; mse for noise2void)")
    t.add_argument("--minutes", type=float)
    t.add_argument("--epochs", type=int)
    t.add_argument("--steps-per-epoch", type=int, default=50)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    t.add_argument("--patch", type=int, nargs="+", help="patch size (one value or one per axis)")
    t.add_argument("--spacing", type=float, nargs="+", help="train at this voxel size in mm")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--width", type=int, default=16, help="feature maps at the first level")
    t.add_argument("--depth", type=int, default=4, help="resolution levels")
    t.add_argument("--lr", type=float, help="learning rate (segment 2e-3, restore 1e-3)")
    t.add_argument("--slice-axis", type=int, choices=(0, 1, 2), help="2D: axis to slice 3D "
                   "volumes along (segment: 2; restore: the axis of the coarsest spacing)")
    t.add_argument("--decision", choices=("argmax", "foreground"), default="argmax",
                   help="segment: how probabilities become labels (kept in the model): the most "
                   "probable class, or foreground first (foreground classes together > 0.5, "
                   "then the likeliest of them)")
    t.set_defaults(func=cmd_train)

    r = sub.add_parser("predict", help="segment an image with a trained model")
    r.add_argument("--model", required=True, metavar="MODEL.pt")
    r.add_argument("--image", nargs="+", required=True, metavar="C")
    r.add_argument("--out", required=True, metavar="LABELS.nii.gz")
    r.add_argument("--probabilities", metavar="P.nii.gz")
    r.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default=None)
    r.add_argument("--tta", action="store_true", help="average over mirrored inputs")
    r.add_argument("--decision", choices=("argmax", "foreground"), help="override the model's "
                   "rule for turning probabilities into labels")
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
    e.add_argument("--per-slice", action="store_true", help="also Dice of each label on every "
                   "slice (restore: MAE, MSE, PSNR per slice) and the worst slice")
    e.add_argument("--axis", type=int, default=None, metavar="N", help="array axis the slices "
                   "of --per-slice are taken along (default: the last, axial in RAS NIfTI)")
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
    s.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default=None)
    s.add_argument("--overlap", type=float, help="sliding-window overlap (default: the model's)")
    s.add_argument("--batch-size", type=int, default=4)
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for user errors, with a one-line reason)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (CliError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # core validation errors already say what to do
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
