"""Perceptual loss: distance between the features of a frozen (trained or random) UNet encoder."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from napari_medseg.core.losses.restoration.pixel import _check_pair, _no_mask

def _frozen(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


class PerceptualLoss(nn.Module):
    """Distance between deep features of a frozen network (a "perceptual" loss).

    The features are the levels of a UNet encoder (:class:`~napari_medseg.core.models.blocks.
    Encoder`): each level's activations of ``pred`` and ``target`` are compared with the mean
    absolute difference, and the levels are averaged. No gradient flows into the encoder.

    Which network
    -------------
    ``checkpoint``: a model trained with this project (``napari-medseg train``), typically a
    segmentation model trained on medical images, as the seed suggests ("a network trained on
    CT for another task"): its encoder has learnt anatomy-relevant features. Its first
    ``levels`` levels are used; a single restoration channel is repeated to the encoder's input
    channels. With ``checkpoint=None`` there is no download: a **randomly initialised, frozen**
    UNet encoder (fixed seed, instance norm, 16-32-64 feature maps) is used. Random
    convolutional features still respond to edges and textures at several scales, which is why
    they work as a perceptual distance (Ulyanov et al., deep image prior; Zhang et al. 2018
    report random networks as a meaningful baseline), but a trained encoder is better: pass one.

    Parameters
    ----------
    spatial_dims : {2, 3}
    checkpoint : str or None
        Path of a napari-medseg checkpoint whose model has an ``encoder``.
    levels : int
        Encoder levels compared (finest first).
    seed : int
        Seed of the random encoder (no checkpoint).
    """

    def __init__(self, *, spatial_dims: int, checkpoint: str | None = None, levels: int = 3,
                 seed: int = 0) -> None:
        super().__init__()
        from napari_medseg.core.config import ModelConfig
        from napari_medseg.core.models import build_model

        if checkpoint:
            from napari_medseg.core.checkpoint import load_checkpoint

            ckpt = load_checkpoint(checkpoint)
            if ckpt.model_config.spatial_dims != spatial_dims:
                raise ValueError(f"{checkpoint}: a {ckpt.model_config.spatial_dims}D model cannot "
                                 f"give features of {spatial_dims}D patches; pick a "
                                 f"{spatial_dims}D model for the perceptual loss.")
            model = ckpt.build_model()
            self.source = f"encoder of {checkpoint} ({ckpt.describe()})"
        else:
            cfg = ModelConfig(arch="unet", spatial_dims=spatial_dims, in_channels=1,
                              out_channels=1, base_width=16, depth=max(3, levels), norm="instance")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = build_model(cfg)
            self.source = f"random frozen UNet encoder (seed {seed}; no checkpoint given)"
        encoder = getattr(model, "encoder", None)
        if encoder is None:
            raise ValueError(f"{checkpoint}: model has no encoder to take features from.")
        self.encoder = _frozen(encoder)
        self.in_channels = int(model.config.in_channels)  # type: ignore[union-attr]
        self.levels = max(1, min(int(levels), len(self.encoder.levels)))  # type: ignore[arg-type]
        self.spatial_dims = spatial_dims

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.encoder.eval()  # frozen: batch-norm statistics never update
        return self

    def _features(self, x: Tensor) -> list[Tensor]:
        if x.shape[1] != self.in_channels:
            if x.shape[1] != 1:
                raise ValueError(f"perceptual: images have {x.shape[1]} channels, the encoder "
                                 f"takes {self.in_channels}.")
            x = x.expand(-1, self.in_channels, *x.shape[2:])
        fmt = torch.channels_last_3d if x.dim() == 5 else torch.channels_last
        x = x.float().contiguous(memory_format=fmt)
        feats = []
        for level in list(self.encoder.levels)[: self.levels]:  # type: ignore[union-attr]
            x = level(x)
            feats.append(x)
        return feats

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        _check_pair(pred, target, "perceptual")
        _no_mask(mask, "perceptual")
        if pred.dim() - 2 != self.spatial_dims:
            raise ValueError(f"perceptual: {self.spatial_dims}D encoder, "
                             f"{pred.dim() - 2}D images.")
        with torch.no_grad():
            ft = self._features(target)
        fp = self._features(pred)
        return torch.stack([(a - b).abs().mean() for a, b in zip(fp, ft)]).mean()
