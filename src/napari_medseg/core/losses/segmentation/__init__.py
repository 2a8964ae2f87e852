"""Segmentation losses and the name -> factory table.

Every loss is an :class:`torch.nn.Module` called as ``loss(logits, target, mask=None)``:

``logits``
    ``(N, K, *spatial)`` raw network outputs (2D or 3D), floating point. ``K == 1`` means a
    binary problem read with a sigmoid; ``K >= 2`` means ``K`` mutually exclusive classes read
    with a softmax (background is class 0).
``target``
    Either hard class indices ``(N, *spatial)`` of an integer dtype, where ``-1`` marks an
    unlabelled voxel that is ignored (``(N, 1, *spatial)`` integer is accepted too), or soft
    targets ``(N, K, *spatial)`` of a floating dtype holding probabilities (for instance the
    fraction of raters that voted for each class).
``mask``
    Optional ``(N, *spatial)`` (or ``(N, 1, *spatial)``) bool or float, 1 where a voxel counts.
    It is multiplied with the ``-1`` ignore; a float mask acts as a per-voxel weight.

An ignored voxel contributes nothing to the value and receives a zero gradient. When no voxel
counts, every loss returns 0 (never NaN) with zero gradients. Half-precision logits are upcast
to float32 inside the losses, so sums over large volumes cannot overflow.

Add a loss to :func:`make_loss` by putting a factory into :data:`LOSSES`.

Modules: :mod:`.batch` (input checking into one prepared batch), :mod:`.terms` (the
cross-entropy, BCE and Dice terms on it), :mod:`.modules` (the loss classes) and :mod:`.table`
(:data:`LOSSES`, :func:`make_loss`). Import from here.
"""

from __future__ import annotations

from napari_medseg.core.losses.segmentation.modules import (
    BCELoss,
    CrossEntropyLoss,
    DiceCELoss,
    SoftDiceLoss,
)
from napari_medseg.core.losses.segmentation.table import LOSSES, make_loss

__all__ = [
    "LOSSES",
    "BCELoss",
    "CrossEntropyLoss",
    "DiceCELoss",
    "SoftDiceLoss",
    "make_loss",
]
