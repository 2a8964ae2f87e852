"""Training settings derived from the data when the user leaves them open.

A 3D model learns from patches. On a CPU with minutes to train, what it can
learn depends on how much of the body one patch holds and on how many patches
it sees. At the native 1 mm of brain MRI, a 48^3 patch holds 48 mm of a
170 mm brain, and a 240x240x155 volume takes long to validate and predict.
Resampled so that the patch spans half of the body's longest side (about
1.8 mm for a brain), every patch shows a tumour with its surroundings, and a
step costs the same. That is :func:`auto_spacing`: isotropic, never finer than
the native voxel size along any axis, the same for every case (the
checkpoint stores it and prediction resamples to it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from napari_medseg.core.data import bbox
from napari_medseg.core.normalize import foreground_mask

__all__ = ["PATCH_SHARE", "auto_spacing", "body_extent_mm", "default_depth",
           "default_patch"]

#: The share of the body's longest side (median over the cases) that a patch spans.
PATCH_SHARE = 0.5


def body_extent_mm(image: np.ndarray, spacing: Sequence[float]) -> tuple[float, ...]:
    """Size in mm of the body's bounding box, per axis.

    Parameters
    ----------
    image : np.ndarray
        ``(C, *spatial)`` channels; the body is where any channel differs from its
        background value (:func:`~napari_medseg.core.normalize.foreground_mask`), or the
        whole image when there is no constant background.
    spacing : sequence of float
        Voxel size in mm, one value per spatial axis.
    """
    box = bbox(foreground_mask(image))
    return tuple(float((s.stop - s.start) * sp) for s, sp in zip(box, spacing))


def auto_spacing(extents_mm: Sequence[Sequence[float]], spacings: Sequence[Sequence[float]],
                 patch_size: Sequence[int]) -> tuple[float, ...] | None:
    """The voxel size a 3D model trains at when none was given.

    Parameters
    ----------
    extents_mm : sequence of sequence of float
        Each case's body extent in mm (:func:`body_extent_mm`).
    spacings : sequence of sequence of float
        Each case's native voxel size in mm.
    patch_size : sequence of int
        The training patch, in voxels at the spacing returned.

    Returns
    -------
    tuple of float or None
        One value per axis: the median longest body side times
        :data:`PATCH_SHARE` over the largest patch side, rounded to two significant
        digits, or the median native voxel size along an axis where that is coarser.
        None when no axis would be coarsened: each case keeps its own grid.
    """
    if not extents_mm or len(extents_mm) != len(spacings):
        raise ValueError("auto_spacing needs one body extent and one spacing per case.")
    longest = float(np.median([max(e) for e in extents_mm]))
    target = float(f"{longest * PATCH_SHARE / max(patch_size):.2g}")
    native = np.median(np.asarray(spacings, float), axis=0)
    if np.all(target <= native * 1.05):  # within 5 % of native: not worth resampling
        return None
    return tuple(max(target, float(n)) for n in native)


#: Default patch side for a 3D model (48^3, at the spacing :func:`auto_spacing` picks for it:
#: the benchmarked BraTS recipe) and a 2D one, and the step sides are rounded down to; the
#: command line and the training widget share them.
PATCH_3D, PATCH_2D, PATCH_MULTIPLE = 48, 128, 8


def default_patch(shape: Sequence[int], dims: int, *, slice_axis: int | None = None,
                  cap: int, multiple: int) -> tuple[int, ...]:
    """The largest patch up to ``cap`` voxels a side that fits the image, in steps of ``multiple``.

    Parameters
    ----------
    shape : sequence of int
        The spatial shape of the image (at the training spacing).
    dims : {2, 3}
        The model's spatial dimensions. A 2D model on a 3D volume takes its in-plane
        axes, in order: every axis but ``slice_axis`` (default 2).
    cap, multiple : int
        The largest side, and the step the sides are rounded down to (a side shorter
        than ``multiple`` keeps the image's size).
    """
    if dims == 2 and len(shape) == 3:
        axis = 2 if slice_axis is None else slice_axis
        sizes = [n for a, n in enumerate(shape) if a != axis]
    else:
        sizes = list(shape[-dims:])
    return tuple((p // multiple) * multiple if p >= multiple else p
                 for p in (min(cap, int(n)) for n in sizes))


def default_depth(patch: Sequence[int]) -> int:
    """UNet depth (2 to 4 levels) whose down-sampling the smallest patch side allows."""
    m = max(min(patch), 4)
    return int(max(2, min(4, int(math.log2(m // 4)) + 1)))


def restoration_slice_axis(spacing: Sequence[float]) -> int | None:
    """The axis a 2D restoration model slices a 3D volume along: the one with the coarsest
    spacing when the voxels are clearly anisotropic (thick slices: each slice is a sharp 2D
    image); None when they are not, for the caller's default (``train --task restore``: the
    last axis, axial in RAS NIfTI; the widget: the viewer's slider axis)."""
    sp = [float(s) for s in spacing]
    if len(sp) == 3 and max(sp) > 1.5 * min(sp):
        return int(np.argmax(sp))
    return None
