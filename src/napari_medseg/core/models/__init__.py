"""Segmentation and restoration networks; :func:`build_model` picks one from a config."""

from __future__ import annotations

from torch import nn

from napari_medseg.core.config import ModelConfig
from napari_medseg.core.models.blocks import SegNet, to_channels_last
from napari_medseg.core.models.encdec import EncDec
from napari_medseg.core.models.fcn import FCN
from napari_medseg.core.models.unet import UNet

__all__ = ["ARCHITECTURES", "EncDec", "FCN", "SegNet", "UNet", "build_model", "count_parameters"]

#: ``ModelConfig.arch`` -> network class.
ARCHITECTURES: dict[str, type[SegNet]] = {"unet": UNet, "encdec": EncDec, "fcn": FCN}


def build_model(config: ModelConfig) -> nn.Module:
    """Build the network a :class:`ModelConfig` describes.

    Parameters
    ----------
    config : ModelConfig
        Architecture, widths, normalisation, up-sampling, residual flag.

    Returns
    -------
    torch.nn.Module
        Maps ``(N, in_channels, *S)`` to ``(N, out_channels, *S)`` logits for
        any spatial size ``S`` (padded internally to a multiple of
        ``config.divisor``, then cropped back). Weights are stored
        channels-last, which is fastest on CPU; the output is contiguous.

    Raises
    ------
    ValueError
        If the configuration is inconsistent (``residual`` with channel
        counts that cannot be added).
    """
    if config.residual and config.out_channels not in (config.in_channels, 1):
        raise ValueError(
            f"residual=True adds the input to the output, so out_channels must equal "
            f"in_channels ({config.in_channels}) or be 1, got out_channels={config.out_channels}; "
            f"set residual=False for segmentation."
        )
    model = ARCHITECTURES[config.arch](config)
    return to_channels_last(model, config.spatial_dims)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
