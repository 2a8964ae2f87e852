"""The :class:`Volume` (an array with its affine) and the file-name and geometry helpers."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

NIFTI_SUFFIXES = (".nii", ".nii.gz")
RASTER_SUFFIXES = (".png", ".tif", ".tiff")


@dataclass
class Volume:
    """An array with its place in the world.

    Parameters
    ----------
    data : np.ndarray
        Voxel data in file order (for NIfTI: i, j, k).
    affine : np.ndarray
        4x4 voxel-to-world (mm) matrix.
    path : str or None
        Where it came from, for error messages.
    header : object or None
        The original NIfTI header, reused on writing so that fields such as
        units and intent survive a round trip.
    """

    data: np.ndarray
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    path: str | None = None
    header: Any = None

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm along each spatial axis of ``data``."""
        return spacing_from_affine(self.affine, self.data.ndim)

    @property
    def origin(self) -> tuple[float, ...]:
        """World position (mm) of voxel 0."""
        return tuple(float(v) for v in self.affine[: min(self.data.ndim, 3), 3])


def file_stem(path: str | os.PathLike[str]) -> str:
    """A file's name without its image suffix: ``.../flair.nii.gz`` -> ``flair``."""
    name = str(path).replace("\\", "/").rsplit("/", 1)[-1]
    for suffix in sorted(NIFTI_SUFFIXES + RASTER_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_nifti(path: str | os.PathLike[str]) -> bool:
    """True when the name ends in ``.nii`` or ``.nii.gz``."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def is_supported(path: str | os.PathLike[str]) -> bool:
    """True for NIfTI, PNG and TIFF file names."""
    return str(path).lower().endswith(NIFTI_SUFFIXES + RASTER_SUFFIXES)


def spacing_from_affine(affine: np.ndarray, ndim: int = 3) -> tuple[float, ...]:
    """Voxel sizes (column norms of the affine's linear part).

    Parameters
    ----------
    affine : np.ndarray
        4x4 matrix.
    ndim : int
        Number of spatial axes wanted (2 or 3).
    """
    lin = np.asarray(affine, dtype=float)[:3, :3]
    sp = np.sqrt((lin**2).sum(axis=0))
    return tuple(float(s) for s in sp[: min(ndim, 3)])


def affine_from_spacing(
    spacing: tuple[float, ...] | list[float], origin: tuple[float, ...] | list[float] | None = None
) -> np.ndarray:
    """Axis-aligned 4x4 affine from voxel spacing and origin (2 or 3 values)."""
    aff = np.eye(4)
    for i, s in enumerate(list(spacing)[:3]):
        aff[i, i] = float(s)
    if origin is not None:
        for i, o in enumerate(list(origin)[:3]):
            aff[i, 3] = float(o)
    return aff


def drop_trailing_singletons(data: np.ndarray) -> np.ndarray:
    """``(240, 240, 155, 1)`` -> ``(240, 240, 155)``: length-1 axes past the third dropped."""
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return data


def smallest_int_type(lo: float, hi: float, candidates: Sequence[type]) -> Any:
    """The first of ``candidates`` (numpy integer types) whose range holds ``lo..hi``,
    or None. Pass Python numbers: they compare exactly with 64-bit ranges."""
    return next((t for t in candidates
                 if int(np.iinfo(t).min) <= lo and hi <= int(np.iinfo(t).max)), None)
