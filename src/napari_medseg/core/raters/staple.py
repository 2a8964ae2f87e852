"""STAPLE (binary and multi-label): EM estimate of the true segmentation and each rater.

The EM runs on the vote-pattern table (:class:`~napari_medseg.core.raters.votes.RaterVotes`),
which is exact: voxels with one pattern share their posterior in every round.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from napari_medseg.core.raters.agreement import identical_raters
from napari_medseg.core.raters.fusion import _consensus_dtype
from napari_medseg.core.raters.votes import Raters, RaterVotes, _votes

#: Probabilities are clipped to this before logs: a vote pattern that no
#: rater model can produce gets a defined posterior instead of 0/0.
_TINY = 1e-300

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
                # when no voxel is estimated foreground, sensitivity is undefined (below)
                notes.append(f"rater {j} marks no foreground"
                             + (": its sensitivity is 0" if tot[1] > 0 else ""))
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
