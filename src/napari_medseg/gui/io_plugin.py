"""npe2 reader, writers and sample data.

They speak napari's layer-data tuples, which are plain Python; file-format
work lives in :mod:`napari_medseg.core.io`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_medseg.core import io
from napari_medseg.core.sample import PHANTOM_CLASSES, brain_phantom

LayerData = tuple[Any, dict[str, Any], str]


def get_reader(path: str | Sequence[str]) -> Callable[[str | Sequence[str]], list[LayerData]] | None:
    """Return :func:`read_nifti` for NIfTI paths, else None (napari tries another reader)."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or not all(io.is_nifti(p) for p in paths):
        return None
    return read_nifti


def volume_layer_kwargs(vol: io.Volume, name: str) -> dict[str, Any]:
    """Scale, translate and metadata for a volume so it overlays in world (mm) space."""
    nd = vol.data.ndim
    return {
        "name": name,
        "scale": vol.spacing[:nd],
        "translate": vol.origin[:nd],
        "metadata": {"affine": np.asarray(vol.affine), "spacing": vol.spacing[:nd],
                     "source_path": vol.path},
    }


def read_nifti(path: str | Sequence[str]) -> list[LayerData]:
    """Read one or more NIfTI files into Image or Labels layer data.

    Integer-valued data with few distinct values (BraTS stores labels as
    float32) opens as Labels; everything else as an Image.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    out: list[LayerData] = []
    for p in paths:
        vol = io.read_spatial(p)
        name = Path(p).name
        for suffix in io.NIFTI_SUFFIXES:
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
        kwargs = volume_layer_kwargs(vol, name)
        if io.looks_like_labels(vol.data):
            out.append((vol.data.astype(np.int32, copy=False), kwargs, "labels"))
        else:
            out.append((vol.data, kwargs, "image"))
    return out


def _affine_from_meta(meta: dict[str, Any], ndim: int) -> np.ndarray:
    """The layer's original affine if its scale/translate still match, else one built from them."""
    scale = list(meta.get("scale", [1.0] * ndim))[-ndim:]
    translate = list(meta.get("translate", [0.0] * ndim))[-ndim:]
    stored = (meta.get("metadata") or {}).get("affine")
    if stored is not None:
        aff = np.asarray(stored, dtype=float)
        if aff.shape == (4, 4) and np.allclose(io.spacing_from_affine(aff, ndim), scale) and \
                np.allclose(aff[:ndim, 3], translate):
            return aff
    return io.affine_from_spacing(scale, translate)


def _write(path: str, data: Any, meta: dict[str, Any], *, labels: bool) -> list[str]:
    arr = np.asarray(data)
    if labels:
        arr = arr.astype(np.int32 if arr.max(initial=0) > 32767 else np.int16)
    return [io.write_nifti(path, arr, _affine_from_meta(meta, arr.ndim))]


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
