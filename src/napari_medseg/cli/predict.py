"""``napari-medseg predict``: segment an image with one trained model, or several at once.

Several ``--model`` files make an ensemble: each segments the image as it would
alone, and the labels are decided on the mean of their probabilities
(:func:`~napari_medseg.core.ensemble.segment_ensemble`).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

import numpy as np

from napari_medseg.cli.common import (
    CliError,
    _load_model,
    _progress_printer,
    _read_channels,
    all_or_nothing,
)
from napari_medseg.core import io


def cmd_predict(args: argparse.Namespace) -> int:
    from napari_medseg.core.engine import run
    from napari_medseg.core.ensemble import ensemble_problem, segment_ensemble

    paths = [args.model] if isinstance(args.model, str) else list(args.model)
    ckpts = [_load_model(p, "segment", "use `napari-medseg restore --model ... --image ... "
                         "--out ...` for restoration models.") for p in paths]
    problem = ensemble_problem(ckpts)
    if problem:
        raise CliError(f"--model {' '.join(paths)}: {problem}")
    ckpt = ckpts[0]  # the ensemble decides by its rule and threshold, and writes its classes
    # Refuse bad output names before the work, not after it.
    if not (io.is_nifti(args.out) or str(args.out).lower().endswith(io.RASTER_SUFFIXES)):
        raise CliError(f"--out {args.out}: unsupported output type; use .nii.gz, .png or .tif.")
    if args.probabilities and not io.is_nifti(args.probabilities):
        raise CliError(f"--probabilities {args.probabilities}: write probabilities as NIfTI "
                       "(.nii.gz), one class per volume along the 4th axis.")
    dims = [c.model_config.spatial_dims for c in ckpts]
    if args.slice_axis is not None and 2 not in dims:
        which = paths[0] if len(paths) == 1 else "every model"
        raise CliError(f"--slice-axis applies to 2D models on 3D volumes; {which} is a 3D "
                       "model, which segments the volume whole: leave --slice-axis out.")
    vols = _read_channels(args.image)
    for i, c in enumerate(ckpts):
        print(f"model{'' if len(ckpts) == 1 else f' {i + 1}'}: {c.describe()}", flush=True)
    if len(ckpts) > 1:
        print(f"ensemble of {len(ckpts)} models: labels from the mean of their probabilities, "
              "by model 1's decision rule and threshold", flush=True)
    for warning in _predict_option_warnings(args, num_classes=ckpt.model_config.out_channels,
                                            model_rule=ckpt.train_config.decision,
                                            image_dims=vols[0].data.ndim):
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    for c in ckpts:
        if c.model_config.spatial_dims == 2 and vols[0].data.ndim == 3:
            axis = c.train_config.slice_axis if args.slice_axis is None else args.slice_axis
            print(f"2D model on a 3D volume: slices along axis {axis} "
                  f"({vols[0].data.shape[axis]} slices)"
                  + ("" if args.slice_axis is not None or io.is_nifti(vols[0].path) else
                     "; TIFF/PNG stacks are stored Z,Y,X: --slice-axis 0 slices along Z"),
                  flush=True)
            break
    if args.tta:
        print(f"test-time augmentation: the mean of {2 ** max(dims)} "
              "mirrorings (--no-tta: one pass)", flush=True)
    t0 = time.perf_counter()
    show = _progress_printer()
    try:
        seg = run(segment_ensemble(ckpts, [v.data for v in vols], vols[0].spacing,
                                   device=args.device,
                                   channel_names=[str(v.path) for v in vols], tta=args.tta,
                                   decision=args.decision, threshold=args.threshold,
                                   slice_axis=args.slice_axis), show)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    if args.largest_component:
        from napari_medseg.core.postprocess import keep_largest_component

        pruned = keep_largest_component(seg.labels)
        seg = replace(seg, labels=pruned.labels)
        print(f"largest component kept: {pruned.regions} other region(s), "
              f"{pruned.voxels} voxel(s) set to background", flush=True)
    ref = vols[0]
    with all_or_nothing([args.out, args.probabilities]) as tmp:  # never half an output set
        io.write_volume(tmp[args.out], seg.labels, ref.affine, header=ref.header)
        if args.probabilities:
            probs = np.moveaxis(seg.probabilities, 0, -1)  # NIfTI: channels last (4th axis)
            if probs.ndim == 3:  # a 2D image: classes go on the 4th axis, not the 3rd
                probs = probs[:, :, None, :]
            io.write_nifti(tmp[args.probabilities], probs, ref.affine)
    print(f"wrote {args.out} (values {sorted(np.unique(seg.labels).tolist())}, "
          f"{time.perf_counter() - t0:.1f}s)")
    if args.probabilities:
        what = "" if len(ckpts) == 1 else f"the mean of {len(ckpts)} models, "
        print(f"wrote {args.probabilities} ({what}{seg.probabilities.shape[0]} channel(s), "
              f"class order "
              f"{list(ckpt.mapping.values) if seg.probabilities.shape[0] > 1 else ['foreground']})")
    return 0


def _predict_option_warnings(args: argparse.Namespace, *, num_classes: int, model_rule: str,
                             image_dims: int) -> list[str]:
    """What ``predict``'s options would silently leave unused, for a model with
    ``num_classes`` outputs trained with the decision ``model_rule``, on an image of
    ``image_dims`` dimensions."""
    from napari_medseg.core.decision import uses_threshold

    out: list[str] = []
    k = num_classes
    if args.slice_axis is not None and image_dims == 2:
        out.append(f"--slice-axis {args.slice_axis} is ignored: the image is 2D, a single "
                   "slice (the option picks how a 2D model slices a 3D volume).")
    if args.decision is not None and k <= 2:
        out.append(f"--decision {args.decision} changes nothing: the model has one foreground "
                   "class, and both rules label a voxel foreground where its probability "
                   "passes the threshold (--threshold).")
    rule = args.decision or model_rule
    if args.threshold is not None and not uses_threshold(k, rule):
        out.append(f"--threshold {args.threshold:g} is ignored: the model decides by argmax "
                   f"among its {k - 1} foreground classes; add --decision foreground to label "
                   "a voxel foreground where the foreground classes together pass the "
                   "threshold.")
    return out
