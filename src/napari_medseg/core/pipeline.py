"""From user arrays to training cases, and from a checkpoint to a segmentation.

The same steps run at training and prediction time: per-image intensity
normalisation, cropping to the body, resampling to the training spacing. The
CLI and the GUI call these; the engine only sees prepared cases.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage as ndi

from napari_medseg.core.checkpoint import Checkpoint
from napari_medseg.core.config import TrainConfig
from napari_medseg.core.data import (
    UNLABELLED,
    Case,
    ChannelNorm,
    LabelMapping,
    apply_normalization,
    bbox,
    check_image,
    fit_normalization,
    foreground_mask,
    label_values_problem,
    resample_image,
    resample_labels,
    resample_to_shape,
    zoom_factors,
)
from napari_medseg.core.decision import check_rule, check_threshold, decide
from napari_medseg.core.events import Progress
from napari_medseg.core.inference.region import (
    check_region,
    interpolate_axis,
    region_context,
    region_slab,
)

#: Voxels kept around the body when cropping, so context reaches the border.
CROP_MARGIN = 4

@dataclass(frozen=True)
class PreparedInput:
    """A normalised, cropped, resampled image and how to undo the geometry."""

    image: np.ndarray  # (C, *spatial) at the model's spacing
    norms: tuple[ChannelNorm, ...]
    crop: tuple[slice, ...]  # in the original grid
    cropped_shape: tuple[int, ...]
    full_shape: tuple[int, ...]
    spacing: tuple[float, ...]  # of ``image``
    #: Inside the body (holes filled), on the original grid within ``crop``; None: everywhere.
    body: np.ndarray | None = None


def prepare_input(channels: Sequence[np.ndarray], spacing: Sequence[float], *,
                  method: str, target_spacing: Sequence[float] | None, crop_foreground: bool,
                  names: Sequence[str] | None = None) -> PreparedInput:
    """Check, normalise, crop and resample one image (list of channel arrays).

    Every axis keeps at least one voxel: an axis thinner than half a voxel of
    ``target_spacing`` becomes one voxel as thick as the image.

    Raises
    ------
    ValueError
        Channels of different shapes, NaN values, spacing of the wrong length.
    """
    img = check_image(channels, names)
    nd = img.ndim - 1
    spacing = tuple(float(s) for s in spacing)[:nd]
    if len(spacing) != nd:
        raise ValueError(f"Spacing {spacing} has {len(spacing)} values for a {nd}D image.")
    fg = foreground_mask(img)
    crop = bbox(fg, CROP_MARGIN) if crop_foreground else tuple(slice(0, n) for n in fg.shape)
    norms = fit_normalization(img[(slice(None), *crop)], method, fg[crop])
    work = apply_normalization(img[(slice(None), *crop)], norms)
    tsp = None if target_spacing is None else tuple(target_spacing)[:nd]
    factors = zoom_factors(spacing, tsp)
    # An image thinner than half a model voxel (one thin slice for a 3D model) would zoom to
    # no voxel at all: keep one, as thick as the image.
    factors = tuple(f if round(n * f) >= 1 else 1.0 / n
                    for f, n in zip(factors, work.shape[1:]))
    work = resample_image(work, factors)
    new_sp = tuple(s / f for s, f in zip(spacing, factors))
    cropped_shape = tuple(s.stop - s.start for s in crop)
    body = None
    if crop_foreground and not fg.all():
        body = ndi.binary_fill_holes(fg[crop])
    return PreparedInput(work, norms, crop, cropped_shape, tuple(img.shape[1:]), new_sp, body)


def prepare_case(channels: Sequence[np.ndarray], label: np.ndarray, spacing: Sequence[float], *,
                 mapping: LabelMapping, config: TrainConfig, name: str = "case",
                 channel_names: Sequence[str] | None = None) -> tuple[Case, PreparedInput]:
    """Turn a labelled image into a training :class:`Case`.

    ``label`` holds the user's label values, with -1 (:data:`UNLABELLED`)
    where nothing was annotated.
    """
    lab = _check_label(label, np.shape(channels[0]), name)  # before the costly normalisation
    prep = prepare_input(channels, spacing, method=config.intensity_norm,
                         target_spacing=_train_spacing(config, channels, spacing),
                         crop_foreground=config.crop_foreground, names=channel_names)
    target = _target(lab, prep, mapping, name)
    return Case(prep.image, target, prep.spacing, name), prep


def prepare_rater_case(channels: Sequence[np.ndarray], raters: Sequence[np.ndarray],
                       spacing: Sequence[float], *, mapping: LabelMapping, config: TrainConfig,
                       name: str = "case", channel_names: Sequence[str] | None = None,
                       rater_names: Sequence[str] | None = None) -> tuple[Case, PreparedInput]:
    """Turn an image labelled by several raters into one training :class:`Case`.

    Each rater's labels go through the same mapping, crop and resampling as in
    :func:`prepare_case`; :attr:`Case.target` becomes their plurality vote and
    :attr:`Case.raters` keeps them all, for ``TrainConfig.raters`` to use.

    Parameters
    ----------
    channels : sequence of np.ndarray
        The image's channels, one grid.
    raters : sequence of np.ndarray
        One label volume per rater, on the image grid, in the user's label values.
        -1 (:data:`UNLABELLED`) where a rater did not annotate: that rater
        abstains there. Vote fractions count only the raters that labelled a
        voxel, the plurality vote too; a voxel no rater labelled is ignored.
    spacing : sequence of float
    mapping : LabelMapping
        Built from all raters' labels (:meth:`LabelMapping.from_labels`).
    config : TrainConfig
    name : str
    channel_names, rater_names : sequence of str or None
        For messages.

    Raises
    ------
    ValueError
        No rater, or a rater whose grid differs from the image's (the message names it).
    """
    if len(raters) == 0:
        raise ValueError(f"{name}: no rater label volume given; pass at least one.")
    names = list(rater_names) if rater_names is not None else [f"rater {i + 1}"
                                                               for i in range(len(raters))]
    if len(names) != len(raters):
        raise ValueError(f"{name}: {len(names)} rater names for {len(raters)} label volumes; "
                         "give one name per rater.")
    shape = np.shape(channels[0])
    labs = [_check_label(r, shape, f"{name} ({nm})") for r, nm in zip(raters, names)]
    prep = prepare_input(channels, spacing, method=config.intensity_norm,
                         target_spacing=_train_spacing(config, channels, spacing),
                         crop_foreground=config.crop_foreground, names=channel_names)
    stack = [_target(lab, prep, mapping, f"{name} ({nm})") for lab, nm in zip(labs, names)]
    return Case.from_raters(prep.image, stack, prep.spacing, name), prep


def _spacing_of(channels: Sequence[np.ndarray], spacing: Sequence[float]) -> tuple[float, ...]:
    """The image's spacing, one value per spatial axis (checked by :func:`prepare_input`)."""
    return tuple(float(v) for v in spacing)[:np.ndim(channels[0])]


def _train_spacing(config: TrainConfig, channels: Sequence[np.ndarray],
                   spacing: Sequence[float]) -> tuple[float, ...] | None:
    """The spacing a training case is resampled to (a 2D model's patch has 2 values)."""
    return model_spacing(config.spacing, _spacing_of(channels, spacing),
                         model_dims=len(config.patch_size), slice_axis=config.slice_axis)


def _check_label(label: np.ndarray, shape: Sequence[int], name: str) -> np.ndarray:
    """The label array, after checking it lies on the image grid and holds no NaN."""
    lab = np.asarray(label)
    if lab.shape != tuple(shape):
        raise ValueError(f"{name}: image {tuple(shape)} and labels {lab.shape} differ in "
                         "shape; resample the labels onto the image grid.")
    problem = label_values_problem(lab)
    if problem:
        raise ValueError(f"{name}: the label map {problem}.")
    return lab


def _target(lab: np.ndarray, prep: PreparedInput, mapping: LabelMapping, name: str) -> np.ndarray:
    """User label values on the image grid -> class indices on the prepared grid."""
    classes = mapping.to_classes(lab)
    outside = np.ones(lab.shape, bool)
    outside[prep.crop] = False
    if np.any(classes[outside] > 0):
        # Foreground labelled outside the body crop would be lost: keep everything.
        raise ValueError(f"{name}: foreground labels lie outside the image's body (the "
                         "region where the channels differ from their constant background); "
                         "check that these labels belong to this image and its grid (in the "
                         "Python API, TrainConfig(crop_foreground=False) keeps the whole "
                         "image).")
    # zoom_factors(a, b) = a / b: new shape over cropped shape.
    target = resample_labels(classes[prep.crop], zoom_factors(prep.image.shape[1:],
                                                              prep.cropped_shape))
    if target.shape != prep.image.shape[1:]:
        target = _fit_shape(target, prep.image.shape[1:])
    return target


def _fit_shape(arr: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Crop/pad (with unlabelled) a label array to an exact shape."""
    out = np.full(tuple(shape), UNLABELLED, arr.dtype)
    sl = tuple(slice(0, min(a, b)) for a, b in zip(arr.shape, shape))
    out[sl] = arr[sl]
    return out


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


def model_spacing(spacing: Sequence[float] | None, image_spacing: Sequence[float], *,
                  model_dims: int, slice_axis: int, trained_slice_axis: int | None = None
                  ) -> tuple[float, ...] | None:
    """The spacing to resample an image to, for a model trained at ``spacing``.

    A 2D model never resamples along the slice axis of a 3D volume: it sees one
    slice at a time, so the volume keeps its own slice spacing (resampling across
    slices and back would only blur the labels and cost time). A single 2D slice
    (a preview, or a 2D image) seen by a 2D model trained on slices of 3D volumes
    drops the slice axis's value rather than the last one.

    Parameters
    ----------
    spacing : sequence of float or None
        The training spacing (``TrainConfig.spacing``; None: the native grid). For a
        2D model on 3D volumes, 3 values (the training slice axis's is ignored) or the
        2 in-plane ones.
    image_spacing : sequence of float
        The image's own spacing, one value per spatial axis.
    model_dims : int
        The model's ``spatial_dims``.
    slice_axis : int
        The axis a 2D model's slices are taken along in this image (3D volumes).
    trained_slice_axis : int or None
        The axis the model's slices were taken along in training, where a 3-value
        ``spacing`` holds the slice thickness (None: ``slice_axis``). When it differs
        from ``slice_axis``, the two in-plane training values go, in order, to the
        in-plane axes of this image.

    Returns
    -------
    tuple of float or None
        One value per axis of the image, or None for the native grid.
    """
    if spacing is None:
        return None
    trained = slice_axis if trained_slice_axis is None else trained_slice_axis
    sp = [float(s) for s in spacing]
    own = [float(s) for s in image_spacing]
    if model_dims == 2 and len(sp) == 3 and len(own) in (2, 3):
        del sp[trained]  # the training slice thickness: no in-plane size of this image
    if model_dims == 2 and len(own) == 3 and len(sp) == 2:
        sp.insert(slice_axis, own[slice_axis])
    return tuple(sp)  # a length that still differs is reported by prepare_input


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
    :func:`~napari_medseg.core.data.foreground_mask`) -- is background
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
    target_sp = model_spacing(ckpt.spacing, _spacing_of(channels, spacing),
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
