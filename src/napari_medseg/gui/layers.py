"""napari layers <-> arrays, spacing and affine.

The only module that reads ``layer.data`` / ``layer.scale`` or creates layers
for the widgets: data crosses the GUI boundary here, once, as plain numpy
arrays with their voxel spacing (mm) and a 4x4 voxel-to-world affine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_medseg.core import io


@dataclass(frozen=True)
class LayerArray:
    """A layer's data as a numpy array with its geometry.

    Attributes
    ----------
    data : np.ndarray
        A copy of the layer data (painting in the viewer does not change it).
    spacing : tuple of float
        Voxel size per axis (the layer's scale), mm.
    translate : tuple of float
        The layer's translate (world position of voxel 0).
    affine : np.ndarray
        4x4 voxel-to-world affine: the file's original one when the layer still
        sits where the file put it, else one built from scale and translate.
    name : str
    geometry : dict
        Keyword arguments that place a new layer exactly on this one
        (``scale``, ``translate``, ``affine``, ``metadata``).
    """

    data: np.ndarray
    spacing: tuple[float, ...]
    translate: tuple[float, ...]
    affine: np.ndarray
    name: str
    geometry: dict[str, Any]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)


def _affine(meta: dict[str, Any], scale: Sequence[float], translate: Sequence[float]
            ) -> np.ndarray:
    nd = len(scale)
    stored = (meta or {}).get("affine")
    if stored is not None:
        aff = np.asarray(stored, dtype=float)
        if aff.shape == (4, 4) and nd <= 3 and \
                np.allclose(io.spacing_from_affine(aff, nd), scale) and \
                np.allclose(aff[:nd, 3], translate):
            return aff
    return io.affine_from_spacing(list(scale)[:3], list(translate)[:3])


def layer_to_array(layer: Any, *, copy: bool = True) -> LayerArray:
    """Read a napari Image or Labels layer.

    Multiscale layers give their full-resolution level. ``copy`` protects the
    array from painting while a worker uses it.
    """
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    arr = np.array(data, copy=copy) if copy else np.asarray(data)
    scale = tuple(float(s) for s in layer.scale)
    translate = tuple(float(t) for t in layer.translate)
    meta = dict(layer.metadata or {})
    aff = _affine(meta, scale, translate)
    napari_affine = np.asarray(layer.affine.affine_matrix, dtype=float)
    geometry: dict[str, Any] = {
        "scale": scale,
        "translate": translate,
        "metadata": {**{k: v for k, v in meta.items() if k in ("affine", "spacing", "source_path")},
                     "affine": aff, "spacing": scale},
    }
    if not np.allclose(napari_affine, np.eye(napari_affine.shape[0])):
        geometry["affine"] = napari_affine
    return LayerArray(arr, scale, translate, aff, str(layer.name), geometry)


def image_layers(viewer: Any, *, inputs_only: bool = False) -> list[Any]:
    """Image layers of the viewer (RGB layers excluded: one layer is one channel).

    ``inputs_only`` leaves out the probability / uncertainty layers a model made.
    """
    from napari.layers import Image

    return [lay for lay in viewer.layers if isinstance(lay, Image) and not lay.rgb
            and not (inputs_only and "model" in (lay.metadata or {}))]


def labels_layers(viewer: Any) -> list[Any]:
    from napari.layers import Labels

    return [lay for lay in viewer.layers if isinstance(lay, Labels)]


def unique_name(viewer: Any, base: str) -> str:
    """``base``, or ``base [2]``, ``base [3]``... whichever no layer has yet."""
    names = {lay.name for lay in viewer.layers}
    if base not in names:
        return base
    k = 2
    while f"{base} [{k}]" in names:
        k += 1
    return f"{base} [{k}]"


def add_array(viewer: Any, data: np.ndarray, like: LayerArray, name: str, *,
              kind: str = "image", **kwargs: Any) -> Any:
    """Add ``data`` as a new layer placed exactly on ``like``; never replaces a layer.

    ``kind`` is ``"image"`` or ``"labels"``; extra keyword arguments go to
    ``viewer.add_image`` / ``viewer.add_labels`` (colormap, opacity...).
    """
    kw = {**like.geometry, **kwargs}
    kw["metadata"] = {**like.geometry.get("metadata", {}), **kwargs.get("metadata", {})}
    kw["name"] = unique_name(viewer, name)
    if kind == "labels":
        return viewer.add_labels(data, **kw)
    return viewer.add_image(data, **kw)


def displayed_index(viewer: Any, layer: Any, axis: int) -> int:
    """The data index of ``layer`` along ``axis`` at the viewer's current position."""
    point = viewer.dims.point
    nd = layer.ndim
    world = np.asarray(point[-nd:], dtype=float)
    data_pt = layer.world_to_data(world)
    idx = int(np.round(data_pt[axis]))
    return int(np.clip(idx, 0, layer.data.shape[axis] - 1))


def slider_axis(viewer: Any, layer: Any) -> int | None:
    """The layer axis the viewer's slider moves along (2D view of a 3D layer), else None."""
    if layer.ndim != 3 or viewer.dims.ndisplay != 2:
        return None
    offset = viewer.dims.ndim - layer.ndim
    hidden = [a - offset for a in viewer.dims.not_displayed if a - offset >= 0]
    return hidden[-1] if hidden else None
