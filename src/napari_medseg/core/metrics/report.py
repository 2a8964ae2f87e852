"""Every overlap metric of every label in one report, and its JSON-safe form."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from napari_medseg.core.metrics.overlap import (
    _as_labels,
    _check_spacing,
    _dice_from_counts,
    _label_index,
    _label_stats,
)
from napari_medseg.core.metrics.slices import size_unit, voxel_size
from napari_medseg.core.metrics.surface import (
    _check_tolerance,
    _hd_from_distances,
    _nsd_from_distances,
    _surface_distances,
    _union_box,
)

__all__ = ["evaluate_segmentation", "to_jsonable"]


def evaluate_segmentation(
    pred: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    spacing: Sequence[float],
    labels: Iterable[int] | None = None,
    tolerance_mm: float = 1.0,
) -> dict[str, Any]:
    """Dice, HD95, NSD and volumes for each label of two label arrays.

    Parameters
    ----------
    pred, target : array_like of int
        Label arrays of the same shape (2D or 3D).
    spacing : sequence of float
        Voxel size in mm along each array axis.
    labels : iterable of int, optional
        Label values to evaluate; defaults to the nonzero values present in
        either array (background ``0`` only when listed).
    tolerance_mm : float, default 1.0
        NSD tolerance in mm.

    Returns
    -------
    dict
        ``{"dice": {"<v>": float|None}, "hd95_mm": {"<v>": float|None},
        "nsd": {"<v>": float|None}, "absent": [v, ...],
        "volume_ml": {"<v>": {"pred": ml, "ref": ml}}}``, keyed by the label
        value as a string. Labels absent in both arrays get ``None`` metrics
        and are listed in ``"absent"``; a label present in only one array gets
        Dice 0, NSD 0 and HD95 ``inf``. Volumes are voxel counts times the
        voxel volume, in ml (1 ml = 1000 mm^3); 2D inputs have no thickness:
        ``"area_mm2"`` in its place, in mm^2.
        ``inf`` is not valid JSON: write the result through
        :func:`to_jsonable`.

    Raises
    ------
    ValueError
        If the shapes differ, an array is not integer, ``spacing`` is
        malformed or ``tolerance_mm`` is negative.
    """
    p, t = _as_labels(pred, target)
    sp = _check_spacing(spacing, p.ndim)
    tol = _check_tolerance(tolerance_mm)
    labs, inter, npred, nref = _label_stats(p, t, labels)
    size_key = "area_mm2" if size_unit(p.ndim) == "mm2" else "volume_ml"
    result: dict[str, Any] = {"dice": {}, "hd95_mm": {}, "nsd": {}, "absent": [], size_key: {}}
    n = len(labs)
    if n == 0:
        return result
    dices = _dice_from_counts(labs, inter, npred, nref)
    voxel = voxel_size(sp)
    # Bounding boxes of every label in one pass per array.
    pi, ti = _label_index(p, labs), _label_index(t, labs)
    boxes_p = ndimage.find_objects(pi, max_label=n)
    boxes_t = ndimage.find_objects(ti, max_label=n)
    for k, v in enumerate(labs, start=1):
        key = str(v)
        result["dice"][key] = dices[v]
        result[size_key][key] = {
            "pred": int(npred[k - 1]) * voxel,
            "ref": int(nref[k - 1]) * voxel,
        }
        bp, bt = boxes_p[k - 1], boxes_t[k - 1]
        if bp is None and bt is None:
            result["absent"].append(v)
            result["hd95_mm"][key] = None
            result["nsd"][key] = None
            continue
        if bp is None or bt is None:
            result["hd95_mm"][key] = math.inf
            result["nsd"][key] = 0.0
            continue
        box = _union_box(bp, bt, p.shape)
        d = _surface_distances(pi[box] == k, ti[box] == k, sp)
        assert isinstance(d, tuple)  # both non-empty here
        result["hd95_mm"][key] = _hd_from_distances(d[0], d[1], 95.0)
        result["nsd"][key] = _nsd_from_distances(d[0], d[1], tol)
    return result


def to_jsonable(d: Any) -> Any:
    """Copy a metrics result into plain JSON-safe Python objects.

    ``inf``/``-inf``/``nan`` become the strings ``"inf"``/``"-inf"``/``"nan"``,
    ``None`` stays ``None`` (JSON ``null``), numpy scalars and arrays become
    Python numbers and lists, tuples become lists and mapping keys become
    strings.

    Parameters
    ----------
    d : object
        A (nested) dict / list / number, e.g. from :func:`evaluate_segmentation`.

    Returns
    -------
    object
        The same structure, safe for ``json.dumps(..., allow_nan=False)``.
    """
    if isinstance(d, Mapping):
        return {str(k): to_jsonable(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [to_jsonable(v) for v in d]
    if isinstance(d, np.ndarray):
        return [to_jsonable(v) for v in d.tolist()]
    if isinstance(d, (bool, np.bool_)):
        return bool(d)
    if isinstance(d, (int, np.integer)):
        return int(d)
    if isinstance(d, (float, np.floating)):
        x = float(d)
        if math.isnan(x):
            return "nan"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return x
    return d
