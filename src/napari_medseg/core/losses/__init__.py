"""Training losses: segmentation and restoration, each with a name -> factory table."""

from napari_medseg.core.losses.restoration import (
    RESTORATION_LOSSES,
    AdversarialLoss,
    CompositeLoss,
    L1Loss,
    MSELoss,
    PatchDiscriminator,
    PerceptualLoss,
    SSIMLoss,
    make_restoration_loss,
    parse_loss_spec,
    ssim_torch,
)
from napari_medseg.core.losses.segmentation import (
    LOSSES,
    BCELoss,
    CrossEntropyLoss,
    DiceCELoss,
    SoftDiceLoss,
    make_loss,
)

__all__ = [
    "LOSSES",
    "RESTORATION_LOSSES",
    "AdversarialLoss",
    "BCELoss",
    "CompositeLoss",
    "CrossEntropyLoss",
    "DiceCELoss",
    "L1Loss",
    "MSELoss",
    "PatchDiscriminator",
    "PerceptualLoss",
    "SSIMLoss",
    "SoftDiceLoss",
    "make_loss",
    "make_restoration_loss",
    "parse_loss_spec",
    "ssim_torch",
]
