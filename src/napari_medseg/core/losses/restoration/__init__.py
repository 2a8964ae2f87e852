"""Restoration losses and weighted sums of them named by a spec (``"0.8*l1+0.2*ssim"``).

Every loss is an :class:`torch.nn.Module` called as ``loss(pred, target, mask=None)``:

``pred``, ``target``
    ``(N, C, *spatial)`` floating tensors of one shape, 2D or 3D (the restored and the clean
    image, in the network's normalised units).
``mask``
    Optional ``(N, *spatial)`` or ``(N, 1, *spatial)`` weights (bool or float): pixel-wise losses
    (``l1``, ``mse``) average only where it is non-zero (Noise2Void's blind-spot pixels). The
    structural losses (``ssim``, ``perceptual``, ``adv``) compare neighbourhoods and refuse a
    mask. A mask with no weight gives 0 (never NaN).

Names (:data:`RESTORATION_LOSSES`): ``l1`` (= ``mae``), ``mse`` (= ``l2``), ``ssim``,
``perceptual``, ``adv`` (= ``adversarial``). :func:`parse_loss_spec` reads
``"l1+ssim"``, ``"0.8*l1+0.2*ssim"``, ``"l1+0.1*perceptual+0.01*adv"``; the adversarial term is
only there when named (off by default).

Modules: :mod:`.pixel` (L1, MSE), :mod:`.ssim`, :mod:`.perceptual`,
:mod:`.adversarial` and :mod:`.spec` (the name table, :func:`parse_loss_spec`,
:class:`CompositeLoss`, :func:`make_restoration_loss`). Import from here.
"""

from __future__ import annotations

from napari_medseg.core.losses.restoration.adversarial import AdversarialLoss, PatchDiscriminator
from napari_medseg.core.losses.restoration.perceptual import PerceptualLoss
from napari_medseg.core.losses.restoration.pixel import L1Loss, MSELoss
from napari_medseg.core.losses.restoration.spec import (
    ALIASES,
    PIXELWISE,
    RESTORATION_LOSSES,
    CompositeLoss,
    LossFactory,
    make_restoration_loss,
    parse_loss_spec,
)
from napari_medseg.core.losses.restoration.ssim import SSIMLoss, ssim_torch

__all__ = [
    "RESTORATION_LOSSES",
    "AdversarialLoss",
    "CompositeLoss",
    "L1Loss",
    "MSELoss",
    "PatchDiscriminator",
    "PerceptualLoss",
    "SSIMLoss",
    "make_restoration_loss",
    "parse_loss_spec",
    "ssim_torch",
]
