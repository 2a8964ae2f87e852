"""UNet (2D/3D): encoder, skip concatenation, decoder, 1x1 head."""

from __future__ import annotations

import torch
from torch import nn

from napari_medseg.core.config import ModelConfig
from napari_medseg.core.models.blocks import DoubleConv, Encoder, SegNet, Up, conv, widths


class UNet(SegNet):
    """UNet with ``config.depth`` levels.

    Each level is two conv-norm-LeakyReLU blocks; levels are joined by a
    stride-2 convolution going down and by :class:`~.blocks.Up` going up,
    whose output is concatenated with the encoder features of that level.
    Dropout (if any) applies to the bottleneck and every decoder level.

    Parameters
    ----------
    config : ModelConfig
        Architecture; ``config.arch`` is not consulted.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        w = widths(config)
        d = config.spatial_dims
        self.encoder = Encoder(config)
        self.ups = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for level in reversed(range(config.depth - 1)):
            self.ups.append(Up(d, w[level + 1], w[level], config.upsample))
            self.decoder.append(
                DoubleConv(d, 2 * w[level], w[level], config.norm, dropout=config.dropout)
            )
        self.head = conv(d, w[0], config.out_channels, 1)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        x = feats.pop()
        for up, block in zip(self.ups, self.decoder):
            x = block(torch.cat((feats.pop(), up(x)), dim=1))
        return self.head(x)
