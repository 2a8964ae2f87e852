"""Adversarial loss: least-squares GAN with a small PatchGAN discriminator (off by default)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from napari_medseg.core.losses.restoration.pixel import _check_pair, _no_mask

class PatchDiscriminator(nn.Module):
    """A small PatchGAN: strided convolutions to a map of real/fake scores (one per patch).

    ``layers`` stride-2 convolutions (4^d kernels, LeakyReLU 0.2, instance norm after the
    first) and a final 1-channel convolution; its receptive field is ~``16 * 2**(layers-2)``
    voxels, so it judges local texture (noise left, blur) rather than global content.
    """

    def __init__(self, *, spatial_dims: int, in_channels: int = 1, width: int = 32,
                 layers: int = 3) -> None:
        super().__init__()
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        norm = nn.InstanceNorm3d if spatial_dims == 3 else nn.InstanceNorm2d
        mods: list[nn.Module] = []
        cin = in_channels
        for i in range(layers):
            cout = width * 2**i
            mods.append(conv(cin, cout, 4, stride=2, padding=1))
            if i > 0:
                mods.append(norm(cout, affine=True))
            mods.append(nn.LeakyReLU(0.2, inplace=True))
            cin = cout
        mods.append(conv(cin, 1, 3, padding=1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class AdversarialLoss(nn.Module):
    """Least-squares GAN loss with its own :class:`PatchDiscriminator` (off by default).

    ``loss(pred, target)`` is the generator's term ``mean((D(pred) - 1)^2)``: small when the
    discriminator takes the restored patch for a clean one. The discriminator learns in
    :meth:`discriminator_step` (called by the training loop after each generator step via
    :meth:`CompositeLoss.after_step`) with Adam (lr 2e-4, betas 0.5/0.999), minimising
    ``0.5 * (mean((D(clean) - 1)^2) + mean(D(restored)^2))``. Use a small weight (0.001-0.01)
    next to a pixel loss: alone, a GAN invents texture.
    """

    def __init__(self, *, spatial_dims: int, in_channels: int = 1, lr: float = 2e-4,
                 width: int = 32, layers: int = 3) -> None:
        super().__init__()
        self.discriminator = PatchDiscriminator(spatial_dims=spatial_dims,
                                                in_channels=in_channels, width=width,
                                                layers=layers)
        self.lr = lr
        self._opt: torch.optim.Optimizer | None = None

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        _check_pair(pred, target, "adv")
        _no_mask(mask, "adv")
        return ((self.discriminator(pred.float()) - 1) ** 2).mean()

    def discriminator_step(self, pred: Tensor, target: Tensor) -> float:
        """One optimisation step of the discriminator; returns its loss."""
        if self._opt is None:
            self._opt = torch.optim.Adam(self.discriminator.parameters(), lr=self.lr,
                                         betas=(0.5, 0.999))
        d = self.discriminator
        loss = 0.5 * (((d(target.detach().float()) - 1) ** 2).mean()
                      + (d(pred.detach().float()) ** 2).mean())
        self._opt.zero_grad(set_to_none=True)
        loss.backward()
        self._opt.step()
        return float(loss.detach())
