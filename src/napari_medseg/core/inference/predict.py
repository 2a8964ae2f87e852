"""Segmenting with a model: 3D or slice-wise 2D sliding windows, mirroring TTA, and the
probabilities, labels and entropy of a :class:`Prediction`."""

from __future__ import annotations

import itertools
from collections.abc import Generator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from napari_medseg.core.decision import check_rule, check_threshold, decide
from napari_medseg.core.events import Progress
from napari_medseg.core.inference.sliding import (
    ArrayLike,
    Blend,
    DeviceLike,
    _as_float_tensor,
    _resolve_device,
    _windows,
)
from napari_medseg.core.inference.tiling import tile_starts

__all__ = ["Prediction", "predict_volume"]


@dataclass(frozen=True, eq=False)
class Prediction:
    """Result of :func:`predict_volume`.

    Attributes
    ----------
    probabilities : numpy.ndarray
        ``(K, *spatial)`` float32. Softmax class probabilities for ``K > 1``;
        for ``K == 1`` the sigmoid foreground probability.
    labels : numpy.ndarray
        ``(*spatial)`` class indices: argmax over K, or ``probability > 0.5``
        for ``K == 1``. ``uint8`` when K <= 256, else ``int32``.
    entropy : numpy.ndarray
        ``(*spatial)`` float32 predictive entropy in nats: 0 for a certain
        voxel, at most ``ln K`` (``ln 2`` for ``K == 1``, binary entropy).
    """

    probabilities: np.ndarray
    labels: np.ndarray
    entropy: np.ndarray

    @property
    def num_classes(self) -> int:
        """Number of output channels K (1 for a binary sigmoid model)."""
        return int(self.probabilities.shape[0])


def _model_attr(model: nn.Module, name: str) -> int | None:
    for owner in (model, getattr(model, "config", None)):
        value = getattr(owner, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _model_device(model: nn.Module) -> torch.device:
    for p in itertools.chain(model.parameters(), model.buffers()):
        return p.device
    return torch.device("cpu")


def _entropy(prob: torch.Tensor) -> torch.Tensor:
    if prob.shape[0] == 1:
        p = prob[0]
        h = -(torch.special.xlogy(p, p) + torch.special.xlogy(1 - p, 1 - p))
    else:
        h = -torch.special.xlogy(prob, prob).sum(0)
    return h.clamp_min(0.0)


def _finish(prob: torch.Tensor, decision: str = "argmax", threshold: float = 0.5) -> Prediction:
    k = prob.shape[0]
    probs = prob.numpy().astype(np.float32, copy=False)
    labels = decide(probs, rule=decision, threshold=threshold)
    dtype = np.uint8 if k <= 256 else np.int32
    return Prediction(
        probabilities=probs,
        labels=labels.astype(dtype),
        entropy=_entropy(prob).numpy().astype(np.float32, copy=False),
    )


def predict_volume(
    model: nn.Module,
    image: ArrayLike,
    *,
    spatial_dims: int,
    patch_size: Sequence[int],
    overlap: float = 0.5,
    batch_size: int = 4,
    slice_axis: int = 2,
    device: DeviceLike = None,
    channels_last: bool = True,
    tta: bool = False,
    blend: Blend = "gaussian",
    decision: str = "argmax",
    threshold: float = 0.5,
) -> Generator[Progress, None, Prediction]:
    """Segment an image with a model: probabilities, labels and uncertainty.

    A 3D model runs a 3D sliding window. A 2D model on a 2D image runs a 2D
    sliding window; on a 3D volume it runs slice by slice along
    ``slice_axis``, windows of several slices sharing a batch (a slice no
    larger than the patch is one padded window).

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``(B, C, *patch)`` to logits ``(B, K, *patch)``. Put in eval
        mode for the call (its train/eval state is restored afterwards) and
        moved to ``device`` (it stays there).
    image : numpy.ndarray or torch.Tensor
        ``(C, X, Y)`` for a 2D model, ``(C, X, Y, Z)`` for either.
    spatial_dims : {2, 3}
        The model's convolutions.
    patch_size : sequence of int
        Window size, ``spatial_dims`` values (in-plane size for a 2D model).
    overlap : float
        Fraction of a window shared with its neighbour, in ``[0, 1)``.
    batch_size : int
        Windows (or slices) per model call.
    slice_axis : {0, 1, 2}
        Spatial axis a 2D model slices a 3D volume along.
    device : str or torch.device, optional
        Default: the model's device.
    channels_last : bool
        On CUDA, run the model in channels-last memory format
        (``channels_last`` / ``channels_last_3d``), faster with cuDNN; the
        model's parameters keep that format. Ignored on other devices.
    tta : bool
        Test-time augmentation: average the probabilities over all mirrorings
        along the model's spatial axes (4 passes in 2D, 8 in 3D).
    blend : {"gaussian", "constant"}
        Window weighting, see :func:`~napari_medseg.core.inference.sliding_window`.
    decision : {"argmax", "foreground"}
        How probabilities become labels, see :func:`napari_medseg.core.decision.decide`.
    threshold : float
        Foreground probability above which a voxel is foreground (``"foreground"`` rule and
        single-output models).

    Yields
    ------
    Progress
        After each batch, stage ``"predict"``; ``done``/``total`` count
        windows, or slices for slice-wise prediction.

    Returns
    -------
    Prediction
        Probabilities ``(K, *spatial)``, labels and entropy ``(*spatial)``
        as numpy arrays on the image's grid. ``K == 1`` uses a sigmoid,
        ``K > 1`` a softmax.

    Raises
    ------
    ValueError
        If the image's axes do not fit ``spatial_dims``, ``patch_size`` has
        the wrong length, or the model declares (``in_channels``) a channel
        count other than the image's.
    """
    check_rule(decision)  # before any work
    check_threshold(threshold)
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
    shape = tuple(image.shape)
    patch = tuple(int(p) for p in patch_size)
    if len(patch) != spatial_dims:
        raise ValueError(
            f"patch_size {patch} has {len(patch)} values; a {spatial_dims}D model needs "
            f"{spatial_dims}."
        )
    slicewise = spatial_dims == 2 and len(shape) == 4
    if spatial_dims == 3 and len(shape) != 4:
        raise ValueError(
            f"model expects 3D (C, X, Y, Z) input, got shape {shape}; "
            + (
                "add a channel axis (e.g. image[None])."
                if len(shape) == 3
                else "a 3D model cannot segment a 2D image; use a 2D model."
            )
        )
    if spatial_dims == 2 and len(shape) not in (3, 4):
        raise ValueError(
            f"model expects 2D (C, X, Y) input or a (C, X, Y, Z) volume to slice, got shape "
            f"{shape}; add a channel axis (e.g. image[None])."
        )
    if slicewise and slice_axis not in (0, 1, 2):
        raise ValueError(f"slice_axis must be 0, 1 or 2, got {slice_axis}.")
    declared_dims = _model_attr(model, "spatial_dims")
    if declared_dims is not None and declared_dims != spatial_dims:
        raise ValueError(
            f"spatial_dims={spatial_dims} but the model is {declared_dims}D; "
            f"pass spatial_dims={declared_dims}."
        )
    declared_ch = _model_attr(model, "in_channels")
    if declared_ch is not None and declared_ch != shape[0]:
        raise ValueError(
            f"model expects {declared_ch} input channel(s), got an image of shape {shape} "
            f"with {shape[0]}; the first axis must be channels."
        )

    dev = _resolve_device(device, _model_device(model))
    fmt: torch.memory_format | None = None
    if channels_last and dev.type == "cuda":
        fmt = torch.channels_last if spatial_dims == 2 else torch.channels_last_3d
    was_training = model.training
    model.to(dev)
    if fmt is not None:
        model.to(memory_format=fmt)
    model.eval()

    flip_sets = (
        [
            tuple(2 + a for a, on in enumerate(mask) if on)
            for mask in itertools.product((False, True), repeat=spatial_dims)
        ]
        if tta
        else [()]
    )

    def run_model(x: torch.Tensor) -> torch.Tensor:
        """Model input (B, C, *patch) -> averaged probabilities (B, K, *patch)."""
        total: torch.Tensor | None = None
        for dims in flip_sets:
            xi = torch.flip(x, dims) if dims else x
            if fmt is not None:
                xi = xi.contiguous(memory_format=fmt)
            logits = model(xi).float()
            prob = torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, 1)
            if dims:
                prob = torch.flip(prob, dims)
            total = prob if total is None else total + prob
        assert total is not None
        return total / len(flip_sets) if len(flip_sets) > 1 else total

    try:
        if not slicewise:
            prob = yield from _windows(
                run_model,
                image,
                patch_size=patch,
                overlap=overlap,
                batch_size=batch_size,
                activation=None,
                blend=blend,
                device=dev,
                pad="min",  # as the training sampler pads: "outside the body"
            )
        else:
            # A 3D window one slice thick: windows of many slices share a batch,
            # and windows are generated slice by slice, so progress counts slices.
            vol = _as_float_tensor(image, dev).movedim(1 + slice_axis, 1)
            in_plane = vol.shape[2:]
            per_slice = len(tile_starts(tuple(max(s, p) for s, p in zip(in_plane, patch)),
                                        patch, overlap))

            def run_slices(x: torch.Tensor) -> torch.Tensor:
                return run_model(x.squeeze(2)).unsqueeze(2)

            prob = yield from _windows(
                run_slices,
                vol,
                patch_size=(1, *patch),
                overlap=overlap,
                batch_size=batch_size,
                activation=None,
                blend=blend,
                device=dev,
                windows_per_unit=per_slice,
                pad="min",
            )
            prob = prob.movedim(1, 1 + slice_axis).contiguous()
    finally:
        model.train(was_training)
    return _finish(prob, decision, threshold)
