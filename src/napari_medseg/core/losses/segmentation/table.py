"""The name -> factory table of the segmentation losses and :func:`make_loss`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from napari_medseg.core.losses.segmentation.modules import (
    BCELoss,
    CrossEntropyLoss,
    DiceCELoss,
    SoftDiceLoss,
)

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
