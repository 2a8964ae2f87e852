"""From user arrays to prepared model inputs and training cases.

The same steps run at training and prediction time: per-image intensity
normalisation, cropping to the body, resampling to the training spacing.
:mod:`napari_medseg.core.pipeline` runs them before a model; the engine only
sees prepared cases.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from napari_medseg.core.config import TrainConfig
from napari_medseg.core.data import (
    UNLABELLED,
    Case,
    LabelMapping,
    bbox,
    check_image,
    label_values_problem,
)
from napari_medseg.core.normalize import (
    ChannelNorm,
    apply_normalization,
    fit_normalization,
    foreground_mask,
)
from napari_medseg.core.resample import resample_image, resample_labels, zoom_factors

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


def image_spacing_of(channels: Sequence[np.ndarray], spacing: Sequence[float]) -> tuple[float, ...]:
    """The image's spacing, one value per spatial axis (checked by :func:`prepare_input`)."""
    return tuple(float(v) for v in spacing)[:np.ndim(channels[0])]


def _train_spacing(config: TrainConfig, channels: Sequence[np.ndarray],
                   spacing: Sequence[float]) -> tuple[float, ...] | None:
    """The spacing a training case is resampled to (a 2D model's patch has 2 values)."""
    return model_spacing(config.spacing, image_spacing_of(channels, spacing),
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
