"""Input checking of the segmentation losses: logits, target and mask -> one prepared batch
with a per-voxel weight (the conventions are in :mod:`napari_medseg.core.losses.segmentation`)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


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
