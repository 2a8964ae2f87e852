"""Frozen, validated configuration dataclasses with a JSON round-trip.

Configs travel inside checkpoints, so they hold only JSON-friendly values
(ints, floats, strings, bools, tuples of ints) and validate on creation: a
bad value fails where it is written, not twenty minutes into training.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

ARCHS = ("unet", "encdec", "fcn")
NORMS = ("instance", "batch", "group", "none")
UPSAMPLES = ("interp", "transpose")
SEG_LOSSES = ("dice_ce", "dice_ce_fg", "dice", "ce", "bce")
INTENSITY_NORMS = ("percentile", "zscore", "median_iqr", "none")
DEVICES = ("auto", "cpu", "cuda", "mps")
RATER_MODES = ("soft", "sample", "majority")
DECISIONS = ("argmax", "foreground")  # core.decision.RULES
#: Default half-width of the augmentation's intensity scale (1 +- j) and shift (+- j) draws.
INTENSITY_JITTER = 0.15
#: Fraction of patches zoomed when the augmentation's zoom is on (``TrainConfig.scale_jitter``).
P_SCALE = 0.3

T = TypeVar("T")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(choices)}.")


def check_training_limits(cfg: Any) -> None:
    """Validate what every training config has: ``patch_size``, ``batch_size``,
    ``steps_per_epoch``, and a limit in ``epochs`` and/or ``minutes``."""
    if len(cfg.patch_size) not in (2, 3) or min(cfg.patch_size) < 1:
        raise ValueError(f"patch_size must be 2 or 3 positive ints, got {cfg.patch_size}.")
    if cfg.batch_size < 1 or cfg.steps_per_epoch < 1:
        raise ValueError("batch_size and steps_per_epoch must be >= 1.")
    if cfg.epochs is None and cfg.minutes is None:
        raise ValueError("Set epochs, minutes, or both: training needs a limit.")
    if cfg.epochs is not None and cfg.epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {cfg.epochs}.")
    if cfg.minutes is not None and cfg.minutes <= 0:
        raise ValueError(f"minutes must be > 0, got {cfg.minutes}.")


class _JsonMixin:
    """``to_dict`` / ``from_dict`` shared by the config dataclasses."""

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (tuples become lists)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls: type[T], d: dict[str, Any]) -> T:
        """Build from a dict, ignoring unknown keys written by newer versions."""
        names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        kwargs = {}
        for k, v in d.items():
            if k in names:
                kwargs[k] = tuple(v) if isinstance(v, list) else v
        return cls(**kwargs)


@dataclass(frozen=True)
class ModelConfig(_JsonMixin):
    """Network architecture.

    Parameters
    ----------
    arch : {"unet", "encdec", "fcn"}
        ``unet``: skip connections at every level. ``encdec``: plain
        encoder-decoder without skips that upsamples once at the end.
        ``fcn``: fuses upsampled class predictions from several scales.
    spatial_dims : {2, 3}
        2D or 3D convolutions.
    in_channels, out_channels : int
        Input image channels; output logits (classes, or 1 for binary BCE).
    base_width : int
        Feature maps at the first level; doubled at each level down.
    depth : int
        Number of resolution levels (``depth - 1`` down-samplings).
    norm : {"instance", "batch", "group", "none"}
        Normalisation after each convolution.
    dropout : float
        Dropout probability in the bottleneck and decoder blocks (0 disables).
    upsample : {"interp", "transpose"}
        (Bi/tri)linear interpolation followed by a convolution, or a
        transposed convolution.
    residual : bool
        Add the (first) input channel to the output: restoration networks
        predict the correction rather than the image.
    """

    arch: str = "unet"
    spatial_dims: int = 3
    in_channels: int = 1
    out_channels: int = 2
    base_width: int = 16
    depth: int = 4
    norm: str = "instance"
    dropout: float = 0.0
    upsample: str = "interp"
    residual: bool = False

    def __post_init__(self) -> None:
        _check_choice("arch", self.arch, ARCHS)
        _check_choice("norm", self.norm, NORMS)
        _check_choice("upsample", self.upsample, UPSAMPLES)
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {self.spatial_dims}.")
        if self.in_channels < 1 or self.out_channels < 1:
            raise ValueError("in_channels and out_channels must be >= 1.")
        if self.base_width < 1:
            raise ValueError(f"base_width must be >= 1, got {self.base_width}.")
        if not 1 <= self.depth <= 7:
            raise ValueError(f"depth must be between 1 and 7, got {self.depth}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")

    @property
    def divisor(self) -> int:
        """Spatial sizes that are multiples of this need no padding."""
        return 2 ** (self.depth - 1)


@dataclass(frozen=True)
class TrainConfig(_JsonMixin):
    """How to train.

    Parameters
    ----------
    patch_size : tuple of int
        Spatial patch size (2 or 3 values, matching ``spatial_dims``).
    batch_size : int
        Patches per optimisation step.
    loss : {"dice_ce", "dice", "ce", "bce"}
        Segmentation loss.
    lr, weight_decay : float
        AdamW settings.
    epochs : int or None
        Number of epochs of ``steps_per_epoch`` steps; ``None`` means
        limited by ``minutes`` only.
    minutes : float or None
        Wall-clock budget; training stops after the first step that
        exceeds it. At least one of ``epochs`` and ``minutes`` is set.
    steps_per_epoch : int
        Optimisation steps between validations.
    seed : int
        Seeds python, numpy and torch.
    device : {"auto", "cpu", "cuda", "mps"}
        ``auto`` picks CUDA, then MPS, then CPU.
    fg_oversample : float
        Fraction of patches centred on a labelled foreground voxel.
    augment : bool
        Flips, intensity scale/shift, gamma, small rotations.
    intensity_jitter : float
        With ``augment``: each channel of each patch is scaled by a factor drawn
        from ``1 ± intensity_jitter`` and shifted by up to ``± intensity_jitter``
        (normalised units), in [0, 1). Wider draws teach a model not to rely on
        one scanner's or one case's contrast.
    scale_jitter : float
        With ``augment``: zoom 30 % of the patches by a factor drawn log-uniformly from
        ``[1 / (1 + scale_jitter), 1 + scale_jitter]``, in [0, 1); 0 (the default) does
        not zoom. For structures whose size varies more than a few training cases show.
    intensity_norm : {"percentile", "zscore", "median_iqr", "none"}
        Per-channel normalisation (see :func:`~napari_medseg.core.normalize.fit_normalization`);
        ``"none"`` keeps the values, for images that are already normalised.
    slice_axis : int
        For 2D models on 3D volumes: the spatial axis to slice along.
    val_fraction : float
        Fraction of cases held out for validation (when there are
        several cases); with one case, validation runs on the training case.
    amp : bool
        Mixed precision on CUDA.
    spacing : tuple of float or None
        Voxel spacing (mm) to train and predict at; inputs are resampled to
        it and predictions back to the input grid. None keeps the native grid.
    crop_foreground : bool
        Crop each image to the bounding box of its non-zero voxels (a brain
        mask for skull-stripped MR); nothing outside it is labelled foreground.
    overlap : float
        Sliding-window overlap for validation and prediction.
    decision : {"argmax", "foreground"}
        How probabilities become labels at validation and prediction (see
        :mod:`napari_medseg.core.decision`): the most probable class, or foreground first
        (foreground when the foreground classes together pass ``threshold``, then the most
        probable of them) for classes that are parts of one structure, such as tumour
        sub-regions.
    threshold : float
        Foreground probability above which a voxel is foreground, in (0, 1): for
        ``decision="foreground"`` and for models with one foreground class (a single
        BCE output or a two-class softmax) under either decision. Below 0.5 outlines
        more generously (Dice rewards that where boundaries are uncertain: for calibrated
        probabilities the Dice-optimal threshold is about half the attainable Dice).
    raters : {"soft", "sample", "majority"}
        How to train on cases labelled by several raters (see
        :func:`napari_medseg.core.prepare.prepare_rater_case`). ``soft``: per-class
        vote fractions as soft targets (cross-entropy with soft targets plus a soft
        Dice that is minimal at the vote fraction); ``sample``: each patch takes
        the labels of one rater drawn at random; ``majority``: train on the
        plurality vote. Cases with one label volume train the same way in every
        mode.
    """

    patch_size: tuple[int, ...] = (64, 64, 64)
    batch_size: int = 2
    loss: str = "dice_ce"
    lr: float = 2e-3
    weight_decay: float = 1e-5
    epochs: int | None = 10
    minutes: float | None = None
    steps_per_epoch: int = 50
    seed: int = 0
    device: str = "auto"
    fg_oversample: float = 0.5
    augment: bool = True
    intensity_jitter: float = INTENSITY_JITTER
    scale_jitter: float = 0.0
    intensity_norm: str = "percentile"
    slice_axis: int = 2
    val_fraction: float = 0.0
    amp: bool = True
    spacing: tuple[float, ...] | None = None
    crop_foreground: bool = True
    overlap: float = 0.5
    raters: str = "soft"
    decision: str = "argmax"
    threshold: float = 0.5
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_choice("loss", self.loss, SEG_LOSSES)
        _check_choice("device", self.device, DEVICES)
        _check_choice("intensity_norm", self.intensity_norm, INTENSITY_NORMS)
        _check_choice("raters", self.raters, RATER_MODES)
        _check_choice("decision", self.decision, DECISIONS)
        check_training_limits(self)
        if not 0.0 <= self.fg_oversample <= 1.0:
            raise ValueError(f"fg_oversample must be in [0, 1], got {self.fg_oversample}.")
        if self.spacing is not None and (len(self.spacing) not in (2, 3) or min(self.spacing) <= 0):
            raise ValueError(f"spacing must be 2 or 3 positive values in mm, got {self.spacing}.")
        if not 0.0 <= self.intensity_jitter < 1.0:
            raise ValueError(f"intensity_jitter must be in [0, 1), got {self.intensity_jitter}.")
        if not 0.0 <= self.scale_jitter < 1.0:
            raise ValueError(f"scale_jitter must be in [0, 1), got {self.scale_jitter}.")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}.")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must lie strictly between 0 and 1, got "
                             f"{self.threshold}.")
        if self.slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1 or 2, got {self.slice_axis}.")

    def spacing_text(self) -> str:
        """The training spacing in words: ``"2x2x1.5 mm"``, ``"native grid"``, or for a 2D
        model on 3D volumes the in-plane values (each volume keeps its own slice spacing)."""
        if self.spacing is None:
            return "native grid"
        sp = list(self.spacing)
        if len(self.patch_size) == 2 and len(sp) == 3:
            del sp[self.slice_axis]
            return "x".join(f"{s:g}" for s in sp) + " mm in plane"
        return "x".join(f"{s:g}" for s in sp) + " mm"
