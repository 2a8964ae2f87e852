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


#: Metadata that says where a layer lies (and, for saving, the file it came from).
GEOMETRY_METADATA = ("affine", "spacing", "source_path", "header")


def display_geometry(affine: np.ndarray, ndim: int) -> dict[str, Any]:
    """How a layer shows a file of this voxel-to-world ``affine``: scale, translate, rotate.

    napari's world is the file's world (mm) while each voxel axis runs mostly
    along the world axis of the same index: the direction cosines (flips, as
    BraTS' ``diag(-1, -1, 1)``, and oblique tilts) go in ``rotate``, so a Labels
    layer napari makes from the image (New labels copies scale, translate and
    rotate) saves back to the same place. An axis-permuting affine (e.g. a
    sagittal acquisition stored i -> z) is shown on its voxel grid (spacing and
    origin only): napari's slider would cut it across its slices. The file's
    affine always travels in the layer's metadata.
    """
    aff = np.asarray(affine, dtype=float)
    nd = min(ndim, 3)
    lin = aff[:nd, :nd]
    scale = np.sqrt((aff[:3, :nd] ** 2).sum(axis=0))
    geo: dict[str, Any] = {"scale": tuple(float(v) for v in scale),
                           "translate": tuple(float(v) for v in aff[:nd, 3])}
    direction = lin / np.where(scale > 0, scale, 1.0)
    in_plane = np.allclose(aff[nd:3, :nd], 0.0, atol=1e-6)  # a 2D file's axes stay in x-y
    orthonormal = np.allclose(direction.T @ direction, np.eye(nd), atol=1e-4)
    unpermuted = all(int(np.argmax(np.abs(direction[:, j]))) == j for j in range(nd))
    if in_plane and orthonormal and unpermuted and not np.allclose(direction, np.eye(nd),
                                                                    atol=1e-6):
        signs = np.sign(np.diag(direction))
        exact = np.allclose(direction, np.diag(signs), atol=1e-6)  # flips only: exact +-1
        geo["rotate"] = np.diag(signs) if exact else direction
    return geo


def _transform_matrix(scale: Sequence[float], translate: Sequence[float], rotate: Any,
                      shear: Any, napari_affine: Any) -> np.ndarray:
    """napari's data-to-world matrix ((n+1) x (n+1)) from a layer's transform settings."""
    from napari.utils.transforms import Affine

    nd = len(scale)
    t = Affine(scale=scale, translate=translate, ndim=nd,
               rotate=None if rotate is None else np.asarray(rotate, dtype=float),
               shear=None if shear is None else np.asarray(shear, dtype=float))
    if napari_affine is not None:
        t = Affine(affine_matrix=np.asarray(napari_affine, dtype=float), ndim=nd).compose(t)
    return np.asarray(t.affine_matrix, dtype=float)


def world_affine(meta: dict[str, Any] | None, scale: Sequence[float],
                 translate: Sequence[float], rotate: Any = None, shear: Any = None,
                 napari_affine: Any = None) -> np.ndarray:
    """A layer's 4x4 voxel-to-world affine, for training, results and saving.

    The file's own affine (``meta["affine"]``) while the layer still shows it as
    the reader placed it; otherwise the layer's transform as napari applies it
    (scale, translate, rotate, shear and its affine), e.g. for a Labels layer
    made in napari or an image the user moved. A 4D layer's last three axes
    are the spatial ones.
    """
    nd = len(scale)
    sp = slice(max(nd - 3, 0), nd)  # spatial axes
    m = _transform_matrix(scale, translate, rotate, shear, napari_affine)
    lin, off = m[sp, sp], m[sp, nd]
    k = lin.shape[0]
    stored = (meta or {}).get("affine")
    if stored is not None:
        aff = np.asarray(stored, dtype=float)
        if aff.shape == (4, 4):
            shown = display_geometry(aff, k)
            want = _transform_matrix(shown["scale"], shown["translate"], shown.get("rotate"),
                                     None, None)
            if np.allclose(want[:k, :k], lin, atol=1e-6) and np.allclose(want[:k, k], off,
                                                                           atol=1e-4):
                return aff
    out = np.eye(4)
    if stored is not None and np.asarray(stored).shape == (4, 4) and k < 3:
        out[2, 2] = float(np.linalg.norm(np.asarray(stored, dtype=float)[:3, 2])) or 1.0
    out[:k, :k] = lin
    out[:k, 3] = off
    return out


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
    rotate = np.asarray(layer.rotate, dtype=float)
    shear = np.asarray(layer.shear, dtype=float)
    napari_affine = np.asarray(layer.affine.affine_matrix, dtype=float)
    aff = world_affine(meta, scale, translate, rotate, shear, napari_affine)
    spacing = tuple(abs(s) for s in scale)  # a user may flip an axis with a negative scale
    geometry: dict[str, Any] = {
        "scale": scale,
        "translate": translate,
        "metadata": {**{k: v for k, v in meta.items() if k in GEOMETRY_METADATA},
                     "affine": aff, "spacing": spacing},
    }
    if not np.allclose(rotate, np.eye(rotate.shape[0])):
        geometry["rotate"] = rotate
    if np.any(shear != 0):
        geometry["shear"] = shear
    if not np.allclose(napari_affine, np.eye(napari_affine.shape[0])):
        geometry["affine"] = napari_affine
    return LayerArray(arr, spacing, translate, aff, str(layer.name), geometry)


def image_layers(viewer: Any, *, inputs_only: bool = False) -> list[Any]:
    """Image layers of the viewer (RGB layers excluded: one layer is one channel).

    ``inputs_only`` leaves out the probability / uncertainty layers a model made.
    """
    from napari.layers import Image

    return [lay for lay in viewer.layers if isinstance(lay, Image) and not lay.rgb
            and not (inputs_only and "model" in (lay.metadata or {}))]


def rgb_note(viewer: Any) -> str:
    """A sentence on the RGB layers the channel pickers leave out, or "" when none: an RGB
    layer missing from the list looked like a bug."""
    from napari.layers import Image

    rgb = [lay.name for lay in viewer.layers if isinstance(lay, Image) and lay.rgb]
    if not rgb:
        return ""
    return (f" RGB layers ({', '.join(repr(n) for n in rgb[:3])}) are not listed: a channel is "
            "one grey image; split one with the layer's context menu (Split RGB) or convert "
            "it to grey.")


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


def place_on(layer: Any, like: LayerArray) -> None:
    """Move one of the widgets' output layers onto ``like``'s grid, as :func:`add_array`
    places a new one (a reused TP/FP/FN or SSIM layer when the compared pair changed)."""
    if grid_problem(layer_to_array(layer, copy=False), like) is None:
        return
    geo, nd = like.geometry, len(like.spacing)
    layer.scale = geo["scale"]
    layer.translate = geo["translate"]
    layer.rotate = geo.get("rotate", np.eye(nd))
    layer.shear = geo.get("shear", np.zeros(nd * (nd - 1) // 2))
    layer.affine = geo.get("affine", np.eye(nd + 1))
    layer.metadata = {**{k: v for k, v in (layer.metadata or {}).items()
                         if k not in GEOMETRY_METADATA}, **geo["metadata"]}


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


#: Layers whose scale, translate or affine differ by less than this (mm) share one grid.
GRID_TOLERANCE_MM = 0.01


def grid_problem(a: LayerArray, b: LayerArray, what: str = "Layers") -> str | None:
    """Why ``a`` and ``b`` do not lie on one voxel grid (shape, scale, place), or None.

    Voxels pair by index in training and comparison, so two layers of one shape
    placed apart in the viewer would pair voxels that do not overlap on screen.
    """
    if a.shape != b.shape:
        return (f"{what} '{a.name}' {a.shape} and '{b.name}' {b.shape} differ in shape; they "
                "must share one grid (resample one onto the other).")
    tol = GRID_TOLERANCE_MM
    same_scale_place = (np.allclose(a.spacing, b.spacing, rtol=0, atol=tol)
                        and np.allclose(a.translate, b.translate, rtol=0, atol=tol))
    if same_scale_place and np.allclose(a.affine, b.affine, rtol=0, atol=tol):
        return None
    if same_scale_place:  # the flips / rotation differ: not shown in napari's layer controls
        def turn(x: LayerArray) -> str:
            n = min(len(x.spacing), 3)
            return "axes " + " ".join("+" if v >= 0 else "-" for v in np.diag(x.affine)[:n])

        return (f"{what} '{a.name}' ({turn(a)}) and '{b.name}' ({turn(b)}) have the same scale "
                "and translate but are flipped or rotated differently (files store that in "
                "their affine): their voxels would pair up although they do not overlap on "
                f"screen. Make the labels with napari's New labels button while '{a.name}' is "
                f"selected, or in the console: layer.rotate = viewer.layers['{a.name}'].rotate.")

    def where(x: LayerArray) -> str:
        return (f"scale {tuple(round(v, 4) for v in x.spacing)}, translate "
                f"{tuple(round(v, 3) for v in x.translate)}")

    return (f"{what} '{a.name}' ({where(a)}) and '{b.name}' ({where(b)}) do not lie on one "
            "grid: their voxels would pair up although they do not overlap on screen. "
            "Give them the same scale and translate (layer properties) first.")


def get_layer(viewer: Any, name: str) -> Any:
    """The layer called ``name``; an InputError saying so when it has gone (removed or renamed)."""
    if name in viewer.layers:
        return viewer.layers[name]
    from napari_medseg.gui.widget_base import InputError

    raise InputError(f"Layer '{name}' is no longer in the viewer (removed or renamed); pick "
                     "the inputs again.")


class LayerNameWatch:
    """Call ``on_rename(old, new)`` whenever a layer of ``viewer`` is renamed.

    napari's layer-list events say nothing about names; the widgets' pickers list
    layers by name, so without this a rename left them pointing at nothing. The
    owner keeps this object (napari holds bound-method callbacks weakly).
    """

    def __init__(self, viewer: Any, on_rename: Any) -> None:
        self._names: dict[int, str] = {}
        self._on_rename = on_rename
        viewer.layers.events.inserted.connect(self._inserted)
        for layer in viewer.layers:
            self._watch(layer)

    def _watch(self, layer: Any) -> None:
        self._names[id(layer)] = layer.name
        layer.events.name.connect(self._renamed)

    def _inserted(self, event: Any) -> None:
        self._watch(event.value)

    def _renamed(self, event: Any) -> None:
        layer = event.source
        old, new = self._names.get(id(layer)), str(layer.name)
        self._names[id(layer)] = new
        if old is not None and old != new:
            self._on_rename(old, new)


def rename_in_pickers(pickers: Sequence[Any], old: str, new: str) -> None:
    """Rename ``old`` to ``new`` in layer pickers (combo boxes, list widgets), keeping choices."""
    for w in pickers:
        if hasattr(w, "findText"):  # QComboBox
            i = w.findText(old)
            if i >= 0:
                w.setItemText(i, new)
        else:  # QListWidget: the item keeps its check state
            for i in range(w.count()):
                if w.item(i).text() == old:
                    w.item(i).setText(new)
