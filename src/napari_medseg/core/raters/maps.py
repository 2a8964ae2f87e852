"""Per-voxel maps of the raters' votes: vote fraction, vote entropy, disagreement."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from napari_medseg.core.raters.votes import Raters, RaterVotes, _votes

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
