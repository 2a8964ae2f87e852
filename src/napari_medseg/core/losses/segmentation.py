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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "LOSSES",
    "BCELoss",
    "CrossEntropyLoss",
    "DiceCELoss",
    "SoftDiceLoss",
    "make_loss",
]


# --------------------------------------------------------------------------------------
# Input checking and the shared prepared batch
# --------------------------------------------------------------------------------------


class _Batch(NamedTuple):
    """Validated inputs shared by the losses.

    ``index``: hard targets ``(N, *spatial)`` int64 with ``-1`` kept, or None.
    ``soft``: soft targets ``(N, K, *spatial)`` in the logits' dtype, or None.
    ``weight``: ``(N, *spatial)`` per-voxel weight in the logits' dtype, or None when every
    voxel counts with weight 1.
    """

    logits: Tensor
    index: Tensor | None
    soft: Tensor | None
    weight: Tensor | None


def _prepare(logits: Tensor, target: Tensor, mask: Tensor | None, who: str) -> _Batch:
    """Check shapes/dtypes/values and build the per-voxel weight."""
    if not isinstance(logits, Tensor) or not isinstance(target, Tensor):
        raise TypeError(
            f"{who} expects torch tensors (logits, target); got "
            f"{type(logits).__name__} and {type(target).__name__}. Convert with torch.as_tensor."
        )
    if logits.ndim < 3 or not logits.is_floating_point():
        raise ValueError(
            f"{who} expects float logits of shape (N, K, *spatial); got {logits.dtype} "
            f"{tuple(logits.shape)}. Add the batch and channel axes (e.g. x[None, None])."
        )
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    n, k = logits.shape[:2]
    spatial = tuple(logits.shape[2:])
    dtype = logits.dtype

    index: Tensor | None = None
    soft: Tensor | None = None
    if target.ndim == logits.ndim and not target.is_floating_point() and target.shape[1] == 1:
        target = target[:, 0]  # integer (N, 1, *spatial): class indices with a channel axis
    if target.ndim == logits.ndim - 1:
        if target.is_floating_point() or target.is_complex():
            raise TypeError(
                f"{who}: a target of shape {tuple(target.shape)} is read as class indices and "
                f"must have an integer dtype, got {target.dtype}. Use target.long() for labels, "
                f"or pass soft targets of shape {(n, k, *spatial)}."
            )
        if tuple(target.shape) != (n, *spatial):
            raise ValueError(
                f"{who}: logits {tuple(logits.shape)} need class indices of shape "
                f"{(n, *spatial)}, got {tuple(target.shape)}. Crop or resample the labels "
                "onto the prediction grid."
            )
        index = target.long()
        top = 1 if k == 1 else k - 1
        lo = hi = 0
        if index.numel():
            lo_t, hi_t = torch.aminmax(index)
            lo, hi = int(lo_t), int(hi_t)
        if lo < -1 or hi > top:
            raise ValueError(
                f"{who}: class indices must lie in [-1, {top}] (-1 = unlabelled) for {k} "
                f"logit channel(s); got values in [{lo}, {hi}]. Check num_classes/out_channels "
                "or remap the labels."
            )
        if lo < 0:
            weight: Tensor | None = (index >= 0).to(dtype)
        else:
            weight = None
    elif target.ndim == logits.ndim:
        if not target.is_floating_point():
            raise TypeError(
                f"{who}: a target of shape {tuple(target.shape)} is read as soft targets and "
                f"must be floating point, got {target.dtype}. Pass class indices as "
                f"{(n, *spatial)} integers instead."
            )
        if target.shape != logits.shape:
            raise ValueError(
                f"{who}: soft targets must match the logits' shape {tuple(logits.shape)}, got "
                f"{tuple(target.shape)}. Give one probability channel per logit channel."
            )
        soft = target.to(dtype)
        weight = None
    else:
        raise ValueError(
            f"{who}: logits {tuple(logits.shape)} need a target of shape {(n, *spatial)} "
            f"(class indices) or {tuple(logits.shape)} (soft), got {tuple(target.shape)}."
        )

    if mask is not None:
        if not isinstance(mask, Tensor):
            raise TypeError(f"{who}: mask must be a torch tensor, got {type(mask).__name__}.")
        if mask.ndim == logits.ndim and mask.shape[1] == 1:
            mask = mask[:, 0]
        if tuple(mask.shape) != (n, *spatial):
            raise ValueError(
                f"{who}: mask must have shape {(n, *spatial)} (1 = voxel counts), got "
                f"{tuple(mask.shape)}."
            )
        m = mask.to(dtype)
        weight = m if weight is None else weight * m
    return _Batch(logits, index, soft, weight)


def _weighted_mean(values: Tensor, weight: Tensor | None) -> Tensor:
    """Mean of ``values`` (N, *spatial) weighted by ``weight``; 0 when the weights sum to 0."""
    if weight is None:
        return values.mean()
    # ``where`` keeps a non-finite value at an ignored voxel from turning 0 * inf into NaN.
    num = torch.where(weight > 0, values * weight, values.new_zeros(())).sum()
    den = weight.sum()
    return num / torch.where(den > 0, den, torch.ones_like(den))


# --------------------------------------------------------------------------------------
# Loss terms on a prepared batch
# --------------------------------------------------------------------------------------


def _ce(b: _Batch, who: str) -> Tensor:
    k = b.logits.shape[1]
    if k == 1:
        raise ValueError(
            f"{who}: cross-entropy needs K >= 2 logit channels, got 1 (a softmax over one "
            "channel is constant). Use BCELoss / loss 'bce' for one sigmoid channel, or give "
            "the model 2 output channels."
        )
    if b.index is not None:
        ce = F.cross_entropy(b.logits, b.index, ignore_index=-1, reduction="none")
    else:
        assert b.soft is not None
        ce = F.cross_entropy(b.logits, b.soft, reduction="none")
    return _weighted_mean(ce, b.weight)


def _bce(b: _Batch, who: str) -> Tensor:
    k = b.logits.shape[1]
    if b.index is not None:
        if k != 1:
            raise ValueError(
                f"{who}: class indices with {k} logit channels are mutually exclusive classes; "
                "use CrossEntropyLoss for them. BCE takes indices only for K == 1 (0/1, -1 "
                f"ignored), or multi-label float targets of shape {tuple(b.logits.shape)}."
            )
        t = b.index.clamp_min(0).to(b.logits.dtype).unsqueeze(1)
    else:
        assert b.soft is not None
        t = b.soft
    bce = F.binary_cross_entropy_with_logits(b.logits, t, reduction="none").mean(1)
    return _weighted_mean(bce, b.weight)


def _dice(b: _Batch, *, include_background: bool, smooth: float, batch_dice: bool,
          soft_overlap: str = "min") -> Tensor:
    logits = b.logits
    n, k = logits.shape[:2]
    probs = torch.sigmoid(logits) if k == 1 else torch.softmax(logits, dim=1)
    p = probs.reshape(n, k, -1)
    w = None if b.weight is None else b.weight.reshape(n, 1, -1)
    pw = p if w is None else p * w
    psum = pw.sum(-1)  # (N, K)
    if b.soft is not None or k == 1:
        if b.soft is not None:
            t = b.soft.reshape(n, k, -1)
        else:
            assert b.index is not None
            t = b.index.clamp_min(0).reshape(n, 1, -1).to(p.dtype)
        tw = t if w is None else t * w
        if b.soft is not None and soft_overlap == "min":
            # min(p, t) equals p * t for 0/1 targets, but unlike the product it makes
            # p == t the optimum for fractional targets (Dice semimetric loss).
            inter = torch.minimum(pw, tw).sum(-1)
        else:
            inter = (pw * t).sum(-1)
        tsum = tw.sum(-1)
    else:
        # Hard indices, K >= 2: gather the probability of the labelled class and scatter-add
        # it into K bins, instead of building a (N, K, *spatial) one-hot tensor.
        assert b.index is not None
        idx = b.index.clamp_min(0).reshape(n, -1)  # ignored voxels have weight 0
        src = pw.gather(1, idx.unsqueeze(1)).squeeze(1)
        cnt = torch.ones_like(src) if w is None else w.squeeze(1).expand_as(src)
        inter = pw.new_zeros(n, k).scatter_add(1, idx, src)
        tsum = pw.new_zeros(n, k).scatter_add(1, idx, cnt)
    if k > 1 and not include_background:
        inter, psum, tsum = inter[:, 1:], psum[:, 1:], tsum[:, 1:]
    if batch_dice:
        inter, psum, tsum = inter.sum(0), psum.sum(0), tsum.sum(0)
    dice = (2.0 * inter + smooth) / (psum + tsum + smooth).clamp_min(1e-8)
    return 1.0 - dice.mean()


def _foreground_dice(b: _Batch, *, smooth: float, soft_overlap: str = "min") -> Tensor:
    """``1 - Dice`` of the union of the foreground classes (``1 - p_0`` against target > 0),
    over the whole batch: a region term for classes that are parts of one structure."""
    logits = b.logits
    n, k = logits.shape[:2]
    p = (1.0 - torch.softmax(logits, dim=1)[:, 0]).reshape(n, -1)
    if b.soft is not None:
        t = (1.0 - b.soft[:, 0]).reshape(n, -1)
    else:
        assert b.index is not None
        t = (b.index > 0).reshape(n, -1).to(p.dtype)
    if b.weight is not None:
        w = b.weight.reshape(n, -1)
        p, t = p * w, t * w
    inter = torch.minimum(p, t).sum() if b.soft is not None and soft_overlap == "min" \
        else (p * t).sum()
    dice = (2.0 * inter + smooth) / (p.sum() + t.sum() + smooth).clamp_min(1e-8)
    return 1.0 - dice


# --------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------


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
        """Return the scalar Dice loss (see the module docstring for the input shapes)."""
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
        """Return the scalar cross-entropy (see the module docstring for the input shapes)."""
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
        """Return the scalar BCE (see the module docstring for the input shapes)."""
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
        """Return the scalar weighted sum (see the module docstring for the input shapes)."""
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


# --------------------------------------------------------------------------------------
# Name -> factory table
# --------------------------------------------------------------------------------------

LossFactory = Callable[..., nn.Module]


def _softmax_only(name: str, num_classes: int) -> None:
    if num_classes == 1:
        raise ValueError(
            f"Loss {name!r} needs num_classes >= 2 softmax channels, got 1. Use 'bce' or "
            "'dice_ce' (which switches to BCE for one channel) for a single sigmoid channel, "
            "or give the model 2 output channels."
        )


def _make_dice_ce(*, num_classes: int, **options: Any) -> nn.Module:
    return DiceCELoss(**options)


def _make_dice_ce_fg(*, num_classes: int, **options: Any) -> nn.Module:
    _softmax_only("dice_ce_fg", num_classes)
    return DiceCELoss(**{"foreground_weight": 1.0, **options})


def _make_dice(*, num_classes: int, **options: Any) -> nn.Module:
    return SoftDiceLoss(**options)


def _make_ce(*, num_classes: int, **options: Any) -> nn.Module:
    _softmax_only("ce", num_classes)
    return CrossEntropyLoss(**options)


def _make_bce(*, num_classes: int, **options: Any) -> nn.Module:
    if num_classes != 1:
        raise ValueError(
            f"Loss 'bce' trains one sigmoid output channel (binary), got num_classes="
            f"{num_classes}. Use 'ce' or 'dice_ce' for {num_classes} mutually exclusive "
            "classes, or set out_channels=1 for a binary task. (Multi-label sigmoid training "
            "with soft targets is available as BCELoss() directly.)"
        )
    return BCELoss(**options)


LOSSES: dict[str, LossFactory] = {
    "dice_ce": _make_dice_ce,
    "dice_ce_fg": _make_dice_ce_fg,
    "dice": _make_dice,
    "ce": _make_ce,
    "bce": _make_bce,
}
"""Loss name -> factory ``f(*, num_classes, **options) -> nn.Module``. Add entries here."""


def make_loss(name: str, *, num_classes: int, **options: Any) -> nn.Module:
    """Build the loss registered under ``name``.

    Parameters
    ----------
    name : str
        A key of :data:`LOSSES`: ``"dice_ce"``, ``"dice_ce_fg"`` (Dice + CE + Dice of the
        union of the foreground classes), ``"dice"``, ``"ce"``, ``"bce"``.
    num_classes : int
        Number of logit channels the model outputs (``out_channels``); 1 means binary with a
        sigmoid.
    **options
        Keyword options forwarded to the loss constructor (e.g. ``include_background``).

    Returns
    -------
    torch.nn.Module
        Called as ``loss(logits, target, mask=None)``.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the valid ones), ``num_classes < 1``,
        ``"ce"`` with one channel, or ``"bce"`` with more than one channel (``"bce"`` is the
        binary loss of a single sigmoid channel; the pipeline reads ``K > 1`` outputs with a
        softmax, so multi-class tasks use ``"ce"`` or ``"dice_ce"``).
    """
    try:
        factory = LOSSES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown loss {name!r}; valid names are: {', '.join(sorted(LOSSES))}."
        ) from None
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"num_classes must be an int >= 1 (the model's output channels), got {num_classes!r}."
        )
    return factory(num_classes=num_classes, **options)
