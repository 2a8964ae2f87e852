"""File formats: NIfTI (keeps affine and voxel spacing), PNG and TIFF.

The only module that knows about file formats. Everything returns a
:class:`Volume` so spacing and affine travel with the array from the file
through training and prediction back to disk.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

NIFTI_SUFFIXES = (".nii", ".nii.gz")
RASTER_SUFFIXES = (".png", ".tif", ".tiff")
#: Integer-valued arrays with at most this many distinct values open as labels.
MAX_LABEL_VALUES = 64


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


class _Unsupported(ValueError):
    """A file name with a suffix no reader handles."""


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


def drop_trailing_singletons(data: np.ndarray) -> np.ndarray:
    """``(240, 240, 155, 1)`` -> ``(240, 240, 155)``: length-1 axes past the third dropped."""
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return data


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


#: Integer data whose NIfTI intent says "label map" opens as labels up to this many values.
MAX_INTENT_LABEL_VALUES = 65536
#: File-name words that mark a label map (atlases and parcellations have hundreds of values).
#: Matched as whole words of the file stem (runs of letters), so that ``aparc+aseg``,
#: ``sub-01_dseg`` and ``mask2d`` count but a skull-stripped ``t1_masked`` does not.
LABEL_NAME_WORDS = ("label", "labels", "labelmap", "seg", "dseg", "mask", "masks", "aseg",
                    "aparc", "parc", "atlas", "annot")
#: Token endings that also mark one: ``brainmask`` (BraTS), ``wmparc`` (FreeSurfer).
LABEL_NAME_ENDINGS = ("mask", "seg", "parc")
#: Word beginnings that also mark one: ``segmentation``, ``parcellation``, ``Parcels``,
#: ``atlases``, ``labeled``, ``annotations`` (``masked`` and ``unlabelled`` do not).
LABEL_NAME_STARTS = ("segment", "parcel", "atlas", "labeled", "labelled", "annot")
#: How many distinct values a file named like a label map may hold and still open as labels.
MAX_NAMED_LABEL_VALUES = 1000


def named_like_labels(path: str | os.PathLike[str] | None) -> bool:
    """Whether a file's name says it holds a label map.

    A word of the stem, a run of letters (``sub-01_desc-brain_mask2d`` -> ``sub``,
    ``desc``, ``brain``, ``mask``, ``d``), is one of :data:`LABEL_NAME_WORDS`, ends in
    one of :data:`LABEL_NAME_ENDINGS` or begins with one of :data:`LABEL_NAME_STARTS`.
    Other substrings do not count: ``masked`` and ``unlabelled`` name images.
    """
    words = re.findall(r"[a-z]+", file_stem(path or "").lower())
    return any(w in LABEL_NAME_WORDS or w.endswith(LABEL_NAME_ENDINGS)
               or w.startswith(LABEL_NAME_STARTS) for w in words)


def label_value_limit(vol: Volume) -> int:
    """How many distinct values ``vol`` may hold and still count as a label map.

    :data:`MAX_LABEL_VALUES` for an unknown array; more when the file says it is
    a label map: its NIfTI intent is ``label`` (TotalSegmentator writes that), or
    its name says so (:func:`named_like_labels`: FreeSurfer's aparc+aseg, atlases).
    """
    hdr = vol.header
    if hdr is not None:
        with contextlib.suppress(Exception):  # a header without intent fields
            if hdr.get_intent()[0] == "label":
                return MAX_INTENT_LABEL_VALUES
    if named_like_labels(vol.path):
        return MAX_NAMED_LABEL_VALUES
    return MAX_LABEL_VALUES


def as_label_array(data: np.ndarray, *, path: str | os.PathLike[str] | None = None
                   ) -> np.ndarray:
    """Integer label values of a label map, rounding integer-valued floats.

    int32 (what napari and the widgets expect) when the values fit, else int64:
    instance and connectomics ids go past 2**31 and a cast would wrap them.

    Raises
    ------
    ValueError
        A value beyond int64 (an unsigned 64-bit id); the message names ``path``.
    """
    arr = np.asarray(data)
    if np.issubdtype(arr.dtype, np.floating):
        arr = np.rint(arr)
    if arr.dtype == np.int32 or arr.size == 0:
        return arr.astype(np.int32, copy=False)
    # Python numbers compare exactly: a uint64 or float extreme against int64's bounds.
    lo, hi = _as_number(arr.min()), _as_number(arr.max())
    t = smallest_int_type(lo, hi, (np.int32, np.int64))
    if t is not None:
        return arr.astype(t, copy=False)
    raise ValueError(f"{path or 'the label map'}: label values span {lo}..{hi}, beyond the "
                     "64-bit signed range napari's Labels hold; renumber the labels (e.g. "
                     "skimage.segmentation.relabel_sequential) and open it again.")


def _as_number(v: Any) -> int | float:
    """A numpy scalar as an exact Python int (or float when not whole)."""
    f = float(v)
    return int(v) if np.issubdtype(np.asarray(v).dtype, np.integer) or f.is_integer() else f


def looks_like_labels(data: np.ndarray, *, max_values: int = MAX_LABEL_VALUES) -> bool:
    """Decide whether an array is a label map rather than an intensity image.

    Integer (or integer-valued float, as BraTS stores its labels) data with at
    most ``max_values`` distinct values, none below -1 (-1 marks unlabelled
    voxels of a sparse annotation), is a label map. Floats within 1e-3 of a
    whole number count as whole: a scaled header stores 1 as 0.99999997.
    """
    if data.dtype == bool:
        return True
    if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        return False
    flat = data.reshape(-1)
    # A cheap look at a subsample rejects most intensity images before np.unique.
    sample = flat[:: max(1, flat.size // 20000)]
    for arr in (sample, flat):
        if np.issubdtype(arr.dtype, np.floating):
            if not np.all(np.isfinite(arr)) or np.any(np.abs(arr - np.rint(arr)) > 1e-3):
                return False
            arr = np.rint(arr)
        if arr.size and arr.min() < -1:
            return False
        if len(np.unique(arr)) > max_values:
            return False
    return True


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


def smallest_int_type(lo: float, hi: float, candidates: Sequence[type]) -> Any:
    """The first of ``candidates`` (numpy integer types) whose range holds ``lo..hi``,
    or None. Pass Python numbers: they compare exactly with 64-bit ranges."""
    return next((t for t in candidates
                 if int(np.iinfo(t).min) <= lo and hi <= int(np.iinfo(t).max)), None)


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
