"""The raters of one image as a table of distinct vote patterns (:class:`RaterVotes`).

Every statistic of :mod:`napari_medseg.core.raters` reads the raters through
this table: it is built once from the N label arrays and spread back to the
voxels with :meth:`RaterVotes.expand`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import numpy.typing as npt

#: Up to this many possible patterns (K**N) they are counted with np.bincount.
#: Read at call time from the package (``napari_medseg.core.raters._BINCOUNT_MAX``),
#: where it has always been set, so lowering it there still switches routes.
_BINCOUNT_MAX = 1 << 22
#: Voxels per block when packing and counting codes.
_BLOCK = 1 << 18


def _bincount_max() -> int:
    """The bincount/np.unique switch, as set on the :mod:`napari_medseg.core.raters` package."""
    pkg = sys.modules.get(__name__.rpartition(".")[0])
    return int(getattr(pkg, "_BINCOUNT_MAX", _BINCOUNT_MAX))

def _uint_for(n: int) -> np.dtype[Any]:
    """Smallest unsigned dtype holding values 0..n."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if n <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.uint64)


def _as_label_array(a: npt.ArrayLike, j: int) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype == bool:
        return arr.view(np.uint8)
    if arr.dtype.kind in "ui":
        return arr
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.rint(arr)):
            raise ValueError(
                f"Rater {j} holds non-integer values (dtype {arr.dtype}); raters must be label "
                "masks. Threshold probability maps first (e.g. p > 0.5)."
            )
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        return arr.astype(np.uint8 if lo >= 0 and hi < 256 else np.int64)
    raise ValueError(f"Rater {j} has dtype {arr.dtype}; expected an integer or boolean mask.")


def _present_values(a: np.ndarray) -> np.ndarray:
    lo, hi = int(a.min()), int(a.max())
    if hi - lo <= 1:
        return np.array(sorted({lo, hi}), dtype=np.int64)
    if lo >= 0 and hi < (1 << 16):
        return np.flatnonzero(np.bincount(a.reshape(-1), minlength=hi + 1)).astype(np.int64)
    return np.unique(a).astype(np.int64)


def _to_index(a: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Label values -> compact uint8 indices into ``labels``."""
    k = len(labels)
    if a.dtype == np.uint8 and np.array_equal(labels, np.arange(k)):
        return a
    if a.dtype.kind in "ui" and int(labels[0]) >= 0 and int(labels[-1]) < (1 << 16):
        lut = np.zeros(int(labels[-1]) + 1, np.uint8)
        lut[labels] = np.arange(k, dtype=np.uint8)
        return lut[a]
    return np.searchsorted(labels, a).astype(np.uint8)


@dataclass(frozen=True, eq=False)
class RaterVotes:
    """The raters of one image reduced to distinct vote patterns and their counts.

    Build it with :meth:`from_raters`; every function of this module accepts
    it in place of the list of arrays, so the volume is scanned once.

    Attributes
    ----------
    shape : tuple of int
        Shape of every rater's array.
    labels : np.ndarray
        ``(K,)`` label values, ascending; index ``k`` in :attr:`patterns`
        means ``labels[k]``. Binary votes always have ``K == 2`` with
        ``labels[0] == 0`` (background, or "not the foreground value" when
        ``foreground`` was given).
    patterns : np.ndarray
        ``(P, N)`` uint8: the label index each of the N raters gave, one row
        per distinct pattern.
    counts : np.ndarray
        ``(P,)`` int64 number of voxels with each pattern (sums to the voxel count).
    voxel_index : np.ndarray
        Flat ``(n_voxels,)`` slot of every voxel: its packed vote code (or,
        with very many raters, its pattern row).
    slots : np.ndarray
        ``(P,)`` slot of each pattern row; ``n_slots`` slots in all.
    binary : bool
        True for binary votes (``labels == (0, v)``).
    """

    shape: tuple[int, ...]
    labels: np.ndarray
    patterns: np.ndarray
    counts: np.ndarray
    voxel_index: np.ndarray
    slots: np.ndarray
    n_slots: int
    binary: bool

    @classmethod
    def from_raters(
        cls, raters: Sequence[npt.ArrayLike], *, foreground: int | None = None
    ) -> RaterVotes:
        """Scan N label arrays of one shape once.

        Parameters
        ----------
        raters : sequence of array_like
            One label array per rater (integer, bool, or integer-valued float).
        foreground : int, optional
            Binary view: voxels equal to this value are foreground, all others
            background (SimpleITK's ``ForegroundValue``). By default the label
            values decide: ``{0, v}`` is binary, more values multi-label.

        Raises
        ------
        ValueError
            No raters, shapes differ (the message names the rater indices),
            non-integer values, or more than 255 distinct labels.
        """
        if isinstance(raters, RaterVotes):
            return raters
        arrs = [_as_label_array(a, j) for j, a in enumerate(raters)]
        for j, a in enumerate(arrs):
            if foreground is None and a.dtype.kind == "i" and a.size and int(a.min()) < 0:
                # -1 marks unlabelled voxels elsewhere; counted here it would be a class
                raise ValueError(
                    f"Rater {j} holds negative values ({int(a.min())}; -1 marks unlabelled "
                    "voxels in training); rater statistics need every rater's label at every "
                    "voxel. Compare the raters on the region all of them labelled (crop it), "
                    "or set -1 to 0 where it means background.")
        if not arrs:
            raise ValueError("Need at least one rater's label array; got none.")
        shape = arrs[0].shape
        for j, a in enumerate(arrs[1:], start=1):
            if a.shape != shape:
                raise ValueError(
                    f"Rater {j} has shape {a.shape} but rater 0 has {shape}; every rater must "
                    "label the same image grid (resample the masks onto one grid)."
                )
        if arrs[0].size == 0:
            raise ValueError(f"Raters have an empty shape {shape}; nothing to compare.")
        if foreground is not None:
            fg = int(foreground)
            if fg == 0:
                raise ValueError("foreground=0 is the background value; pick the structure's "
                                 "label value (e.g. foreground=1).")
            idx = [(a == fg).view(np.uint8) for a in arrs]
            return cls._build(shape, np.array([0, fg], dtype=np.int64), idx, binary=True)
        present = np.unique(np.concatenate([_present_values(a) for a in arrs]))
        binary = len(present) <= 1 or (len(present) == 2 and present[0] == 0)
        if binary:
            fg = int(present[-1]) if present[-1] != 0 else 1
            labels = np.array([0, fg], dtype=np.int64)
            idx = [_to_index(a, labels) if present[0] == 0 else (a == fg).view(np.uint8)
                   for a in arrs]
            return cls._build(shape, labels, idx, binary=True)
        if len(present) > 255:
            raise ValueError(
                f"Raters hold {len(present)} distinct label values; at most 255 are supported "
                "(these look like intensity images or instance labels, not class masks)."
            )
        return cls._build(shape, present, [_to_index(a, present) for a in arrs], binary=False)

    @classmethod
    def _build(
        cls, shape: tuple[int, ...], labels: np.ndarray, idx: list[np.ndarray], *, binary: bool
    ) -> RaterVotes:
        k, n = len(labels), len(idx)
        flat = [i.reshape(-1) for i in idx]
        v = flat[0].size
        if n * math.log2(max(k, 2)) <= math.log2(_bincount_max()):
            # Pack each voxel's votes into one code; count codes block by block
            # (blocks stay in cache and bincount's int64 copy stays small).
            space = k**n
            dt = _uint_for(space - 1)
            code = np.empty(v, dt)
            counts = np.zeros(space, np.int64)
            tmp = np.empty(min(_BLOCK, v), dt)
            for s in range(0, v, _BLOCK):
                e = min(s + _BLOCK, v)
                out, t = code[s:e], tmp[: e - s]
                np.copyto(out, flat[0][s:e], casting="unsafe")
                for j in range(1, n):
                    np.multiply(flat[j][s:e], k**j, out=t, dtype=dt, casting="unsafe")
                    out += t
                counts += np.bincount(out, minlength=space)
            present = np.flatnonzero(counts)
            digits = (present[:, None] // (k ** np.arange(n, dtype=np.int64))[None, :]) % k
            return cls(shape, labels, digits.astype(np.uint8), counts[present], code,
                       present.astype(np.int64), space, binary)
        # Many possible patterns: unanimous voxels by label, the rest by np.unique.
        first = flat[0]
        split = np.zeros(v, bool)
        for f in flat[1:]:
            split |= f != first
        agree = np.bincount(first[~split], minlength=k).astype(np.int64)
        una = np.flatnonzero(agree)
        sub = np.stack([f[split] for f in flat], axis=1)  # (V_disagree, N)
        if n * math.log2(k) <= 63:
            weights = np.uint64(k) ** np.arange(n, dtype=np.uint64)
            codes = (sub.astype(np.uint64) * weights[None, :]).sum(axis=1, dtype=np.uint64)
            _, first_row, inverse, dis_counts = np.unique(
                codes, return_index=True, return_inverse=True, return_counts=True)
            dis_patterns = sub[first_row]
        else:
            dis_patterns, inverse, dis_counts = np.unique(
                sub, axis=0, return_inverse=True, return_counts=True)
        del sub
        pats = np.concatenate([np.repeat(una[:, None], n, axis=1).astype(np.uint8),
                               dis_patterns.astype(np.uint8)], axis=0)
        counts = np.concatenate([agree[una], dis_counts.astype(np.int64)])
        p = len(pats)
        dt = _uint_for(p - 1)
        lut = np.zeros(k, dt)
        lut[una] = np.arange(len(una))
        voxel_index = lut[first]
        voxel_index[split] = (len(una) + inverse.reshape(-1)).astype(dt)
        return cls(shape, labels, pats, counts, voxel_index, np.arange(p, dtype=np.int64), p,
                   binary)

    @property
    def n_raters(self) -> int:
        """Number of raters N."""
        return int(self.patterns.shape[1])

    @property
    def n_voxels(self) -> int:
        """Number of voxels (pixels) of the image."""
        return int(self.voxel_index.size)

    @property
    def n_patterns(self) -> int:
        """Number of distinct vote patterns P."""
        return int(self.patterns.shape[0])

    def one_hot(self) -> np.ndarray:
        """``(P, N, K)`` float64 one-hot of :attr:`patterns`."""
        k = len(self.labels)
        return (self.patterns[:, :, None] == np.arange(k)[None, None, :]).astype(np.float64)

    def votes(self) -> np.ndarray:
        """``(P, K)`` int64 number of raters giving each label, per pattern."""
        return self.one_hot().sum(axis=1).astype(np.int64)

    def expand(self, table: npt.ArrayLike) -> np.ndarray:
        """Spread a per-pattern table to the voxels.

        ``(P,)`` gives an array of :attr:`shape`; ``(P, C)`` gives ``(C, *shape)``.
        """
        t = np.asarray(table)
        if t.shape[0] != self.n_patterns or t.ndim > 2:
            raise ValueError(f"expand needs a ({self.n_patterns},) or ({self.n_patterns}, C) "
                             f"table, got {t.shape}.")
        full = np.zeros((self.n_slots, *t.shape[1:]), t.dtype)
        full[self.slots] = t
        if t.ndim == 1:
            return full[self.voxel_index].reshape(self.shape)
        return np.stack([full[:, c][self.voxel_index].reshape(self.shape)
                         for c in range(t.shape[1])])

    def pair_confusion(self) -> np.ndarray:
        """``(N, K, N, K)`` int64: ``[j, a, l, b]`` = voxels rater j calls a and rater l calls b."""
        n, k = self.n_raters, len(self.labels)
        a = self.one_hot().reshape(self.n_patterns, n * k)
        c = (a * self.counts[:, None].astype(np.float64)).T @ a
        return np.rint(c).astype(np.int64).reshape(n, k, n, k)


Raters = Union[Sequence[npt.ArrayLike], RaterVotes]


def _votes(raters: Raters, foreground: int | None = None) -> RaterVotes:
    if isinstance(raters, RaterVotes):
        if foreground is not None and (not raters.binary or raters.labels[1] != foreground):
            raise ValueError("foreground= cannot be applied to a prebuilt RaterVotes; pass "
                             "foreground to RaterVotes.from_raters instead.")
        return raters
    return RaterVotes.from_raters(raters, foreground=foreground)
