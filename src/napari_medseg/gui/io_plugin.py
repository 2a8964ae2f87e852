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


def get_reader(path: str | Sequence[str]) -> Callable[[str | Sequence[str]], list[LayerData]] | None:
    """Return :func:`read_nifti` for NIfTI paths, else None (napari tries another reader)."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or not all(io.is_nifti(p) for p in paths):
        return None
    return read_nifti


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
        if "rotate" in kw:
            kw["rotate"] = np.diag([1.0, *np.diag(kw["rotate"])])
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
    if data.ndim == 4:
        n = data.shape[3]
        spatial = io.Volume(data[..., 0], vol.affine, vol.path, vol.header)
        if n <= MAX_CHANNEL_LAYERS:
            # Modalities or class probabilities: one layer each, as the widgets take channels.
            kw = volume_layer_kwargs(spatial, name)
            return [(np.ascontiguousarray(data[..., c]), {**kw, "name": f"{name} [{c}]"},
                     "image") for c in range(n)]
        # A time series: one 4D layer, time first, so napari gives it a slider.
        return [(np.moveaxis(data, 3, 0), volume_layer_kwargs(spatial, name, extra_axis=True),
                 "image")]
    vol = io.Volume(data, vol.affine, vol.path, vol.header)
    kwargs = volume_layer_kwargs(vol, name)
    if io.looks_like_labels(data, max_values=io.label_value_limit(vol)):
        return [(io.as_label_array(data), kwargs, "labels")]
    return [(data, kwargs, "image")]


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
    if labels:  # the smallest type that holds the values: a 0/1 mask stays uint8 on disk
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        kind = next((t for t in (np.uint8, np.int16) if np.iinfo(t).min <= lo and
                     hi <= np.iinfo(t).max), np.int32)
        arr = arr.astype(kind)
    aff = _affine_from_meta(meta, arr.ndim)
    if arr.ndim == 4:  # a time series opened time first: NIfTI keeps time last
        arr = np.moveaxis(arr, 0, 3)
    # The file's header (qform/sform codes, units, description) while the layer is unmoved.
    header = (meta.get("metadata") or {}).get("header")
    return [io.write_nifti(path, arr, aff, header=header)]


def write_image(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write an Image layer to NIfTI with its original (or scale-derived) affine."""
    return _write(path, data, meta, labels=False)


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a Labels layer to NIfTI with its original (or scale-derived) affine."""
    return _write(path, data, meta, labels=True)


def sample_phantom() -> list[LayerData]:
    """The brain phantom: T1, FLAIR, tissue labels and the simulated raters' lesion masks."""
    ph = brain_phantom()
    meta = {"affine": ph.affine, "spacing": ph.spacing, "classes": PHANTOM_CLASSES}
    common = {"scale": ph.spacing, "metadata": meta}
    layers: list[LayerData] = [
        (ph.t1, {**common, "name": "phantom T1", "colormap": "gray"}, "image"),
        (ph.flair, {**common, "name": "phantom FLAIR", "colormap": "gray", "visible": False},
         "image"),
        (ph.labels, {**common, "name": "phantom tissue", "opacity": 0.4}, "labels"),
    ]
    for k, r in enumerate(ph.raters, 1):
        layers.append((r, {**common, "name": f"rater {k}", "visible": False}, "labels"))
    return layers
