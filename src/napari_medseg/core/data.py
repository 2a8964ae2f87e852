"""Training data: label mapping, cases, cropping.

Resampling lives in :mod:`napari_medseg.core.resample`, intensity normalisation in
:mod:`napari_medseg.core.normalize`, patch sampling and augmentation in
:mod:`napari_medseg.core.sampling`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Value marking unlabelled voxels in a label volume (sparse annotation).
UNLABELLED = -1

#: More distinct values than this and an array is taken for an image, not labels.
MAX_CLASSES = 255


#: More foreground values than this in training labels: an instance mask or an image.
MAX_TRAIN_CLASSES = 64


def training_classes_problem(values: Sequence[int]) -> str | None:
    """Why label values are unfit to train a segmentation model on, in words; None if fine.

    Each value is a class to learn. An instance mask (one value per nucleus) or an 8-bit
    image passed as labels has tens to hundreds of values and would train that many
    classes: refused above :data:`MAX_TRAIN_CLASSES` foreground values, naming the fix.
    """
    fg = [int(v) for v in values if int(v) > 0]
    if len(fg) <= MAX_TRAIN_CLASSES:
        return None
    shown = ", ".join(str(v) for v in fg[:6])
    return (f"holds {len(fg)} foreground label values ({shown}, ...), more than the "
            f"{MAX_TRAIN_CLASSES} classes a model here learns: is it an instance mask (one "
            "value per object) or an image given as labels? For objects vs background, "
            "binarise it (every value above 0 becomes 1).")


def label_values_problem(labels: np.ndarray, *, allow_unlabelled: bool = True) -> str | None:
    """What makes an array unusable as a label map, in words; None when it is fine.

    Label values are whole numbers >= 0 (or -1, unlabelled, when ``allow_unlabelled``),
    stored as integers or as integer-valued floats, and few: at most
    :data:`MAX_CLASSES` distinct values. An intensity image passed by mistake fails
    one of these.
    """
    lab = np.asarray(labels)
    if lab.dtype == bool:
        return None
    if not np.issubdtype(lab.dtype, np.number):
        return f"holds {lab.dtype} data, not numbers"
    u = np.unique(lab)
    if np.issubdtype(u.dtype, np.floating):
        if not np.all(np.isfinite(u)):
            return "holds NaN or infinite values"
        off = u[np.abs(u - np.rint(u)) > 1e-3]
        if off.size:
            return (f"holds values that are not whole numbers (e.g. {float(off[0]):g}); is it "
                    "an image rather than a label map?")
        u = np.unique(np.rint(u))
    low = UNLABELLED if allow_unlabelled else 0
    if u.size and u[0] < low:
        return (f"holds the value {u[0]:g}; label values are 0 (background), 1, 2, ..."
                + (" and -1 (unlabelled)" if allow_unlabelled else ""))
    if u.size > MAX_CLASSES:
        return (f"holds {u.size} distinct values (at most {MAX_CLASSES} classes); is it an "
                "image rather than a label map?")
    return None


@dataclass(frozen=True)
class LabelMapping:
    """Label values as the user wrote them <-> contiguous class indices.

    ``values[0]`` is always 0 (background); ``{0, 1, 2, 4}`` maps to classes
    ``0..3`` and back.
    """

    values: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.values or self.values[0] != 0 or list(self.values) != sorted(set(self.values)):
            raise ValueError(f"Label values must be sorted, unique and start at 0, got {self.values}.")

    @classmethod
    def from_labels(cls, labels: Sequence[np.ndarray]) -> "LabelMapping":
        """Collect the values present in label volumes (unlabelled -1 excluded, 0 always in).

        Float labels are rounded, as :meth:`to_classes` rounds them (values stored as
        0.99999994 by a scaled header are 1). Check them first with
        :func:`label_values_problem`.
        """
        found: set[int] = {0}
        for lab in labels:
            u = np.unique(lab)
            if np.issubdtype(u.dtype, np.floating):
                u = np.unique(np.rint(u))
            found.update(int(v) for v in u if v != UNLABELLED)
        return cls(tuple(sorted(found)))

    @property
    def num_classes(self) -> int:
        """Number of classes including background."""
        return len(self.values)

    def to_classes(self, labels: np.ndarray) -> np.ndarray:
        """Map label values to class indices (int16); -1 stays -1.

        Raises
        ------
        ValueError
            A value the mapping does not know (e.g. a label the model never saw).
        """
        lab = np.asarray(labels)
        if np.issubdtype(lab.dtype, np.floating):
            lab = np.rint(lab)
        lab = lab.astype(np.int64, copy=False)
        vals = np.asarray(self.values, dtype=np.int64)
        idx = np.searchsorted(vals, lab)
        idx_c = np.clip(idx, 0, len(vals) - 1)
        known = (vals[idx_c] == lab) | (lab == UNLABELLED)
        if not known.all():
            bad = sorted(set(np.unique(lab[~known]).tolist()))[:10]
            raise ValueError(f"Label values {bad} are not among the known values {list(self.values)}.")
        out = idx_c.astype(np.int16)
        out[lab == UNLABELLED] = UNLABELLED
        return out

    def to_values(self, classes: np.ndarray) -> np.ndarray:
        """Map class indices back to the user's label values."""
        vals = np.asarray(self.values)
        dtype = np.uint8 if vals.max() < 256 else np.int32
        return vals.astype(dtype)[np.asarray(classes)]


def check_image(channels: Sequence[np.ndarray], names: Sequence[str] | None = None) -> np.ndarray:
    """Stack channels into (C, *spatial) float32 after checking shape and finiteness.

    Raises
    ------
    ValueError
        Channels differ in shape, or contain NaN/inf; the message names the channel.
    """
    if not channels:
        raise ValueError("No image channel given.")
    names = list(names) if names is not None else [f"channel {i}" for i in range(len(channels))]
    ref = np.shape(channels[0])
    for ch, nm in zip(channels, names):
        if np.shape(ch) != ref:
            raise ValueError(f"{nm} has shape {np.shape(ch)} but {names[0]} has {ref}; all channels "
                             "must share one grid. Resample them onto the same grid first.")
    img = np.stack([np.asarray(c, dtype=np.float32) for c in channels])
    bad = ~np.isfinite(img)
    if bad.any():
        c = int(np.argmax(bad.reshape(img.shape[0], -1).any(axis=1)))
        raise ValueError(f"{names[c]} contains {int(bad[c].sum())} NaN/inf voxels; replace them "
                         "(e.g. with 0) before training or prediction.")
    return img


def fingerprint(arr: np.ndarray) -> str:
    """Short content hash of an array (shape, dtype and a strided subsample)."""
    a = np.ascontiguousarray(arr)
    h = hashlib.sha256(f"{a.shape}{a.dtype}".encode())
    flat = a.reshape(-1)
    h.update(np.ascontiguousarray(flat[:: max(1, flat.size // 1_000_000)]).tobytes())
    return h.hexdigest()[:16]


def labelled_slices(labels: np.ndarray, axis: int) -> np.ndarray:
    """Which slices along ``axis`` hold any label (a value > 0): one bool per slice."""
    lab = np.asarray(labels)
    return np.any(lab > 0, axis=tuple(a for a in range(lab.ndim) if a != axis))


def painted_axis(labels: np.ndarray) -> tuple[int, list[float]] | None:
    """The axis a sparsely labelled volume looks painted along, and per axis a sparseness
    score (lower: more likely painted along it); None when nothing is labelled.

    Slices painted with gaps (every 2nd or 5th) leave unlabelled slices within the
    structure's extent along the painted axis only: when any axis shows such gaps, the
    score is the fraction of its extent's slices that hold labels. Without gaps (one
    slice, or a few adjacent ones) the painted axis is the one along which the labels
    span the smallest share of the volume. (The fraction of all slices alone picked the
    wrong axis for a tumour painted on every 2nd slice of a short axis.)
    """
    nz = np.asarray(labels) > 0
    if not nz.any():
        return None
    fill, share = [], []
    for a in range(nz.ndim):
        idx = np.flatnonzero(labelled_slices(nz, a))
        extent = int(idx[-1] - idx[0] + 1)
        fill.append(idx.size / extent)
        share.append(extent / nz.shape[a])
    score = fill if min(fill) < 0.9 else share
    best = min(range(nz.ndim), key=lambda a: (score[a], share[a]))
    return best, score


def fills_its_extent(labels: np.ndarray, axis: int) -> bool:
    """Whether every slice along ``axis`` between the first and last labelled one holds
    labels (a fully labelled structure, not slices painted with gaps)."""
    idx = np.flatnonzero(labelled_slices(labels, axis))
    return bool(idx.size) and idx.size == idx[-1] - idx[0] + 1


def bbox(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...]:
    """Bounding box of a boolean mask as slices, grown by ``margin`` voxels (whole array if empty)."""
    if not mask.any():
        return tuple(slice(0, n) for n in mask.shape)
    out = []
    for ax in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != ax)
        idx = np.flatnonzero(mask.any(axis=other))
        out.append(slice(max(0, int(idx[0]) - margin), min(mask.shape[ax], int(idx[-1]) + 1 + margin)))
    return tuple(out)


def rater_majority(raters: np.ndarray) -> np.ndarray:
    """Plurality vote of stacked class-index volumes, counting only raters that labelled a voxel.

    Parameters
    ----------
    raters : np.ndarray
        (R, *spatial) class indices, -1 where that rater left the voxel unlabelled.

    Returns
    -------
    np.ndarray
        (*spatial) int16 class indices. A rater's -1 is an abstention, not a
        vote for background; a voxel no rater labelled stays -1. Ties go to the
        lowest tied class, so background wins every tie it is part of (the
        conservative default of :func:`napari_medseg.core.raters.majority_vote`).
    """
    r = np.asarray(raters)
    top = int(r.max()) if r.size else -1
    if top < 0:
        return np.full(r.shape[1:], UNLABELLED, np.int16)
    # Running argmax over class counts keeps memory at two volumes, not K.
    best = np.full(r.shape[1:], UNLABELLED, np.int16)
    best_n = np.zeros(r.shape[1:], np.int32)
    for k in range(top + 1):
        n = (r == k).sum(axis=0, dtype=np.int32)
        better = n > best_n  # strict: an equal later count leaves the lower class
        best[better] = k
        best_n[better] = n[better]
    return best


@dataclass
class Case:
    """One training/validation case, ready for patch sampling.

    Attributes
    ----------
    image : np.ndarray
        (C, *spatial) float32, normalised, cropped and resampled.
    target : np.ndarray
        (*spatial) int16 class indices, -1 where unlabelled. With ``raters``
        it is their plurality vote (:func:`rater_majority`), used for
        validation, for the ``majority`` rater mode and for single-label code.
    spacing : tuple of float
        Voxel size after resampling.
    name : str
        For messages.
    raters : np.ndarray or None
        (R, *spatial) int16 class indices of R raters (-1 where a rater left a
        voxel unlabelled: that rater abstains there), or None for one label
        volume. Build multi-rater cases with :meth:`from_raters`.
    """

    image: np.ndarray
    target: np.ndarray
    spacing: tuple[float, ...]
    name: str = "case"
    raters: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.image.shape[1:] != self.target.shape:
            raise ValueError(f"{self.name}: image {self.image.shape[1:]} and labels "
                             f"{self.target.shape} differ in shape; resample the labels onto "
                             "the image grid.")
        if self.raters is not None:
            r = self.raters
            if r.ndim != self.target.ndim + 1 or r.shape[1:] != self.target.shape:
                raise ValueError(f"{self.name}: rater labels {self.raters.shape} must be (R, "
                                 f"*{self.target.shape}), one volume per rater on the image grid.")
            if self.raters.shape[0] < 1:
                raise ValueError(f"{self.name}: raters given with no label volume; pass at "
                                 "least one.")

    @classmethod
    def from_raters(cls, image: np.ndarray, raters: np.ndarray | Sequence[np.ndarray],
                    spacing: tuple[float, ...], name: str = "case") -> "Case":
        """A case labelled by several raters; ``target`` becomes their plurality vote.

        Parameters
        ----------
        image : np.ndarray
            (C, *spatial) normalised image.
        raters : np.ndarray or sequence of np.ndarray
            R class-index volumes of the image grid, -1 where a rater did not label.
        spacing : tuple of float
        name : str
        """
        stack = np.stack([np.asarray(r) for r in raters]).astype(np.int16)
        return cls(image, rater_majority(stack), spacing, name, stack)

    @property
    def n_raters(self) -> int:
        """Number of label volumes (1 without ``raters``)."""
        return 1 if self.raters is None else int(self.raters.shape[0])

    @property
    def labelled_fraction(self) -> float:
        """Fraction of voxels that carry a label (from at least one rater)."""
        return float((self.target >= 0).mean())
