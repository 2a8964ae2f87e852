"""The segmentation loss classes: soft Dice, cross-entropy, BCE and Dice + CE."""

from __future__ import annotations

from torch import Tensor, nn

from napari_medseg.core.losses.segmentation.batch import _prepare
from napari_medseg.core.losses.segmentation.terms import _bce, _ce, _dice, _foreground_dice

SOFT_OVERLAPS = ("min", "product")


def _check_soft_overlap(soft_overlap: str) -> str:
    if soft_overlap not in SOFT_OVERLAPS:
        raise ValueError(f"soft_overlap must be 'min' or 'product', got {soft_overlap!r}; "
                         "'min' (the default) is calibrated for soft targets.")
    return soft_overlap


def _check_smooth(smooth: float) -> float:
    if not smooth >= 0.0:
        raise ValueError(f"smooth must be >= 0, got {smooth}; the default is 1e-5.")
    return float(smooth)


class SoftDiceLoss(nn.Module):
    """Soft Dice loss, ``1 - mean over classes of Dice(probabilities, target)``.

    Parameters
    ----------
    include_background : bool, default False
        Whether class 0 enters the mean (``K >= 2`` only). With ``K == 1`` the single sigmoid
        channel is the foreground and this option has no effect.
    smooth : float, default 1e-5
        Added to numerator and denominator of every per-class Dice,
        ``(2 I + smooth) / (P + T + smooth)``, as in nnU-Net and MONAI.
    batch_dice : bool, default True
        Sum intersection and sizes over the whole batch before dividing (nnU-Net's batch
        Dice; stable with small patches); otherwise compute one Dice per sample and class and
        average them.
    soft_overlap : {"min", "product"}, default "min"
        Intersection for soft (probability) targets: ``sum min(p, t)`` or ``sum p * t``.
        Both are equal for 0/1 targets (hard labels are unaffected). For fractional targets
        such as rater vote fractions the product form is maximised by pushing ``p`` to 0 or
        1 (a voxel with ``t`` above half the current Dice is driven to 1), whereas the
        ``min`` form, ``1 - 2 sum min(p, t) / (sum p + sum t)``, is 0 exactly when ``p == t``:
        the Dice semimetric loss of Wang & Blaschko, "Dice Semimetric Losses: Optimizing
        the Dice Score with Soft Labels" (MICCAI 2023).

    Notes
    -----
    Probabilities are ``softmax(logits)`` for ``K >= 2`` and ``sigmoid(logits)`` for
    ``K == 1``. Ignored voxels (target ``-1`` or ``mask == 0``) enter neither the
    intersection ``I`` nor the sums ``P`` (prediction) and ``T`` (target).

    Absent classes: a class missing from the target (``T = 0``) keeps its term in the mean.
    If it is also (almost) absent from the prediction (``P << smooth``) its Dice is
    ``smooth / (P + smooth) ~ 1``, i.e. it counts as perfectly segmented; if it is predicted
    somewhere its Dice falls towards 0, so false positives are penalised. The value is never
    NaN, and the gradient stays bounded: with respect to all logits together it is at most
    ``2 smooth P / (P + smooth)**2 <= 1/2`` per class, because ``dp/dz = p (1 - p)`` shrinks
    with ``P``. When no voxel counts at all the loss is 0 with zero gradients.

    Examples
    --------
    >>> import torch
    >>> loss = SoftDiceLoss()
    >>> logits = torch.zeros(1, 3, 4, 4, requires_grad=True)
    >>> target = torch.randint(0, 3, (1, 4, 4))
    >>> loss(logits, target).backward()
    """

    def __init__(
        self,
        *,
        include_background: bool = False,
        smooth: float = 1e-5,
        batch_dice: bool = True,
        soft_overlap: str = "min",
    ) -> None:
        super().__init__()
        self.include_background = bool(include_background)
        self.smooth = _check_smooth(smooth)
        self.batch_dice = bool(batch_dice)
        self.soft_overlap = _check_soft_overlap(soft_overlap)

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        """Return the scalar Dice loss (see the package docstring for the input shapes)."""
        b = _prepare(logits, target, mask, type(self).__name__)
        return _dice(
            b,
            include_background=self.include_background,
            smooth=self.smooth,
            batch_dice=self.batch_dice,
            soft_overlap=self.soft_overlap,
        )

    def extra_repr(self) -> str:
        return (
            f"include_background={self.include_background}, smooth={self.smooth}, "
            f"batch_dice={self.batch_dice}, soft_overlap={self.soft_overlap!r}"
        )


class CrossEntropyLoss(nn.Module):
    """Multi-class cross-entropy on ``K >= 2`` softmax channels, with ignore.

    The mean is taken over counted voxels (target not ``-1`` and ``mask`` nonzero; a float
    mask weights the mean). Returns 0 when no voxel counts. Soft targets give
    ``-sum_k t_k log softmax(z)_k`` per voxel.

    Raises
    ------
    ValueError
        With ``K == 1`` logit channels: use :class:`BCELoss` for one sigmoid channel.
    """

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        """Return the scalar cross-entropy (see the package docstring for the input shapes)."""
        who = type(self).__name__
        return _ce(_prepare(logits, target, mask, who), who)


class BCELoss(nn.Module):
    """Binary cross-entropy with logits.

    ``K == 1``: binary segmentation; the target holds 0/1 indices (``-1`` ignored) or a soft
    foreground probability ``(N, 1, *spatial)``. ``K > 1``: multi-label, one independent
    sigmoid per channel; the target must be soft ``(N, K, *spatial)`` (class indices with
    ``K > 1`` are mutually exclusive classes: use :class:`CrossEntropyLoss`). The mean is over
    counted voxels and channels; 0 when no voxel counts.
    """

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        """Return the scalar BCE (see the package docstring for the input shapes)."""
        who = type(self).__name__
        return _bce(_prepare(logits, target, mask, who), who)


class DiceCELoss(nn.Module):
    """``dice_weight * SoftDiceLoss + ce_weight * CrossEntropyLoss`` (nnU-Net's default).

    With ``K == 1`` logit channels the cross-entropy term is binary (:class:`BCELoss`) and the
    Dice term uses the sigmoid probability.

    Parameters
    ----------
    dice_weight, ce_weight : float, default 1.0
        Non-negative weights of the two terms.
    foreground_weight : float, default 0.0
        Weight of a third term, the soft Dice of the union of all foreground classes
        (``1 - p_background`` against ``target > 0``; ``K >= 2`` only). For classes that are
        parts of one structure (tumour sub-regions) it rewards finding the structure even
        where the model cannot yet tell its parts apart (loss name ``"dice_ce_fg"``).
    include_background, smooth, batch_dice, soft_overlap
        Passed to the Dice term, see :class:`SoftDiceLoss`. With soft targets and the
        default ``soft_overlap="min"`` both terms are minimal at ``p == t``, so training
        on rater vote fractions can learn them.
    """

    def __init__(
        self,
        *,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        foreground_weight: float = 0.0,
        include_background: bool = False,
        smooth: float = 1e-5,
        batch_dice: bool = True,
        soft_overlap: str = "min",
    ) -> None:
        super().__init__()
        if not (dice_weight >= 0 and ce_weight >= 0):
            raise ValueError(
                f"dice_weight and ce_weight must be >= 0, got {dice_weight} and {ce_weight}."
            )
        if not foreground_weight >= 0:
            raise ValueError(f"foreground_weight must be >= 0, got {foreground_weight}.")
        self.dice_weight = float(dice_weight)
        self.ce_weight = float(ce_weight)
        self.foreground_weight = float(foreground_weight)
        self.include_background = bool(include_background)
        self.smooth = _check_smooth(smooth)
        self.batch_dice = bool(batch_dice)
        self.soft_overlap = _check_soft_overlap(soft_overlap)

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        """Return the scalar weighted sum (see the package docstring for the input shapes)."""
        who = type(self).__name__
        b = _prepare(logits, target, mask, who)
        dice = _dice(
            b,
            include_background=self.include_background,
            smooth=self.smooth,
            batch_dice=self.batch_dice,
            soft_overlap=self.soft_overlap,
        )
        ce = _bce(b, who) if b.logits.shape[1] == 1 else _ce(b, who)
        total = self.dice_weight * dice + self.ce_weight * ce
        if self.foreground_weight > 0:
            if b.logits.shape[1] == 1:
                raise ValueError(f"{who}: the foreground term needs K >= 2 softmax channels; "
                                 "with one sigmoid channel it is the Dice term itself.")
            total = total + self.foreground_weight * _foreground_dice(
                b, smooth=self.smooth, soft_overlap=self.soft_overlap)
        return total

    def extra_repr(self) -> str:
        return (
            f"dice_weight={self.dice_weight}, ce_weight={self.ce_weight}, "
            f"foreground_weight={self.foreground_weight}, "
            f"include_background={self.include_background}, smooth={self.smooth}, "
            f"batch_dice={self.batch_dice}, soft_overlap={self.soft_overlap!r}"
        )
