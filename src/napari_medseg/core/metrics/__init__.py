"""Metrics: overlap in millimetres (Dice, HD95, NSD); image quality metrics join later."""

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
    "dice",
    "dice_per_class",
    "evaluate_segmentation",
    "hausdorff95",
    "hausdorff_distance",
    "normalized_surface_dice",
    "to_jsonable",
]
