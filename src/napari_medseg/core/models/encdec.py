"""Plain encoder-decoder: no skips, one up-sampling to full size at the end."""

from __future__ import annotations

import torch
from torch import nn

from napari_medseg.core.config import ModelConfig
from napari_medseg.core.models.blocks import DoubleConv, Encoder, SegNet, conv, upsampler, widths


class EncDec(SegNet):
    """Encoder, then decoder blocks at the bottleneck resolution, then one up-sampling.

    The decoder narrows the features level by level (``w[l+1] -> w[l]``)
    without changing resolution; a 1x1 head gives logits, which a single
    interpolation (or transposed convolution) by ``config.divisor`` brings
    to full size. This is the seed's baseline without skip connections:
    cheap, but blurry at boundaries.

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
        self.decoder = nn.Sequential(*(
            DoubleConv(d, w[level + 1], w[level], config.norm, dropout=config.dropout)
            for level in reversed(range(config.depth - 1))
        ))
        self.head = conv(d, w[0], config.out_channels, 1)
        self.up = (
            upsampler(d, config.out_channels, config.upsample, config.divisor)
            if config.depth > 1 else nn.Identity()
        )

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        x = self.encoder(x, all_levels=False)[0]
        return self.up(self.head(self.decoder(x)))
