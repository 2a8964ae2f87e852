"""npe2 reader, writers and sample data.

They speak napari's layer-data tuples, which are plain Python; file-format
work lives in :mod:`napari_medseg.core.io`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from napari_medseg.core import io
from napari_medseg.core.sample import PHANTOM_CLASSES, brain_phantom
from napari_medseg.gui.layers import display_geometry, world_affine

LayerData = tuple[Any, dict[str, Any], str]
#: A 4D file with at most this many volumes opens as one layer per volume (modalities,
#: class probabilities); with more, as one 4D layer (a time series).
MAX_CHANNEL_LAYERS = 8


def get_reader(path: str | Sequence[str]
               ) -> Callable[[str | Sequence[str]], list[LayerData]] | None:
    """A reader for NIfTI, PNG and TIFF paths, else None (napari tries another reader).

    NIfTI always gives :func:`read_nifti`. PNG and TIFF are read here, once, with
    :func:`napari_medseg.core.io.read_spatial` (palette PNGs as their indices), so
    that masks open as Labels; a file that is not one scalar 2D/3D image (a colour
    photo or an RGB-tagged TIFF, a multi-channel stack) gives None and napari's own
    reader takes it.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or not all(io.is_supported(p) for p in paths):
        return None
    if all(io.is_nifti(p) for p in paths):
        return read_nifti
    layers: list[LayerData] = []
    for p in paths:
        if io.is_nifti(p):
            layers.extend(read_nifti(p))
            continue
        got = read_raster(p)
        if got is None:
            return None
        layers.extend(got)
    # Already read (deciding colour vs scalar needs the pixels): hand napari the result.
    return lambda _path: layers


def read_raster(path: str | os.PathLike[str]) -> list[LayerData] | None:
    """A PNG or TIFF as one Image or Labels layer (the same decision as NIfTI), or None.

    None when the file is not one scalar 2D/3D image: a colour PNG or RGB-tagged TIFF,
    a stack with channels, a file that cannot be read. napari's builtin reader then
    opens it.
    """
    if io.colour_tagged_tiff(path):  # read_spatial would take its colours for slices
        return None
    try:
        vol = io.read_spatial(path)
    except (OSError, ValueError):
        return None
    return _layers_of(vol, io.file_stem(path))


def volume_layer_kwargs(vol: io.Volume, name: str, *, extra_axis: bool = False
                        ) -> dict[str, Any]:
    """Scale, translate (rotate for flipped axes) and metadata so a volume overlays in mm.

    ``extra_axis``: the layer has a leading non-spatial axis (time points of a 4D file).
    """
    nd = min(vol.data.ndim, 3)
    geo = display_geometry(vol.affine, nd)
    kw: dict[str, Any] = {
        "name": name,
        **geo,
        "metadata": {"affine": np.asarray(vol.affine), "spacing": vol.spacing[:nd],
                     "source_path": vol.path, "header": vol.header},
    }
    if extra_axis:
        kw["scale"] = (1.0, *kw["scale"])
        kw["translate"] = (0.0, *kw["translate"])
        if "rotate" in kw:  # the whole direction matrix: an oblique tilt has off-diagonals
            rot = np.eye(4)
            rot[1:, 1:] = np.asarray(kw["rotate"], dtype=float)
            kw["rotate"] = rot
    return kw


def read_nifti(path: str | Sequence[str]) -> list[LayerData]:
    """Read one or more NIfTI files into Image or Labels layer data.

    Integer-valued data with few distinct values (BraTS stores labels as
    float32) opens as Labels; everything else as an Image.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    out: list[LayerData] = []
    for p in paths:
        vol = io.read_volume(p)
        out.extend(_layers_of(vol, io.file_stem(p)))
    return out


def _layers_of(vol: io.Volume, name: str) -> list[LayerData]:
    """Layer data for one file: 2D/3D as one layer; 4D as channels or a time series."""
    data = io.drop_trailing_singletons(vol.data)
    if data.dtype.names:  # NIfTI RGB24 / RGBA32: a structured dtype napari cannot show
        rgb = np.stack([data[c] for c in data.dtype.names[:3]], axis=-1)
        kw = volume_layer_kwargs(io.Volume(rgb[..., 0], vol.affine, vol.path), name)
        return [(rgb, {**kw, "rgb": True}, "image")]
    if data.ndim not in (2, 3, 4):
        raise ValueError(f"{vol.path}: napari-medseg opens 2D, 3D and 4D NIfTI files; this one "
                         f"has shape {data.shape}.")
    # One decision for the whole file: a stack of raters' masks is labels in every volume.
    whole = io.Volume(data, vol.affine, vol.path, vol.header)
    if io.looks_like_labels(data, max_values=io.label_value_limit(whole)):
        data, kind = io.as_label_array(data, path=vol.path), "labels"
    else:
        kind = "image"
    if data.ndim == 4:
        n = data.shape[3]
        spatial = io.Volume(data[..., 0], vol.affine, vol.path, vol.header)
        if n <= MAX_CHANNEL_LAYERS:
            # Modalities, class probabilities, raters: one layer each, as the widgets take them.
            kw = volume_layer_kwargs(spatial, name)
            return [(np.ascontiguousarray(data[..., c]), {**kw, "name": f"{name} [{c}]"},
                     kind) for c in range(n)]
        # A time series: one 4D layer, time first, so napari gives it a slider.
        return [(np.moveaxis(data, 3, 0), volume_layer_kwargs(spatial, name, extra_axis=True),
                 kind)]
    return [(data, volume_layer_kwargs(whole, name), kind)]


def _affine_from_meta(meta: dict[str, Any], ndim: int) -> np.ndarray:
    """The voxel-to-world affine of a layer napari hands a writer (its state and metadata)."""
    scale = list(meta.get("scale", [1.0] * ndim))[-ndim:]
    translate = list(meta.get("translate", [0.0] * ndim))[-ndim:]
    return world_affine(meta.get("metadata") or {}, scale, translate, meta.get("rotate"),
                        meta.get("shear"), meta.get("affine"))


def _write(path: str, data: Any, meta: dict[str, Any], *, labels: bool) -> list[str]:
    if meta.get("rgb"):
        raise ValueError(f"{path}: '{meta.get('name', 'this layer')}' is an RGB layer; NIfTI "
                         "holds one value per voxel. Save it as .png or .tif instead.")
    if meta.get("multiscale"):
        data = data[0]
    arr = np.asarray(data)
    if labels:
        arr = _label_file_array(arr, path)
    aff = _affine_from_meta(meta, arr.ndim)
    if arr.ndim == 4:  # a time series opened time first: NIfTI keeps time last
        arr = np.moveaxis(arr, 0, 3)
    # The file's header (qform/sform codes, units, description) while the layer is unmoved.
    header = (meta.get("metadata") or {}).get("header")
    return [io.write_nifti(path, arr, aff, header=header)]


#: Label types a writer tries, smallest first: a 0/1 mask stays uint8 on disk, and ids past
#: 2**31 (instance / connectomics tools) keep their values instead of wrapping.
_LABEL_FILE_TYPES = (np.uint8, np.int16, np.int32, np.uint32, np.int64, np.uint64)


def _label_file_array(arr: np.ndarray, path: str) -> np.ndarray:
    """A Labels layer's values in the smallest integer type that holds them all.

    Raises
    ------
    ValueError
        Values no integer type holds (fractions from a float array, NaN, or a span
        wider than 64 bits); the message names ``path``.
    """
    if arr.dtype == bool or arr.size == 0:
        return arr.astype(np.uint8)
    if arr.dtype.kind == "f" and (not np.all(np.isfinite(arr)) or np.any(arr != np.rint(arr))):
        raise ValueError(f"{path}: a label map holds whole numbers; this layer has fractions "
                         "or NaN. Round it, or save it as an image.")
    lo, hi = int(arr.min()), int(arr.max())  # Python ints compare exactly with uint64's range
    t = io.smallest_int_type(lo, hi, _LABEL_FILE_TYPES)
    if t is not None:
        return arr.astype(t)
    raise ValueError(f"{path}: label values span {lo}..{hi}, more than one 64-bit integer "
                     "type holds; renumber the labels (e.g. "
                     "skimage.segmentation.relabel_sequential) and save again.")


def write_image(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write an Image layer to NIfTI with its original (or scale-derived) affine."""
    return _write(path, data, meta, labels=False)


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a Labels layer to NIfTI with its original (or scale-derived) affine."""
    return _write(path, data, meta, labels=True)


#: The raters' masks mark the lesion as 1 (the tissue map calls it 4).
RATER_CLASSES = {0: "background", 1: "lesion"}


def sample_phantom() -> list[LayerData]:
    """The brain phantom: T1, FLAIR, tissue labels and the simulated raters' lesion masks."""
    ph = brain_phantom()

    def common(classes: dict[int, str]) -> dict[str, Any]:
        # A metadata dict per layer: the class names differ, and one shared dict would let
        # an edit to one layer's metadata show up on the others.
        return {"scale": ph.spacing,
                "metadata": {"affine": ph.affine, "spacing": ph.spacing, "classes": dict(classes)}}

    layers: list[LayerData] = [
        (ph.t1, {**common(PHANTOM_CLASSES), "name": "phantom T1", "colormap": "gray"}, "image"),
        (ph.flair, {**common(PHANTOM_CLASSES), "name": "phantom FLAIR", "colormap": "gray",
                    "visible": False}, "image"),
        (ph.labels, {**common(PHANTOM_CLASSES), "name": "phantom tissue", "opacity": 0.4},
         "labels"),
    ]
    for k, r in enumerate(ph.raters, 1):
        layers.append((r, {**common(RATER_CLASSES), "name": f"rater {k}",
                           "visible": False}, "labels"))
    return layers
