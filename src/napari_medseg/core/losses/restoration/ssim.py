"""Differentiable SSIM (:func:`ssim_torch`, 2D and 3D) and the ``1 - SSIM`` loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from napari_medseg.core.losses.restoration.pixel import _check_pair, _no_mask

def _window_1d(win_size: int, gaussian: bool, sigma: float, dtype: torch.dtype,
               device: torch.device) -> Tensor:
    if gaussian:
        r = int(3.5 * sigma + 0.5)
        x = torch.arange(-r, r + 1, dtype=torch.float64)
        k = torch.exp(-0.5 * (x / sigma) ** 2)
    else:
        k = torch.ones(win_size, dtype=torch.float64)
    return (k / k.sum()).to(dtype=dtype, device=device)


def _separable(x: Tensor, k: Tensor) -> Tensor:
    """Valid (unpadded) separable filtering of every channel of (N, C, *S) by the 1D kernel k."""
    c = x.shape[1]
    nd = x.dim() - 2
    conv = F.conv3d if nd == 3 else F.conv2d
    for ax in range(nd):
        shape = [1, 1] + [1] * nd
        shape[2 + ax] = k.numel()
        x = conv(x, k.view(shape).expand(c, *shape[1:]), groups=c)
    return x


def ssim_torch(pred: Tensor, target: Tensor, *, data_range: float | Tensor | None = None,
               win_size: int | None = None, gaussian_weights: bool = True, sigma: float = 1.5,
               K1: float = 0.01, K2: float = 0.03, use_sample_covariance: bool = True,
               reduction: str = "mean") -> Tensor:
    """Differentiable SSIM of ``(N, C, *spatial)`` tensors (2D or 3D), per-channel.

    Same definition as :func:`napari_medseg.core.metrics.ssim` (and scikit-image): the
    map is computed only where the window fits (valid filtering), which is exactly the
    region the metric averages over.

    Parameters
    ----------
    data_range : float, tensor or None
        R; ``None`` uses each sample's ``target.max() - target.min()`` (detached, at least
        1e-6), shape-broadcast per sample.
    reduction : {"mean", "none"}
        ``"mean"``: a scalar; ``"none"``: the valid SSIM map ``(N, C, *valid)``.
    """
    _check_pair(pred, target, "ssim")
    if win_size is None:
        win_size = 2 * int(3.5 * sigma + 0.5) + 1 if gaussian_weights else 7
    if win_size % 2 != 1:
        raise ValueError(f"win_size must be odd, got {win_size}.")
    nd = pred.dim() - 2
    dt = torch.float64 if pred.dtype == torch.float64 else torch.float32
    k = _window_1d(win_size, gaussian_weights, sigma, dt, pred.device)
    span = k.numel()
    if span > win_size:
        raise ValueError(f"A Gaussian window of sigma {sigma} spans {span} voxels, more than "
                         f"win_size {win_size}; leave win_size at None or raise it to {span}.")
    if min(pred.shape[2:]) < max(span, win_size):
        raise ValueError(f"SSIM window {max(span, win_size)} does not fit patches of "
                         f"{tuple(pred.shape[2:])}; use larger patches or win_size/sigma smaller.")
    x, y = pred.to(dt), target.to(dt)
    n = x.shape[0]
    if data_range is None:
        flat = y.detach().reshape(n, -1)
        r = (flat.amax(1) - flat.amin(1)).clamp_min(1e-6).view(n, *([1] * (nd + 1)))
    else:
        r = torch.as_tensor(data_range, dtype=dt, device=x.device)
    # Centre on the target's mean per sample: same SSIM, better float32 conditioning.
    c = y.detach().mean(dim=tuple(range(1, nd + 2)), keepdim=True)
    xc, yc = x - c, y - c
    ch = x.shape[1]
    moments = _separable(torch.cat([xc, yc, xc * xc + yc * yc, xc * yc], dim=1), k)
    ux, uy = moments[:, :ch], moments[:, ch:2 * ch]
    sxx_yy, sxy = moments[:, 2 * ch:3 * ch], moments[:, 3 * ch:]
    np_ = win_size**nd
    cn = np_ / (np_ - 1) if use_sample_covariance else 1.0
    c1, c2 = (K1 * r) ** 2, (K2 * r) ** 2
    vsum = cn * (sxx_yy - ux * ux - uy * uy)
    vxy = cn * (sxy - ux * uy)
    mx, my = ux + c, uy + c
    smap = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vsum + c2))
    if span < win_size:
        # The metric crops (win_size-1)/2 from each border; valid filtering cropped
        # (span-1)/2, so crop the rest.
        cut = (win_size - span) // 2
        smap = smap[(slice(None), slice(None), *(slice(cut, s - cut) for s in smap.shape[2:]))]
    if reduction == "none":
        return smap
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}.")
    return smap.mean()


class SSIMLoss(nn.Module):
    """``1 - SSIM(pred, target)``, differentiable, 2D and 3D.

    Parameters
    ----------
    win_size, gaussian_weights, sigma, K1, K2, use_sample_covariance
        As :func:`ssim_torch` (default: Gaussian window, sigma 1.5, 11 wide).
    data_range : float or None
        R in the constants; None uses each target patch's range (the images are
        normalised, so there is no fixed intensity span).
    """

    def __init__(self, *, win_size: int | None = None, gaussian_weights: bool = True,
                 sigma: float = 1.5, K1: float = 0.01, K2: float = 0.03,
                 use_sample_covariance: bool = True, data_range: float | None = None) -> None:
        super().__init__()
        self.options = dict(win_size=win_size, gaussian_weights=gaussian_weights, sigma=sigma,
                            K1=K1, K2=K2, use_sample_covariance=use_sample_covariance)
        self.data_range = data_range

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        _no_mask(mask, "ssim")
        return 1.0 - ssim_torch(pred, target, data_range=self.data_range, **self.options)
