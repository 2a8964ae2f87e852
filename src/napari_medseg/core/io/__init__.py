"""File formats: NIfTI (keeps affine and voxel spacing), PNG and TIFF.

The only package that knows about file formats. Everything returns a
:class:`Volume` so spacing and affine travel with the array from the file
through training and prediction back to disk. Callers import this package
(``from napari_medseg.core import io``); the modules split the work:
:mod:`~napari_medseg.core.io.volume` (the volume, names, geometry),
:mod:`~napari_medseg.core.io.read`, :mod:`~napari_medseg.core.io.labels`
(label map or image?) and :mod:`~napari_medseg.core.io.write` (atomic writes).
Within the package the modules call each other directly: to replace a function in a
test, patch it where it is defined (``napari_medseg.core.io.write.write_nifti``).
"""

from napari_medseg.core.io.labels import (
    LABEL_NAME_ENDINGS,
    LABEL_NAME_STARTS,
    LABEL_NAME_WORDS,
    MAX_INTENT_LABEL_VALUES,
    MAX_LABEL_VALUES,
    MAX_NAMED_LABEL_VALUES,
    as_label_array,
    label_value_limit,
    looks_like_labels,
    named_like_labels,
)
from napari_medseg.core.io.read import colour_tagged_tiff, read_spatial, read_volume
from napari_medseg.core.io.volume import (
    NIFTI_SUFFIXES,
    RASTER_SUFFIXES,
    Volume,
    affine_from_spacing,
    drop_trailing_singletons,
    file_stem,
    is_nifti,
    is_supported,
    smallest_int_type,
    spacing_from_affine,
)
from napari_medseg.core.io.write import (
    atomic_write,
    png_array,
    write_nifti,
    write_raster,
    write_volume,
)

__all__ = [
    "LABEL_NAME_ENDINGS", "LABEL_NAME_STARTS", "LABEL_NAME_WORDS", "MAX_INTENT_LABEL_VALUES",
    "MAX_LABEL_VALUES", "MAX_NAMED_LABEL_VALUES", "NIFTI_SUFFIXES", "RASTER_SUFFIXES", "Volume",
    "affine_from_spacing", "as_label_array", "atomic_write", "colour_tagged_tiff",
    "drop_trailing_singletons", "file_stem", "is_nifti", "is_supported", "label_value_limit",
    "looks_like_labels", "named_like_labels", "png_array", "read_spatial", "read_volume",
    "smallest_int_type", "spacing_from_affine", "write_nifti", "write_raster", "write_volume",
]
