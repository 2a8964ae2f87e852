"""Writing NIfTI (with the affine and header), PNG and TIFF, always atomically."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from napari_medseg.core.io.volume import RASTER_SUFFIXES, is_nifti, smallest_int_type


def _umask() -> int:
    """The process's file-creation mask (read, not changed, where the OS allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (briefly process-wide)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], *, suffix: str | None = None) -> Iterator[str]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one step.

    A crash or an exception while writing leaves any earlier file intact and no
    temporary behind, so a reader never sees half a file. The temporary keeps
    ``path``'s suffixes (``suffix`` overrides), which some writers use to pick the format.
    """
    p = Path(path)
    ext = suffix if suffix is not None else ("".join(p.suffixes) or ".tmp")
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=ext, dir=str(p.parent))
    os.close(fd)
    try:
        yield tmp
        # mkstemp makes the file owner-only; give it the mode a plain open() would.
        os.chmod(tmp, p.stat().st_mode & 0o7777 if p.exists() else 0o666 & ~_umask())
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_nifti(
    path: str | os.PathLike[str],
    data: np.ndarray,
    affine: np.ndarray | None = None,
    *,
    header: Any = None,
) -> str:
    """Write ``data`` as NIfTI with ``affine``, atomically (temp file, rename).

    Parameters
    ----------
    path : str or PathLike
        Target; ``.nii`` or ``.nii.gz``.
    data : np.ndarray
        2D or 3D array (booleans are stored as uint8).
    affine : np.ndarray or None
        4x4 voxel-to-world; identity when None.
    header : nibabel header or None
        Reused (units, descriptions) when given; dtype and scaling are reset
        to the data's. While ``affine`` is still the header's own, its qform and
        sform keep their codes (an MNI-space sform stays MNI, the scanner qform
        stays); otherwise both are ``affine`` with code 1 (scanner).

    Returns
    -------
    str
        The path written.
    """
    import nibabel as nib

    p = Path(path)
    if not is_nifti(p):
        raise ValueError(f"{p}: NIfTI output needs a .nii or .nii.gz name.")
    p.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(data)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    arr = _narrow_wide_integers(arr)
    aff = np.eye(4) if affine is None else np.asarray(affine, dtype=float)
    hdr = header.copy() if header is not None else None
    img = nib.Nifti1Image(arr, aff, header=hdr, dtype=arr.dtype)
    img.set_data_dtype(arr.dtype)
    img.header.set_slope_inter(1.0, 0.0)
    img.header["cal_min"] = img.header["cal_max"] = 0  # the source's display window, not ours
    qform, qcode, scode = aff, 1, 1
    if header is not None and _same_affine(header, aff):
        q, qc = header.get_qform(coded=True)
        _, sc = header.get_sform(coded=True)
        if q is not None and int(qc) > 0:
            qform, qcode = q, int(qc)
        scode = int(sc) if int(sc) > 0 else 1
    img.set_qform(qform, code=qcode)
    img.set_sform(aff, code=scode)
    if img.header.get_xyzt_units()[0] == "unknown":
        img.header.set_xyzt_units(xyz="mm")
    with atomic_write(p) as tmp:
        nib.save(img, tmp)
    return str(p)


def _narrow_wide_integers(arr: np.ndarray) -> np.ndarray:
    """64-bit integers in the narrowest of int32 / uint32 that holds them, else unchanged.

    Other viewers read 64-bit NIfTI poorly, but a cast that does not fit wraps the
    values silently (2**33 became 0), so values beyond 32 bits stay 64-bit.
    """
    if arr.dtype not in (np.int64, np.uint64):
        return arr
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    t = smallest_int_type(lo, hi, (np.int32, np.uint32))
    return arr if t is None else arr.astype(t)


def _same_affine(header: Any, affine: np.ndarray) -> bool:
    """Whether ``affine`` is still the one ``header`` describes (nothing moved the data)."""
    try:
        return bool(np.allclose(header.get_best_affine(), affine, atol=1e-4))
    except Exception:  # noqa: BLE001 - not a NIfTI header: nothing to keep
        return False


def png_array(data: np.ndarray, path: str | os.PathLike[str] = "the PNG") -> np.ndarray:
    """``data`` as a PNG stores it: whole numbers in 8 or 16 bits (label values up to
    65535; an int32 array could not be written at all), other data unchanged."""
    a = np.asarray(data)
    if a.dtype.kind not in "biu" or a.dtype.itemsize == 1:
        return a
    lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
    if lo < 0 or hi > 65535:
        raise ValueError(f"{path}: PNG holds values 0..65535, these span {lo}..{hi}; write "
                         ".tif or .nii.gz.")
    return a.astype(np.uint8 if hi <= 255 else np.uint16)


def write_raster(path: str | os.PathLike[str], data: np.ndarray) -> str:
    """Write a 2D array as PNG, or any array as TIFF, atomically."""
    p = Path(path)
    with atomic_write(p) as tmp:
        if p.name.lower().endswith(".png"):
            import imageio.v3 as iio

            iio.imwrite(tmp, png_array(data, p), extension=".png")
        else:
            import tifffile

            # minisblack: a (Y, X, 3) volume is not a colour image
            tifffile.imwrite(tmp, np.asarray(data), photometric="minisblack")
    return str(p)


def write_volume(
    path: str | os.PathLike[str], data: np.ndarray, affine: np.ndarray | None = None, *,
    header: Any = None,
) -> str:
    """Write NIfTI (with affine) or PNG/TIFF, chosen by the file name."""
    if is_nifti(path):
        return write_nifti(path, data, affine, header=header)
    if str(path).lower().endswith(RASTER_SUFFIXES):
        return write_raster(path, data)
    raise ValueError(f"{path}: unsupported output type; use .nii.gz, .png or .tif.")
