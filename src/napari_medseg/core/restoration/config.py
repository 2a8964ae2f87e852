"""How to train a restoration network: :class:`RestoreConfig` (frozen, validated, JSON)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from napari_medseg.core.config import DEVICES, check_training_limits

#: Training modes: clean targets given, clean images degraded on the fly, noisy images only.
MODES = ("pairs", "synthetic", "noise2void")


@dataclass(frozen=True)
class RestoreConfig:
    """Restoration training settings (the network is described by a ``ModelConfig``).

    Parameters
    ----------
    mode : {"pairs", "synthetic", "noise2void"}
        ``pairs``: noisy inputs with registered clean targets. ``synthetic``:
        clean images, degraded on the fly by ``degrade`` (a fresh noise draw
        for every patch). ``noise2void``: noisy images only, self-supervised
        with blind-spot masking (Krull et al. 2019): a few pixels of each
        patch are replaced by a random neighbour and the network learns to
        predict their original noisy values from the surroundings, which --
        for noise independent between pixels and zero-mean given the signal --
        has the clean image as its optimum.
    degrade : str
        Degradation spec (:func:`napari_medseg.core.degrade.parse_degradation`),
        required for ``synthetic``.
    loss : str
        Loss spec (:func:`napari_medseg.core.losses.parse_loss_spec`); only
        pixel losses (``l1``, ``mse``) for ``noise2void``.
    patch_size : tuple of int
        Training patch (2 or 3 values = the model's ``spatial_dims``).
    batch_size, steps_per_epoch : int
    lr, weight_decay : float
        AdamW; the learning rate decays polynomially to 0 over the budget.
    epochs, minutes : int or float or None
        Budget; at least one set. Training stops after the first step past it.
    seed : int
    device : {"auto", "cpu", "cuda", "mps"}
    slice_axis : int
        2D models on 3D volumes train on and restore slices along this axis.
    augment : bool
        Random flips (and in-plane 90 degree rotations for square patches);
        intensities are never augmented (the noise level is what is learnt).
    fg_fraction : float
        Fraction of patches centred on a foreground voxel (above the image
        mean): air-only patches teach little.
    val_fraction : float
        Cases held out for validation (at least one, when there are two or more).
    val_slices : int
        For 2D models on 3D volumes: validate on at most this many central
        slices (whole volumes cost minutes on a CPU); 0 = all.
    overlap : float
        Sliding-window overlap when restoring and validating.
    n2v_fraction : float
        ``noise2void``: fraction of pixels masked per patch (stratified).
    n2v_radius : int
        ``noise2void``: replacement values come from at most this many
        pixels away (never the pixel itself).
    perceptual_checkpoint : str or None
        Model whose encoder gives the perceptual loss's features.
    amp : bool
        Mixed precision on CUDA.
    """

    mode: str = "synthetic"
    degrade: str = ""
    loss: str = "l1"
    patch_size: tuple[int, ...] = (64, 64)
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-5
    epochs: int | None = 10
    minutes: float | None = None
    steps_per_epoch: int = 50
    seed: int = 0
    device: str = "auto"
    slice_axis: int = 2
    augment: bool = True
    fg_fraction: float = 0.8
    val_fraction: float = 0.0
    val_slices: int = 8
    overlap: float = 0.25
    n2v_fraction: float = 0.02
    n2v_radius: int = 2
    perceptual_checkpoint: str | None = None
    amp: bool = True

    def __post_init__(self) -> None:
        from napari_medseg.core.degrade import parse_degradation
        from napari_medseg.core.losses.restoration import PIXELWISE, parse_loss_spec

        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r} is not one of {', '.join(MODES)}.")
        if self.device not in DEVICES:
            raise ValueError(f"device={self.device!r} is not one of {', '.join(DEVICES)}.")
        deg = parse_degradation(self.degrade)  # raises with the valid names
        if self.mode == "synthetic" and not deg.steps():
            raise ValueError("mode 'synthetic' needs a degradation, e.g. degrade='rician:0.05'.")
        terms = parse_loss_spec(self.loss)
        if self.mode == "noise2void" and any(n not in PIXELWISE for _, n in terms):
            raise ValueError(f"noise2void learns from masked pixels only, so its loss must be "
                             f"pixel-wise (l1, mse); got {self.loss!r}.")
        check_training_limits(self)
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}.")
        if self.slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1 or 2, got {self.slice_axis}.")
        for name in ("fg_fraction", "val_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}.")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}.")
        if not 0.0 < self.n2v_fraction <= 0.5:
            raise ValueError(f"n2v_fraction must be in (0, 0.5], got {self.n2v_fraction}.")
        if self.n2v_radius < 1:
            raise ValueError(f"n2v_radius must be >= 1, got {self.n2v_radius}.")
        if self.val_slices < 0:
            raise ValueError(f"val_slices must be >= 0, got {self.val_slices}.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples become lists)."""
        return {f.name: (list(v) if isinstance(v, tuple) else v)
                for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RestoreConfig:
        """Inverse of :meth:`to_dict`; unknown keys (from newer versions) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()
                      if k in names})
