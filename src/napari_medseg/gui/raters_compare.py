"""What the Raters widget computes in its worker thread, from the raters' arrays (no Qt)."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

STAPLE, MAJORITY = "STAPLE", "majority vote"
#: Values of the "rater vs consensus" layer.
AGREE, EXTRA, MISSED, OTHER = 0, 1, 2, 3


@dataclass(frozen=True, eq=False)
class RaterComparison:
    """Everything the widget shows, computed in the worker thread from the raters' arrays.

    Attributes
    ----------
    names : list of str
        Rater (layer) names, in input order.
    method : str
        :data:`STAPLE` or :data:`MAJORITY`: how :attr:`consensus` was made.
    report : dict
        :func:`napari_medseg.core.raters.rater_report` (JSON-ready).
    consensus : np.ndarray
        Consensus label array (the raters' label values).
    probability : np.ndarray
        STAPLE's posterior probability that a voxel is foreground (multi-label
        raters: of any nonzero label), float32.
    fraction, entropy : np.ndarray
        Vote fraction (any nonzero label) and vote entropy (bits), float32.
    disagreement : np.ndarray
        uint8, 1 where not all raters give the same label.
    deviation : np.ndarray
        ``(N, *shape)`` uint8: each rater against the consensus (:data:`AGREE`,
        :data:`EXTRA`, :data:`MISSED`, :data:`OTHER`).
    deviation_counts : np.ndarray
        ``(N, 4)`` voxels of each deviation value per rater.
    pairwise : np.ndarray
        ``(N, N)`` pairwise Dice (NaN where undefined) -- the report's
        ``pairwise_dice``.
    sensitivity, specificity : np.ndarray
        ``(N,)`` STAPLE per rater (multi-label: mean over the nonzero labels;
        the per-label values are in ``report["staple"]``).
    """

    names: list[str]
    method: str
    report: dict[str, Any]
    consensus: np.ndarray
    probability: np.ndarray
    fraction: np.ndarray
    entropy: np.ndarray
    disagreement: np.ndarray
    deviation: np.ndarray
    deviation_counts: np.ndarray
    pairwise: np.ndarray
    sensitivity: np.ndarray
    specificity: np.ndarray


def deviation_map(rater: np.ndarray, consensus: np.ndarray) -> np.ndarray:
    """uint8 map of where ``rater`` departs from ``consensus`` (see :data:`EXTRA` ...)."""
    r, c = np.asarray(rater), np.asarray(consensus)
    out = np.zeros(r.shape, np.uint8)
    differ = r != c
    r_fg, c_fg = r != 0, c != 0
    out[differ & r_fg & ~c_fg] = EXTRA
    out[differ & ~r_fg & c_fg] = MISSED
    out[differ & r_fg & c_fg] = OTHER
    return out


def compare_raters(arrays: Sequence[np.ndarray], names: Sequence[str], *, method: str = STAPLE
                   ) -> Generator[Any, None, RaterComparison]:
    """Run in the worker: the core's rater statistics, yielding progress messages.

    The raters are scanned once (:class:`~napari_medseg.core.raters.RaterVotes`);
    every statistic is then computed on the table of vote patterns.
    """
    from napari_medseg.core import raters as R
    from napari_medseg.core.events import Message

    if method not in (STAPLE, MAJORITY):
        raise ValueError(f"method must be {STAPLE!r} or {MAJORITY!r}, got {method!r}.")
    yield Message("counting vote patterns")
    vt = R.RaterVotes.from_raters(list(arrays))
    yield Message(f"{vt.n_patterns} vote patterns; agreement and STAPLE")
    report = R.rater_report(vt, names=list(names),
                            method="staple" if method == STAPLE else "majority")
    st = R.staple(vt)
    labels = [int(v) for v in vt.labels]
    if st.binary:
        prob = np.asarray(st.probability, np.float32)
    else:
        prob = (1.0 - st.probability[labels.index(0)] if 0 in labels
                else np.ones(vt.shape)).astype(np.float32)
    sens, spec = R.rater_scores(st.sensitivity, st.specificity, labels)
    yield Message("consensus and maps")
    consensus = st.consensus if method == STAPLE else R.majority_vote(vt, tie="low")
    fraction = R.vote_fraction(vt)
    entropy = R.vote_entropy(vt)
    dis = R.disagreement(vt).astype(np.uint8)
    yield Message("each rater against the consensus")
    dev = np.stack([deviation_map(a, consensus) for a in arrays])
    counts = np.stack([np.bincount(d.reshape(-1), minlength=4)[:4] for d in dev])
    pw = np.array([[np.nan if x is None else x for x in row] for row in report["pairwise_dice"]],
                  dtype=float)
    return RaterComparison(list(names), method, report, consensus, prob, fraction, entropy, dis,
                           dev, counts, pw, sens, spec)
