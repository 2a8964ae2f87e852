"""Restoration: train denoising / degradation-removal networks and restore images.

Three ways to get training pairs (:class:`RestoreConfig` ``mode``):

* ``pairs`` -- noisy images with registered clean targets;
* ``synthetic`` -- clean images degraded on the fly (:mod:`napari_medseg.core.degrade`);
* ``noise2void`` -- noisy images alone, self-supervised blind-spot masking.

::

    case = prepare_restore_case(clean, mode="synthetic", degrade="rician:0.05")
    rc = RestoreConfig(mode="synthetic", degrade="rician:0.05", loss="l1+ssim", epochs=5)
    mc = restoration_model_config(spatial_dims=2)
    result = run(fit_restoration([case], model_config=mc, config=rc))
    restored = run(restore(result.checkpoint, noisy))
"""

from napari_medseg.core.restoration.apply import inference_patch, restore, restore_array
from napari_medseg.core.restoration.config import MODES, RestoreConfig
from napari_medseg.core.restoration.data import (
    RestoreCase,
    RestorePatchSampler,
    apply_norm,
    blind_spot,
    fit_restore_norm,
    invert_norm,
    prepare_restore_case,
)
from napari_medseg.core.restoration.train import (
    RestoreResult,
    RestoreValidated,
    fit_restoration,
    restoration_model_config,
    validate_restoration,
)

__all__ = [
    "MODES",
    "RestoreCase",
    "RestoreConfig",
    "RestorePatchSampler",
    "RestoreResult",
    "RestoreValidated",
    "apply_norm",
    "blind_spot",
    "fit_restoration",
    "fit_restore_norm",
    "inference_patch",
    "invert_norm",
    "prepare_restore_case",
    "restoration_model_config",
    "restore",
    "restore_array",
    "validate_restoration",
]
