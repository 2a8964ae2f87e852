"""From a checkpoint and user arrays to a segmentation in the input's grid.

:func:`segment` prepares the image as in training (:mod:`napari_medseg.core.prepare`),
runs the model (sliding window, optional mirroring), resamples the probabilities
back and decides the labels; :func:`labelled` is that last step alone, shared
with ensembles.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from napari_medseg.core.checkpoint import Checkpoint
from napari_medseg.core.data import LabelMapping
from napari_medseg.core.decision import check_rule, check_threshold, decide
from napari_medseg.core.events import Progress
from napari_medseg.core.inference.region import (
    check_region,
    interpolate_axis,
    region_context,
    region_slab,
)
from napari_medseg.core.prepare import image_spacing_of, model_spacing, prepare_input
from napari_medseg.core.resample import resample_to_shape

@dataclass(frozen=True)
class Segmentation:
    """A prediction in the input's grid.

    Attributes
    ----------
    labels : np.ndarray
        Label values as in the training labels (e.g. 0, 1, 2, 4).
    probabilities : np.ndarray
        (K, *spatial) float32 class probabilities (K == 1: foreground).
    entropy : np.ndarray
        Predictive entropy (nats) per voxel.
    """

    labels: np.ndarray
    probabilities: np.ndarray
    entropy: np.ndarray


def trained_on_volumes(ckpt: Checkpoint) -> bool | None:
    """Whether a 2D model learnt from slices of 3D volumes (its ``slice_axis`` then means
    something), from 2D images (True / False), or None where the checkpoint does not say.

    Read from ``ckpt.extra["image_dims"]`` when training recorded it, else from the
    training spacing: 3 values come from volumes, 2 from images; the native grid says
    nothing.
    """
    dims = ckpt.extra.get("image_dims")
    if dims in (2, 3):
        return dims == 3
    if ckpt.spacing is not None:
        return len(ckpt.spacing) == 3
    return None


def segment(ckpt: Checkpoint, channels: Sequence[np.ndarray], spacing: Sequence[float], *,
            model: torch.nn.Module | None = None, device: str | torch.device | None = None,
            batch_size: int = 4, channel_names: Sequence[str] | None = None,
            tta: bool = False, decision: str | None = None, threshold: float | None = None,
            slice_axis: int | None = None, region: tuple[int, int, int] | None = None
            ) -> Generator[Progress, None, Segmentation]:
    """Segment an image with a trained checkpoint, yielding progress.

    The image is prepared as in training, predicted by sliding window, then
    resampled and pasted back into the input's full grid. With
    ``crop_foreground`` (the default), everything outside the body -- outside
    the crop, and inside it the voxels that hold the image's constant
    "outside" value and are not enclosed by the body (see
    :func:`~napari_medseg.core.normalize.foreground_mask`) -- is background
    (skull-stripped images are labelled inside the body).

    Parameters
    ----------
    ckpt : Checkpoint
        A segmentation model.
    channels : sequence of np.ndarray
        The image's channels, in the model's order, on one grid.
    spacing : sequence of float
        The image's voxel spacing (mm), one value per axis.
    model : torch.nn.Module, optional
        The network, if already built (default: ``ckpt.build_model()``).
    device : str or torch.device, optional
        Default: the model's training device setting.
    batch_size : int
        Windows per model call.
    channel_names : sequence of str, optional
        For error messages.
    tta : bool
        Mirroring test-time augmentation.
    decision : {"argmax", "foreground"}, optional
        Overrides the rule the model was trained with (``TrainConfig.decision``),
        see :mod:`napari_medseg.core.decision`.
    threshold : float, optional
        Overrides the model's foreground threshold (``TrainConfig.threshold``).
    slice_axis : int, optional
        A 2D model on a 3D volume: the axis to slice along, instead of the model's
        training axis (``TrainConfig.slice_axis``), e.g. 0 for a Z,Y,X stack. The
        in-plane training spacing goes to the new in-plane axes. Ignored otherwise.
    region : (axis, start, stop), optional
        Only indices ``start:stop`` along ``axis`` of the input grid are wanted, e.g.
        the slice a viewer shows. The whole image is still prepared (intensity
        normalisation, body crop, resampling), so the result equals the whole
        prediction's there, but the model runs only where those indices need it:
        their own slices for a 2D model slicing along ``axis``, else a slab of one
        patch (in model voxels) around them. The returned arrays then span
        ``stop - start`` along ``axis``.

    Returns
    -------
    Segmentation
        On the input grid (or its ``region``).

    Raises
    ------
    ValueError
        A channel count or image dimension the model does not take, a bad option or
        region, or an image :func:`prepare_input` refuses.
    """
    from napari_medseg.core.engine import pick_device
    from napari_medseg.core.inference import predict_volume

    mc, tc = ckpt.model_config, ckpt.train_config
    rule = check_rule(decision or tc.decision)
    thr = check_threshold(tc.threshold if threshold is None else threshold)
    if len(channels) != mc.in_channels:
        named = f" ({', '.join(ckpt.channel_names)})" if ckpt.channel_names else ""
        raise ValueError(f"The model expects {mc.in_channels} channel(s){named}, got "
                         f"{len(channels)}; pass them in the training order.")
    nd_img = np.ndim(channels[0])
    if mc.spatial_dims == 3 and nd_img != 3:
        raise ValueError(f"This is a 3D model; the image is {nd_img}D {np.shape(channels[0])}. "
                         "Use a 2D model for 2D images.")
    axis_2d = tc.slice_axis if slice_axis is None else int(slice_axis)
    if axis_2d not in (0, 1, 2):
        raise ValueError(f"slice_axis must be 0, 1 or 2, got {slice_axis!r}.")
    if region is not None:
        region = check_region(region, np.shape(channels[0]))
    target_sp = model_spacing(ckpt.spacing, image_spacing_of(channels, spacing),
                              model_dims=mc.spatial_dims, slice_axis=axis_2d,
                              trained_slice_axis=tc.slice_axis)
    prep = prepare_input(channels, spacing, method=tc.intensity_norm, target_spacing=target_sp,
                         crop_foreground=tc.crop_foreground, names=channel_names)
    dev = pick_device(device or tc.device)
    net = model if model is not None else ckpt.build_model()
    patch = tuple(tc.patch_size)

    def run_model(image: np.ndarray) -> Generator[Progress, None, np.ndarray]:
        pred = yield from predict_volume(net, image, spatial_dims=mc.spatial_dims,
                                         patch_size=patch, overlap=tc.overlap,
                                         batch_size=batch_size, slice_axis=axis_2d, device=dev,
                                         tta=tta)
        return np.asarray(pred.probabilities, np.float32)

    crop, body, out_shape = prep.crop, prep.body, prep.full_shape
    if region is None:
        probs: np.ndarray | None = resample_to_shape((yield from run_model(prep.image)),
                                                     prep.cropped_shape)
    else:
        ax, lo, hi = region
        out_shape = tuple(hi - lo if i == ax else n for i, n in enumerate(prep.full_shape))
        c = prep.crop[ax]
        a, b = max(lo, c.start) - c.start, min(hi, c.stop) - c.start  # in the cropped grid
        probs = None  # the region lies outside the body crop: all background
        if a < b:
            context = region_context(patch, mc.spatial_dims, nd_img, ax, axis_2d)
            coords, slab = region_slab(prep.cropped_shape[ax], prep.image.shape[1 + ax], a, b,
                                       context)
            sub = yield from run_model(np.take(prep.image, np.arange(*slab), axis=1 + ax))
            # Back to the input grid: along ``ax`` where the whole prediction's resampling
            # reads the model grid, then the other axes as it resamples them.
            sub = interpolate_axis(sub, 1 + ax, coords - slab[0])
            probs = resample_to_shape(sub, tuple(b - a if i == ax else n for i, n in
                                                 enumerate(prep.cropped_shape)))
            crop = tuple(slice(a + c.start - lo, b + c.start - lo) if i == ax else sl
                         for i, sl in enumerate(prep.crop))
            if body is not None:
                body = np.take(body, np.arange(a, b), axis=ax)
    k = mc.out_channels if probs is None else probs.shape[0]
    full = np.zeros((k, *out_shape), np.float32)
    if k > 1:
        full[0] = 1.0  # outside the crop: certainly background
    if probs is not None:
        if body is not None:
            outside = ~body
            probs[:, outside] = 0.0
            if k > 1:
                probs[0, outside] = 1.0
        full[(slice(None), *crop)] = probs
    return labelled(full, ckpt.mapping, rule=rule, threshold=thr)


def labelled(probabilities: np.ndarray, mapping: LabelMapping, *, rule: str,
             threshold: float) -> Segmentation:
    """A :class:`Segmentation` from ``(K, *spatial)`` probabilities: label values by the
    decision ``rule`` (see :mod:`~napari_medseg.core.decision`), and the predictive
    entropy."""
    classes = decide(probabilities, rule=rule, threshold=threshold)
    if probabilities.shape[0] > 1:
        p = np.clip(probabilities, 1e-7, 1.0)
        entropy = -(p * np.log(p)).sum(axis=0)
    else:
        p = np.clip(probabilities[0], 1e-7, 1 - 1e-7)
        entropy = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    return Segmentation(mapping.to_values(classes), probabilities, entropy.astype(np.float32))
