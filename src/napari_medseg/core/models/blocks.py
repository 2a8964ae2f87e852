"""Building blocks shared by the UNet, encoder-decoder and FCN.

Speed notes (2-core CPU, measured in ``benchmarks/throughput.py``):

* Every network runs channels-last (``channels_last`` / ``channels_last_3d``):
  oneDNN convolutions are 1.3-1.7x faster that way. Normalisation is the
  fused :class:`~napari_medseg.core.models.norm.NormAct`, because PyTorch's
  own norm kernels are slow channels-last.
* Convolutions followed by a normalisation have no bias: the norm removes it.
* Down-sampling is the first convolution of a level with stride 2 rather
  than max-pooling then a convolution: the same output size and FLOPs,
  measured a little faster, and no max-pool indices kept for backward.
* "interp" up-sampling applies its 1x1 convolution *before* the
  interpolation, at the coarse resolution: both are linear maps acting on
  different axes, so the order does not change the result, only the cost.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from napari_medseg.core.config import ModelConfig
from napari_medseg.core.models.norm import NormAct, channels_last_format

#: Widest feature map per level (nnU-Net's caps): beyond them memory grows faster than accuracy.
MAX_WIDTH = {2: 512, 3: 320}


def widths(config: ModelConfig) -> list[int]:
    """Feature maps per level: ``base_width * 2**level``, capped by :data:`MAX_WIDTH`."""
    cap = max(MAX_WIDTH[config.spatial_dims], config.base_width)
    return [min(config.base_width * 2**level, cap) for level in range(config.depth)]


def conv(
    spatial_dims: int, cin: int, cout: int, kernel: int, *, stride: int = 1, bias: bool = True
) -> nn.Module:
    """A 2D or 3D convolution with 'same' padding for odd kernels."""
    cls = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
    return cls(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=bias)


def conv_transpose(spatial_dims: int, cin: int, cout: int, factor: int) -> nn.Module:
    """A transposed convolution that up-samples by ``factor`` (kernel = stride = factor)."""
    cls = nn.ConvTranspose3d if spatial_dims == 3 else nn.ConvTranspose2d
    return cls(cin, cout, factor, stride=factor)


def interpolate(x: torch.Tensor, factor: int) -> torch.Tensor:
    """(Bi/tri)linear up-sampling by an integer factor."""
    mode = "trilinear" if x.dim() == 5 else "bilinear"
    return F.interpolate(x, scale_factor=factor, mode=mode, align_corners=False)


class ConvNormAct(nn.Module):
    """3x3(x3) convolution, normalisation, LeakyReLU, optional dropout."""

    def __init__(
        self, spatial_dims: int, cin: int, cout: int, norm: str, *, stride: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.conv = conv(spatial_dims, cin, cout, 3, stride=stride, bias=norm == "none")
        self.act = NormAct(norm, cout, inplace=True)
        # Not in-place: the fused norm keeps its output for the backward pass.
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.act(self.conv(x)))


class DoubleConv(nn.Sequential):
    """Two :class:`ConvNormAct`; the first may down-sample with stride 2."""

    def __init__(
        self, spatial_dims: int, cin: int, cout: int, norm: str, *, stride: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(
            ConvNormAct(spatial_dims, cin, cout, norm, stride=stride, dropout=dropout),
            ConvNormAct(spatial_dims, cout, cout, norm, dropout=dropout),
        )


class Encoder(nn.Module):
    """One :class:`DoubleConv` per level, halving the resolution between levels.

    Dropout applies to the bottleneck (deepest level) only. ``forward``
    returns every level's features, finest first, or with ``all_levels=False``
    only the deepest (so the others can be freed as soon as they are used).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        w = widths(config)
        d, norm = config.spatial_dims, config.norm
        levels = []
        for level, cout in enumerate(w):
            cin = config.in_channels if level == 0 else w[level - 1]
            drop = config.dropout if level == config.depth - 1 and level > 0 else 0.0
            stride = 1 if level == 0 else 2
            levels.append(DoubleConv(d, cin, cout, norm, stride=stride, dropout=drop))
        self.levels = nn.ModuleList(levels)

    def forward(self, x: torch.Tensor, *, all_levels: bool = True) -> list[torch.Tensor]:
        feats = []
        for level in self.levels:
            x = level(x)
            if all_levels:
                feats.append(x)
        return feats if all_levels else [x]


class Up(nn.Module):
    """Doubles the resolution and maps ``cin`` to ``cout`` channels.

    ``mode="transpose"``: a 2x2(x2) transposed convolution; ``"interp"``: a
    1x1 convolution then (bi/tri)linear interpolation (see module notes).
    """

    def __init__(self, spatial_dims: int, cin: int, cout: int, mode: str, factor: int = 2) -> None:
        super().__init__()
        self.factor = factor
        self.interp = mode == "interp"
        if self.interp:
            self.proj = conv(spatial_dims, cin, cout, 1)
        else:
            self.proj = conv_transpose(spatial_dims, cin, cout, factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        return interpolate(x, self.factor) if self.interp else x


class Resize(nn.Module):
    """(Bi/tri)linear up-sampling by an integer factor, as a module."""

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return interpolate(x, self.factor)


def upsampler(spatial_dims: int, channels: int, mode: str, factor: int) -> nn.Module:
    """Same-width up-sampling by ``factor``: :class:`Resize` or a transposed convolution.

    For score maps that a 1x1 convolution has just produced, where the
    projection of :class:`Up` would be redundant.
    """
    if mode == "interp":
        return Resize(factor)
    return conv_transpose(spatial_dims, channels, channels, factor)


class SegNet(nn.Module):
    """Base class: padding to the down-sampling divisor, channels-last, residual.

    Subclasses implement :meth:`forward_padded` on inputs whose spatial sizes
    are multiples of ``config.divisor``. The output has the input's spatial
    shape and ``config.out_channels`` channels, in the standard (contiguous)
    layout so losses may ``view`` it.

    With ``config.residual`` the input is added to the output: channel by
    channel when ``out_channels == in_channels``, else (``out_channels ==
    1``) input channel 0, so a restoration network learns the correction.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.config.spatial_dims
        if x.dim() != d + 2 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"Expected input (batch, {self.config.in_channels}, {', '.join('S' * d)}), "
                f"got {tuple(x.shape)}; add batch/channel axes or check in_channels."
            )
        size = x.shape[2:]
        div = self.config.divisor
        pad = [(-s) % div for s in size]
        h = x
        if any(pad):
            # F.pad lists the last axis first; pad at the far end only, so cropping is a slice.
            flat = [v for p in reversed(pad) for v in (0, p)]
            h = F.pad(x, flat, mode="replicate")
        if h.device.type != "mps":  # channels-last 3D is not a fast path on Apple GPUs
            h = h.contiguous(memory_format=channels_last_format(h.dim()))
        out = self.forward_padded(h)
        if any(pad):
            out = out[(slice(None), slice(None), *(slice(0, s) for s in size))]
        out = out.contiguous()
        if self.config.residual:
            # In place: out is the head's fresh output (or a copy), never needed by backward.
            out.add_(x if self.config.out_channels == self.config.in_channels else x[:, :1])
        return out


def to_channels_last(model: nn.Module, spatial_dims: int) -> nn.Module:
    """Store convolution weights channels-last, matching the activations."""
    return model.to(memory_format=channels_last_format(spatial_dims + 2))
