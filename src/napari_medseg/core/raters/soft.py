"""Soft-label scores against the raters' average: QUBIQ's thresholded Dice."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from napari_medseg.core.metrics import dice
from napari_medseg.core.raters.maps import _fraction_table
from napari_medseg.core.raters.votes import Raters, _votes

#: QUBIQ's thresholds, as exact decimal literals (0.1 .. 0.9).
QUBIQ_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

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
