"""The segmentation loss terms (cross-entropy, BCE, soft Dice, foreground Dice) on a batch
prepared by :func:`~napari_medseg.core.losses.segmentation.batch._prepare`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from napari_medseg.core.losses.segmentation.batch import _Batch, _weighted_mean


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
    # Nothing predicted and nothing there (or nothing counted) is a perfect score, also at
    # smooth=0, where the formula gives 0/0.
    dice = torch.where(psum + tsum > 0, dice, torch.ones_like(dice))
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
    total = p.sum() + t.sum()
    dice = (2.0 * inter + smooth) / (total + smooth).clamp_min(1e-8)
    return 1.0 - torch.where(total > 0, dice, torch.ones_like(dice))
