"""Clean-up of predicted label maps.

Both functions treat all non-background labels together as "foreground".

:func:`keep_largest_component` keeps the largest connected region of
foreground (all non-background labels together) and sets every other
foreground voxel to background. It suits a structure known to be one piece --
a single brain tumour, one organ -- where scattered blobs away from it can
only be false positives: in the BraTS training cases the reference whole
tumour is one 26-connected region (stray pieces of at most 16 voxels). It is
an option, never a default: multifocal tumours, several lesions, or classes
that lie apart (two hemispheres, both kidneys) are not one region, and this
would delete all but one of them.

:func:`fill_holes` labels background voxels enclosed by foreground, for
structures without cavities (a whole tumour, an organ's outline); each
filled voxel takes the label of a nearby foreground voxel. Not for hollow
structures (ventricles inside the brain, a bladder wall).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

__all__ = ["Cleaned", "fill_holes", "keep_largest_component"]


class Cleaned(NamedTuple):
    """A cleaned label map, and how many voxels and regions the clean-up changed."""

    labels: np.ndarray
    voxels: int
    regions: int


def keep_largest_component(labels: npt.ArrayLike, *, background: int = 0) -> Cleaned:
    """Keep the largest connected region of non-background voxels.

    Voxels touching by a face, an edge or a corner are connected (26-connectivity
    in 3D, 8 in 2D): a thin structure cut diagonally by the grid stays one region.
    Label values inside the kept region are unchanged, so a tumour keeps its
    sub-regions.

    Parameters
    ----------
    labels : array_like of int
        A label map (2D or 3D; any number of dimensions works).
    background : int
        The background value.

    Returns
    -------
    Cleaned
        The new label map (a copy, same dtype; ``labels`` is never modified), and
        how many voxels and regions were set to background. With no foreground, or
        a single region, the map is returned unchanged (as a copy).

    Raises
    ------
    ValueError
        A float map with non-integer values (probabilities are not labels).
    """
    arr = _label_map(labels, "keep_largest_component")
    out = arr.copy()
    fg = arr != background
    if arr.ndim == 0 or not fg.any():
        return Cleaned(out, 0, 0)
    regions, n = ndi.label(fg, structure=ndi.generate_binary_structure(arr.ndim, arr.ndim))
    if n <= 1:
        return Cleaned(out, 0, 0)
    sizes = np.bincount(regions.ravel(), minlength=n + 1)
    sizes[0] = 0
    keep = int(np.argmax(sizes))  # the first of equally large regions: deterministic
    drop = fg & (regions != keep)
    out[drop] = background
    return Cleaned(out, int(drop.sum()), n - 1)


def fill_holes(labels: npt.ArrayLike, *, background: int = 0) -> Cleaned:
    """Label the background voxels that foreground encloses.

    A hole is a region of background (6-connected in 3D, 4 in 2D: the complement
    of 26- / 8-connected foreground) that does not reach the array's border. Each
    of its voxels takes the label of the nearest foreground voxel within the
    hole's bounding box grown by one voxel, which holds the hole's whole rim.

    Parameters
    ----------
    labels : array_like of int
        A label map (any number of dimensions).
    background : int
        The background value.

    Returns
    -------
    Cleaned
        The new label map (a copy, same dtype), and how many voxels and holes
        were filled.

    Raises
    ------
    ValueError
        A float map with non-integer values.
    """
    arr = _label_map(labels, "fill_holes")
    out = arr.copy()
    fg = arr != background
    if arr.ndim == 0 or not fg.any():
        return Cleaned(out, 0, 0)
    holes = ndi.binary_fill_holes(fg) & ~fg
    regions, n = ndi.label(holes)
    for i, box in enumerate(ndi.find_objects(regions), start=1):
        grown = tuple(slice(max(b.start - 1, 0), b.stop + 1) for b in box)
        sub = out[grown]
        # indices of the nearest foreground voxel, for every voxel of the box
        idx = ndi.distance_transform_edt(~fg[grown], return_distances=False,
                                         return_indices=True)
        hole = regions[grown] == i
        sub[hole] = sub[tuple(ix[hole] for ix in idx)]
    return Cleaned(out, int(holes.sum()), n)


def _label_map(labels: npt.ArrayLike, name: str) -> np.ndarray:
    """``labels`` as an array, if it holds integers (of any dtype); else a clear error."""
    arr = np.asarray(labels)
    if arr.dtype.kind == "f" and not np.array_equal(arr, np.round(arr)):
        raise ValueError(f"{name} takes a label map of integers; this one has fractional "
                         "values (probabilities?). Decide the labels first.")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} takes a label map of integers, got dtype {arr.dtype}.")
    return arr
