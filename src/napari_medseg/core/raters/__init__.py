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

The package holds one module per idea: :mod:`.votes` (the pattern table),
:mod:`.agreement` (pairwise Dice, kappa, identical raters), :mod:`.maps` (vote
fraction, entropy, disagreement), :mod:`.fusion` (majority vote),
:mod:`.staple` (binary and multi-label STAPLE), :mod:`.soft` (QUBIQ soft Dice)
and :mod:`.report` (everything as one JSON-ready dict). Import from here.
"""

from __future__ import annotations

from napari_medseg.core.raters.agreement import (
    cohen_kappa,
    fleiss_kappa,
    identical_raters,
    pairwise_dice,
    pairwise_kappa,
)
from napari_medseg.core.raters.fusion import TiePolicy, majority_vote
from napari_medseg.core.raters.maps import disagreement, vote_entropy, vote_fraction
from napari_medseg.core.raters.report import rater_report, rater_scores
from napari_medseg.core.raters.soft import QUBIQ_LEVELS, qubiq_dice, soft_dice_per_level
from napari_medseg.core.raters.staple import StapleResult, staple
from napari_medseg.core.raters.votes import _BINCOUNT_MAX, Raters, RaterVotes

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
    "rater_scores",
    "soft_dice_per_level",
    "staple",
    "vote_entropy",
    "vote_fraction",
]
