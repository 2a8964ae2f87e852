"""Majority-vote consensus of several raters (plurality vote with a tie policy)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from napari_medseg.core.raters.votes import Raters, RaterVotes, _uint_for, _votes

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
