"""Agreement between raters: pairwise Dice, Cohen's and Fleiss' kappa, identical raters."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from napari_medseg.core.raters.votes import Raters, RaterVotes, _votes

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
