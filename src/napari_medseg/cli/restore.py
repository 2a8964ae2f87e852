"""Restoration commands: ``train --task restore``, ``restore`` and ``evaluate --task restore``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from napari_medseg.cli.common import (
    CliError,
    _evaluate_axis,
    _load_model,
    _print_event,
    _progress_printer,
    _read_channels,
    _read_pred_ref,
    warn_if_placed_apart,
)
from napari_medseg.core import io
from napari_medseg.core.plan import restoration_slice_axis


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
    if targets and len(targets) != len(images):
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
        warn_if_placed_apart(v, t)
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
        slice_axis = (restoration_slice_axis(sp) if nd == 3 else None)
        slice_axis = 2 if slice_axis is None else slice_axis
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
    from napari_medseg.core.metrics import psnr
    from napari_medseg.core.restoration import RestoreConfig, restore
    from napari_medseg.core.restoration.train import restoration_ssim, restoration_ssim_kind

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
    show = _progress_printer()
    data = [np.asarray(v.data, np.float32) for v in vols]
    clean = None
    if args.ref:  # checked before restoring: a bad reference must not cost the inference
        cvol = io.read_spatial(args.ref)
        clean = np.asarray(cvol.data, np.float32)
        if clean.shape != data[0].shape or n_in != 1:
            raise CliError(f"{args.ref} has shape {clean.shape}; expected {data[0].shape} (one "
                           "channel).")
        if not np.all(np.isfinite(clean)):
            raise CliError(f"{args.ref} holds NaN/inf values; a reference must be finite.")
        warn_if_placed_apart(vols[0], cvol)
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
    if clean is not None:
        dr = float(clean.max() - clean.min()) or 1.0
        axis = RestoreConfig.from_dict(ckpt.extra.get("restore", {})).slice_axis
        kind = restoration_ssim_kind(mc.spatial_dims, clean.ndim, axis)
        for name, img in (("input", data[0]), ("restored", out)):
            # SSIM as training validation measures it: per slice for a 2D model on a volume
            s = restoration_ssim(img[None], clean[None], dr, mc.spatial_dims, axis)
            print(f"{name:>9}: PSNR {psnr(img, clean, data_range=dr):.2f} dB, SSIM "
                  f"{s:.4f} ({kind}; data range {dr:g})")
        if kind != f"{clean.ndim}D":
            print(f"  (evaluate --task restore measures SSIM in {clean.ndim}D, over the whole "
                  "volume)")
    return 0


def cmd_evaluate_restore(args: argparse.Namespace) -> int:
    from napari_medseg.core.metrics import (
        RESTORATION_COLUMNS,
        evaluate_restoration,
        per_slice_errors,
        restoration_rows,
        ssim_window,
        to_jsonable,
        write_csv,
    )

    pred, ref = _read_pred_ref(args, "restore")
    axis = _evaluate_axis(args, ref)
    p = np.asarray(pred.data, np.float64)
    r = np.asarray(ref.data, np.float64)
    for vol, arr in ((pred, p), (ref, r)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        if bad:
            raise CliError(f"{vol.path} holds {bad} NaN/inf voxel(s): every metric would be "
                           "NaN. Fill them (or crop them away) first.")
    if args.data_range is not None and not args.data_range > 0:
        raise CliError(f"--data-range must be > 0, got {args.data_range}.")
    win = ssim_window(r.shape)
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
