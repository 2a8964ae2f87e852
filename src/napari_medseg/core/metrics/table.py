"""Metric tables as rows, and their CSV form (shared by the CLI and the Metrics widget).

One CSV per evaluation. Each row has a ``scope``: ``volume`` rows hold the
whole-volume numbers (one per class for segmentation, one for restoration);
``slice`` rows (only when per-slice numbers were asked for) hold one slice
along ``axis``. Undefined values (a class absent in both masks, a column that
does not apply to the row's scope) are empty cells; infinities are written
``inf``; other numbers with full precision (``repr``), so the CSV holds the
same numbers the CLI prints and the widget shows.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_medseg.core.metrics.slices import SliceDice, unit_of

__all__ = [
    "SEGMENTATION_COLUMNS",
    "RESTORATION_COLUMNS",
    "segmentation_rows",
    "restoration_rows",
    "write_csv",
]

SEGMENTATION_COLUMNS = ("scope", "axis", "slice", "label", "dice", "hd95_mm", "nsd", "pred_ml",
                        "ref_ml", "diff_ml", "relative_diff", "pred_voxels", "ref_voxels")


def segmentation_columns(unit: str = "ml") -> tuple[str, ...]:
    """:data:`SEGMENTATION_COLUMNS` with the sizes in ``unit`` (``"mm2"``: 2D areas)."""
    return tuple(c.replace("_ml", f"_{unit}") for c in SEGMENTATION_COLUMNS)
RESTORATION_COLUMNS = ("scope", "axis", "slice", "mae", "mse", "nmse", "nmse_variance", "psnr_db",
                       "ssim", "data_range")


def _num(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, (np.floating, float)):
        x = float(v)
        return None if math.isnan(x) else x
    if isinstance(v, (np.integer, int)):
        return int(v)
    return v


def segmentation_rows(report: Mapping[str, Any], *,
                      volume_diff: Mapping[int, Mapping[str, Any]] | None = None,
                      slices: SliceDice | None = None) -> list[dict[str, Any]]:
    """Rows of a segmentation evaluation.

    Parameters
    ----------
    report : mapping
        :func:`~napari_medseg.core.metrics.evaluate_segmentation`'s result
        (``"dice"``, ``"hd95_mm"``, ``"nsd"`` keyed by the label as a string;
        a missing key is an empty cell).
    volume_diff : mapping, optional
        :func:`~napari_medseg.core.metrics.slices.volume_difference`'s
        result, for the volume columns.
    slices : SliceDice, optional
        Adds one ``slice`` row per slice and class (Dice empty where the class
        is in neither mask of the slice).

    Returns
    -------
    list of dict
        Keyed by :data:`SEGMENTATION_COLUMNS`, or ``segmentation_columns("mm2")`` when
        ``volume_diff`` holds 2D areas.
    """
    rows: list[dict[str, Any]] = []
    labels = [int(k) for k in report.get("dice", {})]
    if volume_diff is not None:
        labels += [int(k) for k in volume_diff if int(k) not in labels]
    unit = unit_of(volume_diff or {})
    for v in labels:
        key = str(v)
        vd = (volume_diff or {}).get(v, {})
        rows.append({"scope": "volume", "axis": None, "slice": None, "label": v,
                     "dice": _num(report.get("dice", {}).get(key)),
                     "hd95_mm": _num(report.get("hd95_mm", {}).get(key)),
                     "nsd": _num(report.get("nsd", {}).get(key)),
                     f"pred_{unit}": _num(vd.get(f"pred_{unit}")),
                     f"ref_{unit}": _num(vd.get(f"ref_{unit}")),
                     f"diff_{unit}": _num(vd.get(f"diff_{unit}")),
                     "relative_diff": _num(vd.get("relative")),
                     "pred_voxels": None, "ref_voxels": None})
    if slices is not None:
        d = slices.dice
        for k, v in enumerate(slices.labels):
            for s in range(slices.n_slices):
                rows.append({"scope": "slice", "axis": slices.axis, "slice": s, "label": v,
                             "dice": _num(d[k, s]), "hd95_mm": None, "nsd": None,
                             f"pred_{unit}": None, f"ref_{unit}": None, f"diff_{unit}": None,
                             "relative_diff": None, "pred_voxels": int(slices.npred[k, s]),
                             "ref_voxels": int(slices.nref[k, s])})
    return rows


def restoration_rows(report: Mapping[str, Any], *,
                     slices: Mapping[str, np.ndarray] | None = None,
                     axis: int | None = None) -> list[dict[str, Any]]:
    """Rows of a restoration evaluation.

    Parameters
    ----------
    report : mapping
        :func:`~napari_medseg.core.metrics.evaluate_restoration`'s result.
    slices : mapping, optional
        :func:`~napari_medseg.core.metrics.image_maps.per_slice_errors`'s
        result: adds one ``slice`` row per slice (MAE, MSE, PSNR).
    axis : int, optional
        The axis ``slices`` was computed along (required with ``slices``).

    Returns
    -------
    list of dict
        Keyed by :data:`RESTORATION_COLUMNS`.
    """
    rows: list[dict[str, Any]] = [{
        "scope": "volume", "axis": None, "slice": None,
        "mae": _num(report.get("mae")), "mse": _num(report.get("mse")),
        "nmse": _num(report.get("nmse")), "nmse_variance": _num(report.get("nmse_variance")),
        "psnr_db": _num(report.get("psnr")), "ssim": _num(report.get("ssim")),
        "data_range": _num(report.get("data_range"))}]
    if slices is not None:
        if axis is None:
            raise ValueError("restoration_rows needs the axis the per-slice errors were "
                             "computed along; pass axis=... with slices=....")
        dr = _num(float(slices["data_range"])) if "data_range" in slices else None
        for s in range(len(slices["mae"])):
            rows.append({"scope": "slice", "axis": axis, "slice": s,
                         "mae": _num(slices["mae"][s]), "mse": _num(slices["mse"][s]),
                         "nmse": None, "nmse_variance": None,
                         "psnr_db": _num(slices["psnr"][s]), "ssim": None, "data_range": dr})
    return rows


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    return str(v)


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]],
              columns: Sequence[str]) -> Path:
    """Write ``rows`` (dicts keyed by ``columns``) as a CSV file with a header.

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    ValueError
        If a row has a key that is not a column (a programming error).
    """
    path = Path(path)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(columns)
        for row in rows:
            extra = set(row) - set(columns)
            if extra:
                raise ValueError(f"row has keys {sorted(extra)} that are not CSV columns "
                                 f"{list(columns)}.")
            w.writerow([_cell(row.get(c)) for c in columns])
    return path
