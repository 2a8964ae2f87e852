"""All rater statistics of one image as one JSON-ready dict (:func:`rater_report`)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from napari_medseg.core.raters.agreement import fleiss_kappa, identical_raters, pairwise_dice, \
    pairwise_kappa
from napari_medseg.core.raters.fusion import TiePolicy, _majority_table
from napari_medseg.core.raters.staple import _fit_staple
from napari_medseg.core.raters.votes import Raters, RaterVotes, _votes

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
    # The fit names raters by index from 0; people know them by name.
    notes = [re.sub(r"^rater (\d+) ", lambda m: f"{nm[int(m.group(1))]} ", x)
             for x in fit.notes if not x.startswith("raters [")]
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


def rater_scores(sensitivity: Any, specificity: Any, labels: Sequence[int]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One sensitivity and specificity per rater, as tables show them.

    Binary STAPLE gives one value per rater already. Multi-label STAPLE gives one per
    rater and label: the summary is the mean over the nonzero labels (background's
    "sensitivity" is the other labels' specificity, and would count twice).

    Parameters
    ----------
    sensitivity, specificity : array_like
        ``(N,)`` (binary) or ``(N, K)`` (multi-label, label order ``labels``).
    labels : sequence of int
        The label values, in STAPLE's order.
    """
    sens, spec = np.asarray(sensitivity, float), np.asarray(specificity, float)
    if sens.ndim == 1:
        return sens, spec
    fg = [k for k, v in enumerate(labels) if int(v) != 0] or list(range(len(labels)))
    return sens[:, fg].mean(axis=1), spec[:, fg].mean(axis=1)
