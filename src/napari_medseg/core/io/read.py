"""Reading NIfTI, PNG and TIFF files into :class:`~napari_medseg.core.io.volume.Volume`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from napari_medseg.core.io.volume import (
    NIFTI_SUFFIXES,
    RASTER_SUFFIXES,
    Volume,
    drop_trailing_singletons,
    smallest_int_type,
)


class _Unsupported(ValueError):
    """A file name with a suffix no reader handles."""


def read_volume(path: str | os.PathLike[str]) -> Volume:
    """Read a NIfTI, PNG or TIFF file.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        The file is not a readable image of a supported format; the message
        names the file and what to do.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file. Check the path.")
    name = p.name.lower()
    try:
        if name.endswith(NIFTI_SUFFIXES):
            import nibabel as nib

            img = nib.load(str(p))
            vol = Volume(_nifti_array(img), _usable_affine(img, p), str(p), img.header)
        elif name.endswith((".tif", ".tiff")):
            import tifffile

            vol = Volume(np.asarray(tifffile.imread(str(p))), np.eye(4), str(p))
        elif name.endswith(".png"):
            vol = Volume(_read_png(p), np.eye(4), str(p))
        else:
            raise _Unsupported(
                f"{p}: unsupported file type; expected one of "
                f"{', '.join(NIFTI_SUFFIXES + RASTER_SUFFIXES)}."
            )
    except Exception as exc:  # nibabel/gzip/tifffile raise many types for corrupt files
        if isinstance(exc, (FileNotFoundError, _Unsupported)):
            raise
        raise ValueError(f"{p}: cannot be read ({type(exc).__name__}: {exc}). The file looks "
                         "corrupt, truncated or of another format; export it again.") from exc
    return vol


def _nifti_array(img: Any) -> np.ndarray:
    """The voxel values, scaled by the header's slope and intercept, in a compact dtype.

    nibabel scales to float64 whatever the stored type; an int16 CT with slope 1
    and intercept -1024 would take 4x its size. Whole-number scaling of integers
    stays integer (the smallest type that holds the result), anything else is
    float32, which keeps every value a 16-bit file can hold.
    """
    proxy = img.dataobj
    slope, inter = (getattr(proxy, "slope", 1.0), getattr(proxy, "inter", 0.0))
    raw_dtype = img.get_data_dtype()
    if slope == 1.0 and inter == 0.0:
        return np.asarray(proxy)
    if raw_dtype.kind in "iu" and float(slope).is_integer() and float(inter).is_integer():
        raw = np.asarray(proxy.get_unscaled())
        if raw.size == 0:
            return raw.astype(np.int16)
        rmin, rmax = float(raw.min()), float(raw.max())
        # The type must hold the raw values, raw * slope, the intercept and the result.
        ends = [rmin, rmax, rmin * slope, rmax * slope, inter, rmin * slope + inter,
                rmax * slope + inter]
        t = smallest_int_type(min(ends), max(ends), (np.int16, np.int32, np.int64))
        if t is not None:
            out = raw.astype(t)
            if slope != 1:
                out *= t(slope)
            if inter != 0:
                out += t(inter)
            return out
    return np.asarray(img.get_fdata(dtype=np.float32))


def _usable_affine(img: Any, path: Path) -> np.ndarray:
    """The file's affine, with a zero or non-finite voxel size replaced by the header's.

    Some converters write single-slice files whose affine has a zero column; a
    layer of scale 0 cannot be shown and distances would be 0 mm.
    """
    aff = np.asarray(img.affine, dtype=float)
    nd = min(len(img.shape), 3)
    cols = np.sqrt((aff[:3, :nd] ** 2).sum(axis=0))
    bad = [i for i in range(nd) if not np.isfinite(cols[i]) or cols[i] <= 0]
    if not bad:
        return aff
    import warnings

    zooms = img.header.get_zooms()
    aff = aff.copy()
    for i in bad:
        z = float(zooms[i]) if i < len(zooms) and np.isfinite(zooms[i]) and zooms[i] > 0 else 1.0
        aff[:3, i] = 0.0
        aff[i, i] = z
    warnings.warn(f"{path}: the affine gives voxel axis/axes {bad} no size; using the header's "
                  f"voxel size ({', '.join(f'{aff[i, i]:g}' for i in bad)} mm) instead.",
                  stacklevel=3)
    return aff


def _read_png(p: Path) -> np.ndarray:
    """A PNG's pixels; palette (indexed) PNGs give their indices, which is how label maps
    are usually stored (expanded to RGB they would read as a 3-slice volume)."""
    from PIL import Image

    with Image.open(str(p)) as im:
        if im.mode == "P":
            idx = np.asarray(im)
            pal = np.asarray(im.getpalette() or [], np.int64).reshape(-1, 3)
            used = pal[np.unique(idx)] if pal.size else pal
            if used.size and np.all(used == used[:, :1]):
                return np.asarray(im.convert("L"))  # a grey image stored with a palette
            return idx
    import imageio.v3 as iio

    return np.asarray(iio.imread(str(p)))


def _colour_axis(path: str | os.PathLike[str], data: np.ndarray) -> bool:
    """Whether the last axis of a raster file's 3D array holds colours (RGB, RGBA, grey +
    alpha) rather than slices: PNG only."""
    if data.ndim != 3 or data.shape[-1] not in (2, 3, 4):
        return False
    # TIFF: (Y, X, 3) is as often a 3-slice volume as a colour image (tifffile tags both
    # RGB), so TIFF stacks stay slices.
    return str(path).lower().endswith(".png")


def colour_tagged_tiff(path: str | os.PathLike[str]) -> bool:
    """Whether a TIFF says its samples are colours (RGB, YCbCr, CMYK...), from its tags.

    :func:`read_spatial` reads such a file's samples as slices (a ``(Y, X, 3)`` volume is
    tagged RGB as often as a photo); a viewer asks this to leave colour files to a
    colour reader. False for other files and for TIFFs that cannot be read.
    """
    if not str(path).lower().endswith((".tif", ".tiff")):
        return False
    import tifffile

    try:
        with tifffile.TiffFile(str(path)) as tif:
            photometric = tif.pages[0].photometric
    except Exception:  # noqa: BLE001 - unreadable: read_volume will say why
        return False
    grey = (tifffile.PHOTOMETRIC.MINISWHITE, tifffile.PHOTOMETRIC.MINISBLACK,
            tifffile.PHOTOMETRIC.PALETTE)  # palette TIFFs hold label indices
    return photometric not in grey


def read_spatial(path: str | os.PathLike[str], *, allow_2d: bool = True) -> Volume:
    """Read a file that must hold one 2D or 3D scalar volume.

    A trailing singleton axis (e.g. ``(240, 240, 155, 1)``) is dropped; an alpha
    channel is dropped and grey stored as RGB becomes grey. A colour image is refused
    (read as a 3-slice volume, its colours became slices and its predictions landed in
    the alpha channel), as is anything else with more axes, saying how to split it.
    """
    vol = read_volume(path)
    data = drop_trailing_singletons(vol.data)
    if _colour_axis(path, data):
        colours = data[..., :1] if data.shape[-1] == 2 else data[..., :3]  # alpha dropped
        if not np.all(colours == colours[..., :1]):
            raise ValueError(
                f"{vol.path}: a colour (RGB) image of shape {data.shape}; napari-medseg reads "
                "single-channel images. Convert it to greyscale, or save each colour as its "
                "own file and pass the files as channels after --image.")
        data = colours[..., 0]
    if data.ndim > 3:
        raise ValueError(
            f"{vol.path}: expected a 3D volume, got a {data.ndim}D array of shape {data.shape}. "
            "Split it into one file per channel/time point (e.g. fslsplit) and pass each "
            "channel file after --image."
        )
    if data.ndim < 2 or (data.ndim == 2 and not allow_2d):
        raise ValueError(f"{vol.path}: expected a 2D or 3D image, got shape {data.shape}.")
    vol.data = data
    return vol
