"""Metrics: overlap in millimetres (Dice, HD95, NSD), per slice and as maps; image quality
(MAE ... SSIM) and error maps; CSV tables of both."""

from napari_medseg.core.metrics.image import (
    evaluate_restoration,
    mae,
    mse,
    nmse,
    nmse_variance,
    psnr,
    ssim,
    ssim_window,
)
from napari_medseg.core.metrics.image_maps import absolute_error_map, per_slice_errors
from napari_medseg.core.metrics.overlap import dice, dice_per_class
from napari_medseg.core.metrics.report import evaluate_segmentation, to_jsonable
from napari_medseg.core.metrics.slices import (
    FN,
    FP,
    NONE,
    OVERLAP_NAMES,
    TP,
    WRONG_CLASS,
    SliceDice,
    overlap_map,
    per_slice_dice,
    size_unit,
    unit_of,
    volume_difference,
    worst_slice,
)
from napari_medseg.core.metrics.surface import (
    hausdorff95,
    hausdorff_distance,
    normalized_surface_dice,
)
from napari_medseg.core.metrics.table import (
    RESTORATION_COLUMNS,
    SEGMENTATION_COLUMNS,
    restoration_rows,
    segmentation_columns,
    segmentation_rows,
    write_csv,
)

__all__ = [
    "evaluate_restoration",
    "mae",
    "mse",
    "nmse",
    "nmse_variance",
    "psnr",
    "ssim",
    "ssim_window",
    "dice",
    "dice_per_class",
    "evaluate_segmentation",
    "hausdorff95",
    "hausdorff_distance",
    "normalized_surface_dice",
    "to_jsonable",
    "absolute_error_map",
    "per_slice_errors",
    "FN",
    "FP",
    "NONE",
    "OVERLAP_NAMES",
    "TP",
    "WRONG_CLASS",
    "SliceDice",
    "overlap_map",
    "per_slice_dice",
    "size_unit",
    "unit_of",
    "volume_difference",
    "worst_slice",
    "RESTORATION_COLUMNS",
    "SEGMENTATION_COLUMNS",
    "restoration_rows",
    "segmentation_columns",
    "segmentation_rows",
    "write_csv",
]
