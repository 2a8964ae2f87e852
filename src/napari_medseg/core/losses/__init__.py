"""Training losses: segmentation (here) and restoration (to come), one name -> factory table."""

from napari_medseg.core.losses.segmentation import (
    LOSSES,
    BCELoss,
    CrossEntropyLoss,
    DiceCELoss,
    SoftDiceLoss,
    make_loss,
)

__all__ = ["LOSSES", "BCELoss", "CrossEntropyLoss", "DiceCELoss", "SoftDiceLoss", "make_loss"]
