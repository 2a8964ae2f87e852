"""Pixel-wise restoration losses (L1, MSE) and the input checks every restoration loss shares."""

from __future__ import annotations

from torch import Tensor, nn

def _check_pair(pred: Tensor, target: Tensor, who: str) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"{who}: pred {tuple(pred.shape)} and target {tuple(target.shape)} "
                         "differ in shape.")
    if pred.dim() not in (4, 5):
        raise ValueError(f"{who}: expected (N, C, X, Y) or (N, C, X, Y, Z), got "
                         f"{tuple(pred.shape)}; add batch and channel axes.")


def _weight(mask: Tensor | None, pred: Tensor) -> Tensor | None:
    if mask is None:
        return None
    m = mask.to(pred.dtype)
    if m.dim() == pred.dim() - 1:
        m = m.unsqueeze(1)
    if m.shape[0] != pred.shape[0] or m.shape[2:] != pred.shape[2:]:
        raise ValueError(f"mask {tuple(mask.shape)} does not match images {tuple(pred.shape)}.")
    return m.expand_as(pred)


def _no_mask(mask: Tensor | None, who: str) -> None:
    if mask is not None:
        raise ValueError(f"{who} compares neighbourhoods and cannot use a pixel mask; use "
                         "'l1' or 'mse' for masked (Noise2Void) training.")


class _Pixelwise(nn.Module):
    def _reduce(self, err: Tensor, mask: Tensor | None, pred: Tensor) -> Tensor:
        w = _weight(mask, pred)
        if w is None:
            return err.mean()
        total = w.sum()
        return (err * w).sum() / total.clamp_min(1e-12) if total > 0 else (err * w).sum()


class L1Loss(_Pixelwise):
    """Mean absolute error: robust to outliers, keeps edges sharper than MSE."""

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        _check_pair(pred, target, "l1")
        return self._reduce((pred.float() - target.float()).abs(), mask, pred)


class MSELoss(_Pixelwise):
    """Mean squared error: the maximum-likelihood loss under Gaussian noise (PSNR's loss)."""

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        _check_pair(pred, target, "mse")
        d = pred.float() - target.float()
        return self._reduce(d * d, mask, pred)
