"""Whether an array is a label map rather than an intensity image, and its label values."""

from __future__ import annotations

import contextlib
import os
import re
from typing import Any

import numpy as np

from napari_medseg.core.io.volume import Volume, file_stem, smallest_int_type

#: Integer-valued arrays with at most this many distinct values open as labels.
MAX_LABEL_VALUES = 64
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
