"""Several raters' labels of one image: agreement, consensus and soft-label scores.

Everything here works on a :class:`RaterVotes` table built once from the N
label arrays: every voxel is reduced to its *vote pattern* (the tuple of the N
labels it received), the distinct patterns are found with one ``np.bincount``
on a packed code (``sum_j label_j * K**j``; bits for binary masks), and each
pattern is kept with its voxel count. All voxels with one pattern are
indistinguishable to every statistic in this module -- pairwise Dice, Cohen's
and Fleiss' kappa, vote fraction, entropy, majority vote and STAPLE's EM all
see the raters only through the votes -- so computing them on the pattern
table (a few dozen to a few thousand rows) and gathering the answer back to the
voxels once is *exact*, not an approximation, and fast: STAPLE's EM touches the
full volume only to build the table and to write the probability map.
Counts are int64 and all sums are float64, so volumes above 2**24 voxels (where
a float32 accumulator stops counting) come out right.

Conventions
-----------
* Raters are integer (or integer-valued float, or bool) arrays of one shape.
  A set of masks whose values are ``{0, v}`` is *binary* (foreground ``v``);
  more values make it *multi-label*; ``foreground=v`` forces a binary view
  (``== v`` against everything else, SimpleITK's ``ForegroundValue``).
* Undefined entries (Dice of two raters that both lack a structure, kappa
  when both raters use a single category) are ``NaN`` in the matrices returned
  here and ``None`` in :func:`rater_report` (JSON ``null``). Scalars are
  ``None``.
* Identical raters (e.g. BU-BIL's ``expert2_amira``/``expert2_imagej``, which
  are pixel-identical in the shared data copy: one person counted twice) are
  *kept*: they are reported by :func:`identical_raters` and in the report's
  ``identical_raters`` / ``notes``, and majority vote and STAPLE treat them
  as independent raters, i.e. that person's opinion is counted twice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

import numpy as np
import numpy.typing as npt

from napari_medseg.core.metrics import dice

__all__ = [
    "RaterVotes",
    "StapleResult",
    "cohen_kappa",
    "disagreement",
    "fleiss_kappa",
    "identical_raters",
    "majority_vote",
    "pairwise_dice",
    "pairwise_kappa",
    "qubiq_dice",
    "rater_report",
    "soft_dice_per_level",
    "staple",
    "vote_entropy",
    "vote_fraction",
]

#: Probabilities are clipped to this before logs: a vote pattern that no
#: rater model can produce gets a defined posterior instead of 0/0.
_TINY = 1e-300
#: Up to this many possible patterns (K**N) they are counted with np.bincount.
_BINCOUNT_MAX = 1 << 22
#: Voxels per block when packing and counting codes.
_BLOCK = 1 << 18
#: QUBIQ's thresholds, as exact decimal literals (0.1 .. 0.9).
QUBIQ_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

# --------------------------------------------------------------------------- votes


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
        if n * math.log2(max(k, 2)) <= math.log2(_BINCOUNT_MAX):
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


# --------------------------------------------------------------------------- agreement


def pairwise_dice(raters: Raters) -> dict[int, np.ndarray]:
    """Dice of every pair of raters, for every foreground label.

    Parameters
    ----------
    raters : sequence of array_like or RaterVotes
        N label arrays of one shape.

    Returns
    -------
    dict of int to np.ndarray
        ``{label: (N, N) float64}``, symmetric. An entry is ``NaN`` when both
        raters lack the label (undefined -- :func:`napari_medseg.core.metrics.dice`
        returns ``None`` there), ``0.0`` when only one has it; the diagonal is
        1 (or NaN for a rater without the label). Label 0 is not scored.
        Values equal ``metrics.dice_per_class`` of each pair, computed from
        the pattern table in one matrix product instead of N(N-1)/2 scans.
    """
    vt = _votes(raters)
    conf = vt.pair_confusion()
    out: dict[int, np.ndarray] = {}
    n = vt.n_raters
    for k, lab in enumerate(vt.labels.tolist()):
        if lab == 0:
            continue
        inter = conf[:, k, :, k].astype(np.float64)
        size = np.diagonal(inter).copy()
        denom = size[:, None] + size[None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            d = np.where(denom > 0, 2.0 * inter / np.where(denom > 0, denom, 1), np.nan)
        out[int(lab)] = d.reshape(n, n)
    return out


def _kappa_from_confusion(c: np.ndarray) -> float | None:
    """Cohen's kappa of a K x K count matrix; None when chance agreement is 1."""
    total = int(c.sum())
    rows = [int(x) for x in c.sum(axis=1)]
    cols = [int(x) for x in c.sum(axis=0)]
    expected = sum(r * q for r, q in zip(rows, cols))  # exact integers
    if total == 0 or expected == total * total:
        return None
    po = int(np.trace(c)) / total
    pe = expected / (total * total)
    return (po - pe) / (1.0 - pe)


def pairwise_kappa(raters: Raters) -> np.ndarray:
    """Cohen's kappa of every pair of raters, over all labels and all voxels.

    Returns
    -------
    np.ndarray
        ``(N, N)`` float64, symmetric. ``NaN`` where kappa is undefined: both
        raters give one and the same label to every voxel (chance agreement
        is 1, e.g. two empty masks).

    Notes
    -----
    ``kappa = (p_o - p_e) / (1 - p_e)`` with ``p_o`` the fraction of voxels
    the two agree on and ``p_e = sum_k r_k c_k / V**2`` from the raters'
    label totals. Background voxels count: on a small structure in a large
    image kappa behaves like Dice, on a large one it discounts chance overlap.
    """
    vt = _votes(raters)
    conf = vt.pair_confusion()
    n = vt.n_raters
    out = np.full((n, n), np.nan)
    for j in range(n):
        for m in range(j, n):
            kap = _kappa_from_confusion(conf[j, :, m, :])
            out[j, m] = out[m, j] = np.nan if kap is None else kap
    return out


def cohen_kappa(a: npt.ArrayLike, b: npt.ArrayLike) -> float | None:
    """Cohen's kappa of two label arrays (``None`` when undefined, see :func:`pairwise_kappa`)."""
    vt = RaterVotes.from_raters([a, b])
    return _kappa_from_confusion(vt.pair_confusion()[0, :, 1, :])


def fleiss_kappa(raters: Raters) -> float | None:
    """Fleiss' kappa of all raters over all voxels and labels.

    ``kappa = (P_bar - P_e) / (1 - P_e)`` with ``P_i = (sum_k n_ik^2 - N) /
    (N (N - 1))`` the agreeing rater pairs at voxel i, ``P_bar`` its mean and
    ``P_e = sum_k p_k^2`` from the overall label proportions ``p_k``.

    Returns
    -------
    float or None
        ``None`` with a single rater (no pairs) or when every rater gives one
        and the same label everywhere (``P_e = 1``: undefined).
    """
    vt = _votes(raters)
    n = vt.n_raters
    if n < 2:
        return None
    votes = vt.votes().astype(np.float64)
    c = vt.counts.astype(np.float64)
    totals = (votes * c[:, None]).sum(axis=0)
    if np.count_nonzero(totals) <= 1:
        return None
    v = float(vt.n_voxels)
    p_i = ((votes**2).sum(axis=1) - n) / (n * (n - 1))
    p_bar = float((p_i * c).sum() / v)
    p_k = totals / (v * n)
    p_e = float((p_k**2).sum())
    return (p_bar - p_e) / (1.0 - p_e)


def identical_raters(raters: Raters) -> list[list[int]]:
    """Groups (of 2 or more rater indices) whose arrays are voxel-for-voxel identical.

    In the shared BU-BIL copy ``expert2_amira`` and ``expert2_imagej`` (and
    the dataset's ``gold_standard``) form such a group: one person's mask
    counted several times. Majority vote and STAPLE would weigh that person
    once per copy; pass each person once if that is not intended.
    """
    vt = _votes(raters)
    n = vt.n_raters
    pats = vt.patterns
    groups: list[list[int]] = []
    seen: set[int] = set()
    for j in range(n):
        if j in seen:
            continue
        same = [m for m in range(j + 1, n)
                if m not in seen and np.array_equal(pats[:, j], pats[:, m])]
        if same:
            groups.append([j, *same])
            seen.update(same)
    return groups


def vote_fraction(
    raters: Raters, *, label: int | None = None, dtype: npt.DTypeLike = np.float32
) -> np.ndarray:
    """Per-voxel fraction of raters giving ``label`` (default: any nonzero label).

    Parameters
    ----------
    raters : sequence of array_like or RaterVotes
        N label arrays of one shape.
    label : int, optional
        Label value to count; by default every nonzero label counts.
    dtype : dtype
        float32 (default) saves memory; pass float64 to get ``m/N`` exactly
        as the float64 literals (``0.2 > 0.2`` is False in float64 but
        ``float32(0.2) > 0.2`` is True -- it matters when thresholding).

    Returns
    -------
    np.ndarray
        Values in ``[0, 1]``, the raters' shape. For binary masks this is the
        soft "rater average" target (QUBIQ's continuous ground truth).
    """
    vt = _votes(raters)
    return vt.expand(_fraction_table(vt, label).astype(dtype))


def _fraction_table(vt: RaterVotes, label: int | None) -> np.ndarray:
    votes = vt.votes()
    labs = vt.labels.tolist()
    if label is None:
        sel = [k for k, v in enumerate(labs) if v != 0]
    elif label in labs:
        sel = [labs.index(label)]
    else:
        sel = []
    return votes[:, sel].sum(axis=1) / float(vt.n_raters)  # float64: exact k/N


def vote_entropy(raters: Raters) -> np.ndarray:
    """Per-voxel Shannon entropy (bits) of the raters' label distribution.

    0 where all raters agree; 1 bit for a 50/50 split of two labels; at most
    ``log2(min(K, N))``. float32, the raters' shape.
    """
    vt = _votes(raters)
    p = vt.votes() / float(vt.n_raters)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0).sum(axis=1)
    return vt.expand(np.maximum(h, 0.0).astype(np.float32))


def disagreement(raters: Raters) -> np.ndarray:
    """Boolean map: True where not all raters give the same label."""
    vt = _votes(raters)
    return vt.expand((vt.patterns != vt.patterns[:, :1]).any(axis=1))


# --------------------------------------------------------------------------- consensus

TiePolicy = Literal["low", "high", "undecided"]


def _consensus_dtype(labels: Sequence[int]) -> np.dtype[Any]:
    lo, hi = min(labels), max(labels)
    if lo >= 0:
        return _uint_for(hi)
    return np.dtype(np.int32 if -(2**31) <= lo and hi < 2**31 else np.int64)


def _majority_table(vt: RaterVotes, tie: TiePolicy, undecided_label: int | None
                    ) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-pattern label value of the vote, tie flags and the undecided value."""
    if tie not in ("low", "high", "undecided"):
        raise ValueError(f"tie must be 'low', 'high' or 'undecided', got {tie!r}.")
    votes = vt.votes()
    best = votes.max(axis=1, keepdims=True)
    winners = votes == best
    tied = winners.sum(axis=1) > 1
    k = winners.shape[1]
    low = np.argmax(winners, axis=1)
    high = k - 1 - np.argmax(winners[:, ::-1], axis=1)
    labs = vt.labels
    und = int(labs.max()) + 1 if undecided_label is None else int(undecided_label)
    out = labs[high if tie == "high" else low].astype(np.int64)
    if tie == "undecided":
        if und in labs.tolist():
            raise ValueError(f"undecided_label {und} is one of the raters' labels "
                             f"{labs.tolist()}; pick an unused value.")
        out = np.where(tied, und, out)
    return out, tied, und


def majority_vote(
    raters: Raters,
    *,
    tie: TiePolicy = "low",
    undecided_label: int | None = None,
    foreground: int | None = None,
) -> np.ndarray:
    """Per-voxel most frequent label (plurality vote).

    Parameters
    ----------
    raters : sequence of array_like or RaterVotes
        N label arrays of one shape.
    tie : {"low", "high", "undecided"}
        Tie policy, applied when several labels share the most votes (for
        binary masks: exactly half the raters say foreground, only possible
        with an even N). ``"low"`` (default) takes the smallest tied label
        value, so background wins every tie it is part of (conservative);
        ``"high"`` the largest (foreground wins binary ties); ``"undecided"``
        writes ``undecided_label`` (default: largest label + 1, as ITK's
        ``LabelVotingImageFilter``).
    undecided_label : int, optional
        Value for tied voxels with ``tie="undecided"``.
    foreground : int, optional
        Binary view of multi-valued masks (see :meth:`RaterVotes.from_raters`).

    Returns
    -------
    np.ndarray
        Label array in the raters' label values; unsigned dtype when no label
        is negative. With ``foreground`` the result holds ``0``/``foreground``.
        Identical raters each count (see :func:`identical_raters`).
    """
    vt = _votes(raters, foreground)
    table, _, und = _majority_table(vt, tie, undecided_label)
    labs = vt.labels.tolist() + ([und] if tie == "undecided" else [])
    return vt.expand(table.astype(_consensus_dtype(labs)))



@dataclass(frozen=True, eq=False)
class StapleResult:
    """STAPLE's estimate of the hidden true segmentation and of each rater.

    Attributes
    ----------
    probability : np.ndarray
        Binary: P(voxel is foreground), the raters' shape (what SimpleITK's
        ``STAPLEImageFilter`` returns). Multi-label: ``(K, *shape)``
        posterior of each label, summing to 1 over the first axis.
    consensus : np.ndarray
        Binary: ``probability > threshold`` as ``0``/foreground value (a voxel
        at exactly the threshold is background). Multi-label: the label of
        largest posterior (ties: smallest label). Decided from the float64
        per-pattern posteriors.
    labels : tuple of int
        Label values (binary: ``(0, foreground)``).
    confusion : np.ndarray
        ``(N, K, K)``: ``[j, s, l]`` = P(rater j says ``labels[l]`` | truth is
        ``labels[s]``); rows sum to 1. A truth label with no expected voxels
        has an undefined row, reported as the identity row.
    sensitivity, specificity : np.ndarray
        Binary: ``(N,)`` per rater (SimpleITK's ``GetSensitivity()`` /
        ``GetSpecificity()``). Multi-label: ``(N, K)`` one-vs-rest per label.
        Undefined values (no true foreground / no true background) are 1.0.
    prior : np.ndarray
        ``(K,)`` fixed prior of each label: the mean vote fraction (times
        ``confidence_weight`` for the binary foreground, as ITK).
    iterations : int
        EM rounds performed (SimpleITK's ``GetElapsedIterations()`` counts
        from 0, i.e. reports one less).
    converged : bool
        False when ``max_iter`` stopped the EM first.
    n_patterns : int
        Distinct vote patterns the EM ran on.
    notes : tuple of str
        Degenerate cases met (single rater, empty raters, identical raters, ...).
    """

    probability: np.ndarray
    consensus: np.ndarray
    labels: tuple[int, ...]
    confusion: np.ndarray
    sensitivity: np.ndarray
    specificity: np.ndarray
    prior: np.ndarray
    iterations: int
    converged: bool
    n_patterns: int
    notes: tuple[str, ...]

    @property
    def binary(self) -> bool:
        """True when sensitivity/specificity are per rater (not per rater and label)."""
        return self.sensitivity.ndim == 1


@dataclass(frozen=True)
class _StapleFit:
    """STAPLE on the pattern table, before anything is spread to the voxels."""

    posterior: np.ndarray  # (P, K) float64
    consensus: np.ndarray  # (P,) label index
    theta: np.ndarray  # (N, K, K)
    sensitivity: np.ndarray
    specificity: np.ndarray
    prior: np.ndarray
    iterations: int
    converged: bool
    binary: bool
    notes: tuple[str, ...]


def _staple_em(
    onehot: np.ndarray, counts: np.ndarray, prior: np.ndarray, *, max_iter: int, tol: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, bool]:
    """EM on the pattern table, in the order of ITK's STAPLEImageFilter.

    W starts as the vote fractions; each round estimates the confusion
    matrices from W (M-step), then W from them (E-step); it stops when no
    confusion entry moved more than ``tol`` since the previous round (never
    on the first), or after ``max_iter`` rounds. Returns (W, theta, expected
    truth counts of the last M-step, rounds, converged).
    """
    p, n, k = onehot.shape
    flat = onehot.reshape(p, n * k)
    c = counts.astype(np.float64)
    w = onehot.mean(axis=1)  # (P, K) vote fractions
    log_prior = np.log(np.clip(prior, _TINY, None))
    last: np.ndarray | None = None
    theta = np.zeros((n, k, k))
    tot = np.zeros(k)
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        cw = w * c[:, None]
        tot = cw.sum(axis=0)  # expected voxels of each true label, float64
        num = (cw.T @ flat).reshape(k, n, k).transpose(1, 0, 2)  # [j, s, l]
        undefined = tot <= 0
        theta = num / np.where(undefined, 1.0, tot)[None, :, None]
        if undefined.any():
            theta[:, undefined, :] = np.eye(k)[undefined][None]
        log_theta = np.log(np.clip(theta, _TINY, None))
        # L[p, s] = log prior_s + sum_j log theta[j, s, pattern_pj]: one matrix product.
        logits = flat @ log_theta.transpose(0, 2, 1).reshape(n * k, k) + log_prior[None, :]
        logits -= logits.max(axis=1, keepdims=True)
        w = np.exp(logits)
        w /= w.sum(axis=1, keepdims=True)
        if last is not None and float(np.abs(theta - last).max()) <= tol:
            converged = True
            break
        last = theta
    return w, theta, tot, it, converged


def _check_staple_options(max_iter: int, tol: float, confidence_weight: float) -> None:
    if int(max_iter) < 1:
        raise ValueError(f"max_iter must be at least 1, got {max_iter}.")
    if not (tol >= 0 and math.isfinite(tol)):
        raise ValueError(f"tol must be a finite value >= 0, got {tol}.")
    if not (confidence_weight > 0 and math.isfinite(confidence_weight)):
        raise ValueError(f"confidence_weight must be a positive number, got {confidence_weight}.")


def _fit_staple(
    vt: RaterVotes,
    *,
    multilabel: bool | None,
    max_iter: int,
    tol: float,
    confidence_weight: float,
    threshold: float,
) -> _StapleFit:
    _check_staple_options(max_iter, tol, confidence_weight)
    if multilabel is False and not vt.binary:
        raise ValueError(
            f"Binary STAPLE needs masks with one foreground value; the raters hold labels "
            f"{vt.labels.tolist()}. Pass foreground=V to fuse one structure, or use the "
            "multi-label STAPLE (multilabel=None or True)."
        )
    as_binary = vt.binary and multilabel is not True
    if confidence_weight != 1.0 and not as_binary:
        raise ValueError("confidence_weight applies to binary STAPLE only; leave it at 1.")
    labels = vt.labels.tolist()
    k, n = len(labels), vt.n_raters
    onehot = vt.one_hot()
    c = vt.counts.astype(np.float64)
    prior = (onehot.mean(axis=1) * c[:, None]).sum(axis=0) / float(vt.n_voxels)
    if as_binary:
        g = min(float(prior[1]) * confidence_weight, 1.0)
        prior = np.array([1.0 - g, g])
    notes: list[str] = []
    if n == 1:
        w = onehot[:, 0, :].copy()
        theta = np.broadcast_to(np.eye(k), (1, k, k)).copy()
        tot = (w * c[:, None]).sum(axis=0)
        iters, converged = 0, True
        notes.append("single rater: it is its own consensus; sensitivity and specificity are 1 "
                     "by definition")
    else:
        w, theta, tot, iters, converged = _staple_em(onehot, vt.counts, prior,
                                                     max_iter=int(max_iter), tol=float(tol))
        if not converged:
            notes.append(f"EM stopped at max_iter={max_iter} before converging to tol={tol}")
    if as_binary:
        for j in range(n):
            if not (vt.patterns[:, j] == 1).any():
                notes.append(f"rater {j} marks no foreground: its sensitivity is 0")
    for s, lab in enumerate(labels):
        if tot[s] <= 0:
            notes.append(f"label {lab}: no voxel is estimated to truly carry it; its sensitivity "
                         "is undefined and reported as 1.0")
    for grp in identical_raters(vt):
        notes.append(f"raters {grp} are identical (one mask counted {len(grp)} times?); they "
                     "are kept as independent raters")
    sens = np.stack([np.diagonal(t) for t in theta])  # (N, K)
    spec = np.ones((n, k))
    for s in range(k):
        others = [x for x in range(k) if x != s]
        den = float(tot[others].sum())
        if den > 0:
            # expected truly-not-s voxels the rater does not call s, over truly-not-s voxels
            spec[:, s] = (tot[others][None, :] * (1.0 - theta[:, others, s])).sum(axis=1) / den
    sens, spec = np.clip(sens, 0.0, 1.0), np.clip(spec, 0.0, 1.0)
    if as_binary:
        cons = (w[:, 1] > threshold).astype(np.int64)
        sens, spec = sens[:, 1].copy(), spec[:, 1].copy()
    else:
        cons = np.argmax(w, axis=1)
    return _StapleFit(w, cons, theta, sens, spec, prior, iters, converged, as_binary,
                      tuple(notes))


def staple(
    raters: Raters,
    *,
    foreground: int | None = None,
    multilabel: bool | None = None,
    max_iter: int = 1000,
    tol: float = 1e-7,
    confidence_weight: float = 1.0,
    threshold: float = 0.5,
    probability_dtype: npt.DTypeLike = np.float32,
) -> StapleResult:
    """STAPLE (Warfield et al. 2004): EM estimate of the true segmentation and rater quality.

    Binary masks follow ITK's ``STAPLEImageFilter`` step for step (initial
    estimate = vote fraction, fixed prior = mean vote fraction times
    ``confidence_weight``, M-step then E-step, stop when every sensitivity
    and specificity moved by at most ``tol``; ITK's squared-change threshold
    ``1e-14`` is ``tol=1e-7``), so the results match SimpleITK's to rounding.
    Multi-label masks use the same EM with one K x K confusion matrix per
    rater and the label frequencies of all votes as fixed prior (as ITK's
    ``MultiLabelSTAPLEImageFilter`` does by default).

    The EM runs on the table of distinct vote patterns with their voxel
    counts (:class:`RaterVotes`); this is exact, since voxels with the same
    pattern have the same posterior in every round. All sums are float64.

    Parameters
    ----------
    raters : sequence of array_like or RaterVotes
        N label arrays of one shape.
    foreground : int, optional
        Binary STAPLE of this value against everything else.
    multilabel : bool, optional
        ``None``: decide from the values (``{0, v}`` binary, else multi-label).
        ``False``: require binary masks (a clear error otherwise). ``True``:
        report per-label arrays even for binary masks.
    max_iter : int
        Cap on EM rounds (ITK's ``MaximumIterations``; its default is
        unlimited, which 1000 rounds on the pattern table effectively is).
    tol : float
        Convergence tolerance on the confusion-matrix entries.
    confidence_weight : float
        Binary only: scales the foreground prior (ITK's ``ConfidenceWeight``).
    threshold : float
        Binary consensus is ``probability > threshold``.
    probability_dtype : dtype
        dtype of the returned probability map (float32 saves memory; the
        consensus is decided in float64 either way).

    Returns
    -------
    StapleResult

    Raises
    ------
    ValueError
        No raters, shapes differ, ``multilabel=False`` with multi-valued
        masks, or invalid options.

    Notes
    -----
    Explicit cases (listed in ``notes``; no NaN anywhere):

    * one rater: it is its own consensus; sensitivity = specificity = 1 and
      the confusion matrix is the identity; no EM is run (0 iterations).
    * a rater with an empty mask: sensitivity 0, specificity from its
      background agreement (as ITK).
    * no rater marks a label at all (e.g. every mask empty): that label's
      probability is 0; its sensitivity is undefined and reported as 1.0.
      Likewise specificity 1.0 when no voxel is truly background. (ITK
      returns NaN here.)
    * identical raters: kept and counted once each (they agree perfectly
      with each other, which STAPLE reads as two reliable raters).
    """
    vt = _votes(raters, foreground)
    fit = _fit_staple(vt, multilabel=multilabel, max_iter=max_iter, tol=tol,
                      confidence_weight=confidence_weight, threshold=threshold)
    labels = tuple(int(v) for v in vt.labels)
    cons_table = np.asarray(labels, dtype=np.int64)[fit.consensus]
    consensus = vt.expand(cons_table.astype(_consensus_dtype(labels)))
    post = fit.posterior[:, 1] if fit.binary else fit.posterior
    prob = vt.expand(post.astype(probability_dtype))
    return StapleResult(prob, consensus, labels, fit.theta, fit.sensitivity, fit.specificity,
                        fit.prior, fit.iterations, fit.converged, vt.n_patterns, fit.notes)


# --------------------------------------------------------------------------- soft labels


def soft_dice_per_level(
    pred: npt.ArrayLike,
    raters: Raters,
    *,
    levels: Sequence[float] = QUBIQ_LEVELS,
) -> dict[float, float | None]:
    """Dice of the prediction and the rater average, both thresholded at each level.

    QUBIQ's protocol: ``pred > t`` against ``vote_fraction > t`` for each
    ``t`` in ``levels`` (strictly greater; the vote fraction ``m/N`` is
    computed in float64, so a level equal to a fraction is not crossed).

    Parameters
    ----------
    pred : array_like
        Predicted foreground probability in ``[0, 1]``, the raters' shape.
    raters : sequence of array_like or RaterVotes
        N masks; the foreground is any nonzero label.
    levels : sequence of float
        Thresholds in ``(0, 1)``; default 0.1, 0.2, ..., 0.9.

    Returns
    -------
    dict of float to float or None
        ``{level: dice}``; ``None`` where both binarised maps are empty
        (the both-empty policy of :mod:`napari_medseg.core.metrics`).
    """
    vt = _votes(raters)
    prob = np.asarray(pred)
    if prob.shape != vt.shape:
        raise ValueError(f"Prediction {prob.shape} and raters {vt.shape} differ in shape; "
                         "predict on the raters' grid.")
    for t in levels:
        if not 0.0 < float(t) < 1.0:
            raise ValueError(f"levels must lie in (0, 1), got {t}.")
    frac = _fraction_table(vt, None)
    return {float(t): dice(prob > t, vt.expand(frac > t)) for t in levels}


def qubiq_dice(
    pred: npt.ArrayLike, raters: Raters, *, levels: Sequence[float] = QUBIQ_LEVELS
) -> float | None:
    """QUBIQ soft-label Dice: mean over levels of :func:`soft_dice_per_level`.

    Levels where both thresholded maps are empty are left out of the mean
    (undefined, not counted as 1 or 0); ``None`` when every level is.
    """
    vals = [d for d in soft_dice_per_level(pred, raters, levels=levels).values() if d is not None]
    return float(np.mean(vals)) if vals else None


# --------------------------------------------------------------------------- report


def _nan_to_none(a: np.ndarray) -> list[list[float | None]]:
    return [[None if math.isnan(x) else float(x) for x in row] for row in a.tolist()]


def _dice_to_table(vt: RaterVotes, table: np.ndarray) -> list[float | None]:
    """Dice of each rater against a per-pattern label index (mean over nonzero labels)."""
    out: list[float | None] = []
    c = vt.counts
    fg = [k for k, v in enumerate(vt.labels.tolist()) if v != 0]
    for j in range(vt.n_raters):
        vals = []
        for k in fg:
            a, b = vt.patterns[:, j] == k, table == k
            den = int(c[a].sum() + c[b].sum())
            if den:
                vals.append(2.0 * int(c[a & b].sum()) / den)
        out.append(float(np.mean(vals)) if vals else None)
    return out


def rater_report(
    raters: Raters,
    *,
    names: Sequence[str] | None = None,
    method: Literal["staple", "majority"] = "staple",
    tie: TiePolicy = "low",
    max_iter: int = 1000,
    tol: float = 1e-7,
) -> dict[str, Any]:
    """Agreement and STAPLE statistics as a JSON-ready dict (no NaN, no numpy types).

    STAPLE is always run (on the pattern table: milliseconds) for the
    per-rater sensitivity and specificity, whatever consensus ``method``
    the caller writes out.

    Returns
    -------
    dict
        ``raters`` (names), ``n_raters``, ``n_voxels``, ``labels``,
        ``binary``; ``pairwise_dice`` (N x N; binary masks: the foreground;
        multi-label: mean over the labels defined for the pair; ``null`` where
        undefined); ``pairwise_dice_per_class`` (``{label: N x N}``);
        ``cohen_kappa`` (N x N); ``fleiss_kappa``; ``disagreement_fraction``
        (fraction of voxels where not all raters agree); ``identical_raters``
        (groups of names whose masks are voxel-for-voxel equal -- read as one
        person entered several times, which majority vote and STAPLE count
        several times); ``staple`` (``sensitivity``, ``specificity`` in input
        order -- per-label lists for multi-label --, ``labels``,
        ``confusion`` [rater][truth][said], ``prior``, ``iterations``,
        ``converged``); ``iterations`` (STAPLE's EM rounds); ``method``;
        ``dice_to_consensus`` (each rater against the ``method`` consensus);
        ``n_patterns``; ``notes``.
    """
    vt = _votes(raters)
    n = vt.n_raters
    nm = [str(x) for x in names] if names is not None else [f"rater{j}" for j in range(n)]
    if len(nm) != n:
        raise ValueError(f"Got {len(nm)} names for {n} raters.")
    if method not in ("staple", "majority"):
        raise ValueError(f"method must be 'staple' or 'majority', got {method!r}.")
    fit = _fit_staple(vt, multilabel=None, max_iter=max_iter, tol=tol, confidence_weight=1.0,
                      threshold=0.5)
    per_class = pairwise_dice(vt)
    if per_class:
        stack = np.stack(list(per_class.values()))
        defined = ~np.isnan(stack)
        cnt = defined.sum(axis=0)
        main = np.where(cnt > 0, np.where(defined, stack, 0.0).sum(axis=0) / np.maximum(cnt, 1),
                        np.nan)
    else:
        main = np.full((n, n), np.nan)
    groups = identical_raters(vt)
    notes = [x for x in fit.notes if not x.startswith("raters [")]
    if groups:
        notes.append(
            "identical raters: " + "; ".join(" = ".join(nm[j] for j in g) for g in groups)
            + ". These masks are voxel-for-voxel the same (most likely one person's labels "
            "entered more than once); majority vote and STAPLE count each copy as an "
            "independent rater, so that person weighs more and agreement looks higher."
        )
    if method == "staple":
        cons = fit.consensus
    else:
        table, _, _ = _majority_table(vt, tie, None)
        lut = {v: k for k, v in enumerate(vt.labels.tolist())}
        cons = np.array([lut.get(int(v), -1) for v in table.tolist()], dtype=np.int64)
    dis = (vt.patterns != vt.patterns[:, :1]).any(axis=1)
    return {
        "raters": nm,
        "n_raters": n,
        "n_voxels": vt.n_voxels,
        "labels": [int(v) for v in vt.labels],
        "binary": bool(vt.binary),
        "pairwise_dice": _nan_to_none(main),
        "pairwise_dice_per_class": {str(k): _nan_to_none(v) for k, v in per_class.items()},
        "cohen_kappa": _nan_to_none(pairwise_kappa(vt)),
        "fleiss_kappa": fleiss_kappa(vt),
        "disagreement_fraction": float(vt.counts[dis].sum()) / vt.n_voxels,
        "identical_raters": [[nm[j] for j in g] for g in groups],
        "method": method,
        "dice_to_consensus": _dice_to_table(vt, cons),
        "staple": {
            "sensitivity": fit.sensitivity.tolist(),
            "specificity": fit.specificity.tolist(),
            "labels": [int(v) for v in vt.labels],
            "confusion": fit.theta.tolist(),
            "prior": fit.prior.tolist(),
            "iterations": fit.iterations,
            "converged": fit.converged,
        },
        "iterations": fit.iterations,
        "n_patterns": vt.n_patterns,
        "notes": notes,
    }
