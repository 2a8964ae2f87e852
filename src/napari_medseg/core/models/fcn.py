"""FCN: class scores from every encoder scale, up-sampled and summed."""

from __future__ import annotations

import torch
from torch import nn

from napari_medseg.core.config import ModelConfig
from napari_medseg.core.models.blocks import Encoder, SegNet, conv, upsampler, widths


class FCN(SegNet):
    """Fully convolutional network with skip fusion (as FCN-8s, over all levels).

    A 1x1 convolution turns each encoder level's features into class
    scores; starting from the coarsest, scores are up-sampled 2x (by
    interpolation or a transposed convolution, per ``config.upsample``) and
    added to the next finer level's scores, ending at full resolution.

    Parameters
    ----------
    config : ModelConfig
        Architecture; ``config.arch`` is not consulted.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        d, k = config.spatial_dims, config.out_channels
        self.encoder = Encoder(config)
        self.scores = nn.ModuleList(conv(d, c, k, 1) for c in widths(config))
        self.ups = nn.ModuleList(
            upsampler(d, k, config.upsample, 2) for _ in range(config.depth - 1)
        )

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        out = self.scores[-1](feats[-1])
        for level in reversed(range(len(feats) - 1)):
            out = self.ups[level](out) + self.scores[level](feats[level])
        return out
