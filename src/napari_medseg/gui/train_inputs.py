"""What the training widget reads from the layers, and the defaults it derives.

User labels become a sparse training target (:func:`sparse_target`: slices with no
label at all are ignored), the labelled amount is summarised (:class:`LabelStats`),
patch size and depth default from the data (:func:`default_patch`,
:func:`default_depth`), and the typed patch and spacing are checked (:func:`parse_patch`,
:func:`parse_spacing`). numpy only: no Qt here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_medseg.core.data import labelled_slices, painted_axis
from napari_medseg.core.plan import PATCH_2D, PATCH_3D, PATCH_MULTIPLE, default_depth
from napari_medseg.core.plan import default_patch as fit_patch
from napari_medseg.gui import layers as L
from napari_medseg.gui.widget_base import InputError

UNLABELLED = -1



@dataclass(frozen=True)
class LabelStats:
    """What is labelled: slices along ``axis`` and voxels per label value."""

    n_slices: int  # slices along the slice axis (1 for 2D)
    labelled_slices: int
    voxels: dict[int, int]  # label value -> labelled voxels (0: background)
    axis: int | None

    def text(self, names: dict[int, str] | None = None) -> str:
        names = names or {}
        if not self.voxels or not any(v > 0 for k, v in self.voxels.items() if k != 0):
            return "Nothing labelled yet."
        per = ", ".join(f"{names.get(k, k)}: {n:,}" for k, n in sorted(self.voxels.items()))
        if self.axis is None:
            return (f"2D image: every unpainted pixel is background, so paint every object "
                    f"(or crop to a fully painted region); pixels per label: {per}")
        head = f"{self.labelled_slices} of {self.n_slices} slices (axis {self.axis}) labelled"
        return f"{head}; voxels per label: {per}"


def sparse_target(labels: np.ndarray, *, axis: int | None, background: bool) -> np.ndarray:
    """User labels -> training target: -1 on slices (along ``axis``) with no label at all.

    With ``background`` every 0 voxel is background; 2D images are taken as
    annotated everywhere.
    """
    lab = np.asarray(labels)
    if lab.size and (lab.max() > 32767 or lab.min() < -1):
        raise InputError(f"Label values must lie in 0..32767; found {lab.min()}..{lab.max()}.")
    t = lab.astype(np.int16)
    if background or lab.ndim != 3 or axis is None:
        return t
    idx: list[Any] = [slice(None)] * lab.ndim
    idx[axis] = ~labelled_slices(lab, axis)
    t[tuple(idx)] = UNLABELLED
    return t


def painted_axis_hint(labels: np.ndarray, axis: int | None) -> str:
    """A warning when ``labels`` look painted along another axis than ``axis``, else "".

    Slices along ``axis`` with no label are ignored and every unpainted voxel of the
    others is background; a few slices painted along another axis touch most slices
    along ``axis``, which would make most of the volume background.
    """
    lab = np.asarray(labels)
    found = painted_axis(lab) if lab.ndim == 3 and axis is not None else None
    if found is None:
        return ""
    best, frac = found
    if best == axis or frac[best] > 0.5 * frac[axis]:  # type: ignore[index]
        return ""
    n = int(labelled_slices(lab, best).sum())
    return (f". They look painted along axis {best} ({n} of {lab.shape[best]} slices hold "
            f"labels there): choose it in 'Slices along', or most of the volume counts as "
            "background.")


def _value_counts(target: np.ndarray) -> dict[int, int]:
    """Voxels per label value >= 0 (a bincount: linear, unlike np.unique's sort, which
    froze the GUI thread for ~0.4 s when Train was pressed on a loaded machine)."""
    flat = target.reshape(-1)
    if flat.size == 0:
        return {}
    lo, hi = int(flat.min()), int(flat.max())
    if hi < 0:
        return {}
    if hi - lo >= (1 << 20):  # sparse huge values: sorting is the cheaper way
        vals, counts = np.unique(flat[flat >= 0], return_counts=True)
        return {int(v): int(c) for v, c in zip(vals, counts)}
    counts = np.bincount(np.subtract(flat, lo, dtype=np.int32), minlength=hi - lo + 1)
    return {int(i) + lo: int(counts[i]) for i in np.flatnonzero(counts) if int(i) + lo >= 0}


def label_stats(target: np.ndarray, axis: int | None) -> LabelStats:
    lab = target >= 0
    voxels = _value_counts(target)
    if target.ndim == 3 and axis is not None:
        other = tuple(a for a in range(3) if a != axis)
        per_slice = np.any(target > 0, axis=other) if np.any(target == UNLABELLED) \
            else np.any(lab, axis=other)
        n, done = target.shape[axis], int(per_slice.sum())
    else:
        n, done = 1, int(lab.any())
    return LabelStats(n, done, voxels, axis)


def default_patch(shape: tuple[int, ...], dims: int, axis: int | None) -> tuple[int, ...]:
    """Patch as ``train`` picks it: the in-plane size (2D) up to 128, or up to 48 per axis
    (3D), multiples of 8."""
    return fit_patch(shape, dims, slice_axis=axis, cap=PATCH_2D if dims == 2 else PATCH_3D,
                     multiple=PATCH_MULTIPLE)


@dataclass
class TrainInputs:
    channels: list[L.LayerArray]
    labels: L.LayerArray
    target: np.ndarray
    stats: LabelStats
    axis: int | None
    note: str = ""  # said when training starts (channel order, slice axis)


def parse_patch(text: str, dims: int, example: int) -> tuple[int, ...]:
    """Patch sizes typed in a widget ("64", "64 64" or "64, 64, 32") for a ``dims``-D model;
    :class:`InputError` naming an example when they are not ``dims`` sizes >= 4."""
    try:
        patch = tuple(int(v) for v in text.replace(",", " ").split())
    except ValueError:
        patch = ()
    if len(patch) == 1:
        patch = patch * dims
    if len(patch) != dims or min(patch) < 4:
        raise InputError(f"Patch '{text}' should be {dims} sizes >= 4, "
                         f"e.g. {' '.join([str(example)] * dims)}.")
    return patch


def parse_spacing(text: str, dims: int, native: Sequence[float],
                  axis: int | None, *, image: np.ndarray | None = None,
                  patch: Sequence[int] | None = None) -> tuple[float, ...] | None:
    """The voxel size to train at, typed in a widget ("", "auto", "1", "1 1" or "1, 1, 2" mm).

    Parameters
    ----------
    text : str
        Blank for the layers' own spacing, ``auto`` (3D models on 3D layers: the spacing
        at which ``patch`` spans half of the body's longest side, as ``train --spacing auto``
        picks it; see :func:`~napari_medseg.core.plan.auto_spacing`), one value (the same
        on every model axis) or one value per spatial axis of the model.
    dims : int
        The model's spatial dimensions, 2 or 3.
    native : sequence of float
        The layers' own spacing (mm), one value per axis of the data (2 or 3).
    axis : int or None
        The slice axis when a 2D model trains on slices of a 3D volume (None: axis 2, as
        ``TrainConfig.slice_axis`` defaults).
    image : numpy.ndarray, optional
        The first input channel, for ``auto`` (the body is found in it).
    patch : sequence of int, optional
        The training patch in voxels, for ``auto``.

    Returns
    -------
    tuple of float or None
        None for blank text (``TrainConfig.spacing=None``: no resampling); else one value
        per axis of the data, as ``TrainConfig.spacing`` expects. A 2D model on a 3D volume
        takes the typed values on its two in-plane axes and keeps the volume's own spacing
        on the slice axis: resampling across slices would not change what the 2D model sees
        but would blend sparsely labelled slices with unlabelled ones (and the labels
        vanish where labelled voxels weigh less than half).

    Raises
    ------
    InputError
        Text that is not numbers, a value <= 0, or the wrong number of values; the message
        says what is expected, with the layers' own spacing.
    """
    if not text.strip():
        return None
    nd = len(native)
    if text.strip().lower() == "auto":
        if dims != 3 or nd != 3:
            raise InputError("Spacing 'auto' is for a 3D model on 3D layers; leave it blank "
                             "or give a size in mm.")
        if image is None or patch is None:
            raise ValueError("parse_spacing('auto') needs the image and the patch.")
        from napari_medseg.core.plan import auto_spacing, body_extent_mm

        return auto_spacing([body_extent_mm(np.asarray(image)[None], native)], [native], patch)
    slice_axis = (2 if axis is None else axis) if dims == 2 and nd == 3 else None
    if slice_axis is None:
        expect = f"1 value (isotropic) or {dims}, one per axis"
    else:
        expect = (f"1 value or 2 for the in-plane axes (a 2D model trains on slices along "
                  f"axis {slice_axis}, which keeps its own {native[slice_axis]:g} mm)")
    try:
        values = tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError:
        values = ()
    if not values or not all(math.isfinite(v) for v in values):
        reason = "is not a list of numbers"
    elif len(values) not in (1, dims):
        reason = f"has {len(values)} values"
    elif min(values) <= 0:
        reason = "has a value <= 0"
    else:
        reason = ""
    if reason:
        own = " x ".join(f"{s:g}" for s in native)
        raise InputError(f"Spacing '{text}' {reason}: leave it blank to train at the layers' "
                         f"own spacing ({own} mm), or give {expect}, in mm > 0, e.g. "
                         f"{' '.join(['1'] * dims)}"
                         + (", or 'auto'." if dims == 3 and nd == 3 else "."))
    if len(values) == 1:
        values = values * dims
    if slice_axis is not None:
        values = (*values[:slice_axis], float(native[slice_axis]), *values[slice_axis:])
    return values
