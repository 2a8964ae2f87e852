"""Metrics: overlap in millimetres (Dice, HD95, NSD) and image quality (MAE ... SSIM)."""

from napari_medseg.core.metrics.image import (
    evaluate_restoration,
    mae,
    mse,
    nmse,
    nmse_variance,
    psnr,
    ssim,
)
from napari_medseg.core.metrics.overlap import (
    dice,
    dice_per_class,
    evaluate_segmentation,
    hausdorff95,
    hausdorff_distance,
    normalized_surface_dice,
    to_jsonable,
)

__all__ = [
    "evaluate_restoration",
    "mae",
    "mse",
    "nmse",
    "nmse_variance",
    "psnr",
    "ssim",
    "dice",
    "dice_per_class",
    "evaluate_segmentation",
    "hausdorff95",
    "hausdorff_distance",
    "normalized_surface_dice",
    "to_jsonable",
]
