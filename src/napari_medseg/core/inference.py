"""Sliding-window prediction as a generator.

Images are ``(C, *spatial)`` arrays with two or three spatial axes. A window of
``patch_size`` slides over the image with a given overlap; windows are batched,
each window's logits pass through the activation (softmax / sigmoid), are
weighted by an importance map (a Gaussian that trusts the window's centre more
than its border, as in nnU-Net) and summed; the sum is divided by the summed
weights at the end. Probabilities are blended, not logits.

Every function that runs a model is a generator: it yields
:class:`~napari_medseg.core.events.Progress` after each batch and returns its
result, so the CLI, the GUI and the tests drive it the same way::

    gen = predict_volume(model, image, spatial_dims=3, patch_size=(64, 64, 64))
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            prediction = stop.value
            break
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_medseg.core.decision import check_rule, decide
from napari_medseg.core.events import Progress

__all__ = [
    "Prediction",
    "gaussian_importance",
    "predict_volume",
    "sliding_window",
    "tile_starts",
]

Activation = Literal["softmax", "sigmoid"] | None
Blend = Literal["gaussian", "constant"]
ArrayLike = np.ndarray | torch.Tensor
DeviceLike = str | torch.device | None

_AXES = {2: "(C, X, Y)", 3: "(C, X, Y, Z)"}


# --------------------------------------------------------------------------- tiling


def _axis_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Window starts along one axis (nnU-Net's evenly spread steps)."""
    if size <= patch:
        return [0]  # the caller pads this axis to ``patch``
    target_step = max(1.0, patch * (1.0 - overlap))
    n_steps = math.ceil((size - patch) / target_step) + 1
    step = (size - patch) / (n_steps - 1)
    return [int(round(step * i)) for i in range(n_steps)]


def tile_starts(
    shape: Sequence[int], patch_size: Sequence[int], overlap: float
) -> list[tuple[int, ...]]:
    """Start positions of the windows that tile an image.

    Along each axis the windows are spread evenly, the first at 0 and the last
    flush with the end, with neighbours overlapping by at least
    ``overlap * patch`` voxels (at least one voxel of step). Along an axis
    shorter than the patch there is a single window at 0: the caller pads
    that axis to the patch size (see :func:`sliding_window`).

    Parameters
    ----------
    shape : sequence of int
        Spatial shape of the image.
    patch_size : sequence of int
        Spatial window size, one value per axis of ``shape``.
    overlap : float
        Fraction of the window shared with its neighbour, in ``[0, 1)``.

    Returns
    -------
    list of tuple of int
        One start per window, the last axis varying fastest.

    Raises
    ------
    ValueError
        If the lengths differ, a size is not positive, or ``overlap`` is
        outside ``[0, 1)``.
    """
    shape = tuple(int(s) for s in shape)
    patch_size = tuple(int(p) for p in patch_size)
    if len(shape) != len(patch_size):
        raise ValueError(
            f"patch_size {patch_size} has {len(patch_size)} values but the image shape "
            f"{shape} has {len(shape)} spatial axes; give one patch size per axis."
        )
    if min(shape, default=1) < 1 or min(patch_size, default=1) < 1:
        raise ValueError(
            f"Image shape {shape} and patch_size {patch_size} must be positive."
        )
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}.")
    per_axis = [_axis_starts(s, p, overlap) for s, p in zip(shape, patch_size)]
    return list(itertools.product(*per_axis))


def gaussian_importance(
    patch_size: Sequence[int], *, sigma_scale: float = 0.125, min_value: float = 1e-4
) -> np.ndarray:
    """Importance map that weighs a window's centre above its border.

    A separable Gaussian centred on the window with standard deviation
    ``sigma_scale * patch_size`` per axis, scaled to a maximum of 1 and
    clamped below at ``min_value`` so that no voxel has zero weight (every
    voxel is then defined even when it lies only on window borders).

    Parameters
    ----------
    patch_size : sequence of int
        Spatial window size.
    sigma_scale : float
        Standard deviation as a fraction of the window size (nnU-Net: 1/8).
    min_value : float
        Smallest weight, relative to the centre's 1.

    Returns
    -------
    numpy.ndarray
        float32 array of shape ``patch_size``, symmetric under mirroring,
        maximal (1) at the centre voxel(s).
    """
    if sigma_scale <= 0:
        raise ValueError(f"sigma_scale must be > 0, got {sigma_scale}.")
    if not 0.0 < min_value <= 1.0:
        raise ValueError(f"min_value must be in (0, 1], got {min_value}.")
    weight = np.ones((), dtype=np.float64)
    for p in patch_size:
        p = int(p)
        if p < 1:
            raise ValueError(f"patch_size must be positive, got {tuple(patch_size)}.")
        x = np.arange(p, dtype=np.float64) - (p - 1) / 2.0
        sigma = sigma_scale * p
        g = np.exp(-0.5 * (x / sigma) ** 2)
        weight = np.multiply.outer(weight, g)
    weight /= weight.max()
    return np.maximum(weight, min_value).astype(np.float32)


# --------------------------------------------------------------------------- sliding window


def _resolve_device(device: DeviceLike, fallback: torch.device) -> torch.device:
    return fallback if device is None else torch.device(device)


def _as_float_tensor(image: ArrayLike, device: torch.device) -> torch.Tensor:
    if isinstance(image, torch.Tensor):
        return image.detach().to(device=device, dtype=torch.float32)
    arr = np.asarray(image, dtype=np.float32)
    if not arr.flags.writeable:
        arr = arr.copy()
    return torch.from_numpy(arr).to(device)


def _apply_activation(logits: torch.Tensor, activation: Activation) -> torch.Tensor:
    if activation is None:
        return logits
    if activation == "softmax":
        return torch.softmax(logits, dim=1)
    if activation == "sigmoid":
        return torch.sigmoid(logits)
    raise ValueError(f"activation={activation!r} is not one of 'softmax', 'sigmoid', None.")


def _windows(
    predict_fn: Callable[[torch.Tensor], torch.Tensor],
    image: ArrayLike,
    *,
    patch_size: Sequence[int],
    overlap: float,
    batch_size: int,
    activation: Activation,
    blend: Blend,
    device: DeviceLike,
    windows_per_unit: int | None = None,
) -> Generator[Progress, None, torch.Tensor]:
    """Sliding window; progress counts windows, or units of the first spatial axis.

    With ``windows_per_unit`` set, windows are grouped by position along the
    first spatial axis (they are generated in that order) and progress counts
    finished groups (the slices of a slice-wise prediction).
    """
    if activation not in ("softmax", "sigmoid", None):
        raise ValueError(
            f"activation={activation!r} is not one of 'softmax', 'sigmoid', None."
        )
    if blend not in ("gaussian", "constant"):
        raise ValueError(f"blend={blend!r} is not one of 'gaussian', 'constant'.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    patch = tuple(int(p) for p in patch_size)
    nd = len(patch)
    if nd not in (2, 3):
        raise ValueError(f"patch_size must have 2 or 3 values, got {patch}.")
    if image.ndim != nd + 1:
        raise ValueError(
            f"Expected an image {_AXES[nd]} with {nd} spatial axes for patch_size {patch}, "
            f"got shape {tuple(image.shape)}; add a channel axis or match patch_size."
        )
    fallback = image.device if isinstance(image, torch.Tensor) else torch.device("cpu")
    dev = _resolve_device(device, fallback)
    x = _as_float_tensor(image, dev)
    spatial = tuple(x.shape[1:])
    if min(spatial) < 1:
        raise ValueError(f"Image shape {tuple(x.shape)} has an empty spatial axis.")

    # Pad axes shorter than the patch, symmetrically, with zeros.
    padded = tuple(max(s, p) for s, p in zip(spatial, patch))
    before = tuple((ps - s) // 2 for ps, s in zip(padded, spatial))
    if padded != spatial:
        pad: list[int] = []
        for s, ps, b in reversed(list(zip(spatial, padded, before))):
            pad += [b, ps - s - b]
        x = F.pad(x, pad)

    starts = tile_starts(padded, patch, overlap)
    n_windows = len(starts)
    per_unit = windows_per_unit or 1
    total_units = n_windows // per_unit
    weight = (
        torch.from_numpy(gaussian_importance(patch)).to(dev)
        if blend == "gaussian"
        else None
    )

    acc: torch.Tensor | None = None
    wsum: torch.Tensor | None = None
    t0 = time.perf_counter()
    for b0 in range(0, n_windows, batch_size):
        batch_starts = starts[b0 : b0 + batch_size]
        slices = [
            tuple(slice(s, s + p) for s, p in zip(st, patch)) for st in batch_starts
        ]
        with torch.inference_mode():
            batch = torch.stack([x[(slice(None), *sl)] for sl in slices])
            out = predict_fn(batch)
            expected = (len(slices), *patch)
            if (
                not isinstance(out, torch.Tensor)
                or out.ndim != nd + 2
                or (out.shape[0], *out.shape[2:]) != expected
            ):
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out)
                raise ValueError(
                    f"predict_fn returned {got} for a batch of shape {tuple(batch.shape)}; "
                    f"expected (B, K, *patch) = ({len(slices)}, K, "
                    f"{', '.join(map(str, patch))})."
                )
            prob = _apply_activation(out.to(device=dev, dtype=torch.float32), activation)
            if acc is None:
                acc = torch.zeros((prob.shape[1], *padded), dtype=torch.float32, device=dev)
                wsum = torch.zeros(padded, dtype=torch.float32, device=dev)
            assert wsum is not None
            for i, sl in enumerate(slices):
                if weight is None:
                    acc[(slice(None), *sl)] += prob[i]
                    wsum[sl] += 1.0
                else:
                    acc[(slice(None), *sl)] += prob[i] * weight
                    wsum[sl] += weight
        done_w = b0 + len(slices)
        elapsed = time.perf_counter() - t0
        eta = elapsed / done_w * (n_windows - done_w)
        yield Progress(done_w // per_unit, total_units, stage="predict", eta_s=eta)

    assert acc is not None and wsum is not None
    crop = tuple(slice(b, b + s) for b, s in zip(before, spatial))
    # Outside inference mode: the result is an ordinary tensor.
    result = acc[(slice(None), *crop)] / wsum[crop]
    return result.to("cpu").contiguous()


def sliding_window(
    predict_fn: Callable[[torch.Tensor], torch.Tensor],
    image: ArrayLike,
    *,
    patch_size: Sequence[int],
    overlap: float = 0.5,
    batch_size: int = 4,
    activation: Activation = "softmax",
    blend: Blend = "gaussian",
    device: DeviceLike = None,
) -> Generator[Progress, None, torch.Tensor]:
    """Predict a whole image window by window, blending the overlaps.

    Parameters
    ----------
    predict_fn : callable
        Maps a batch ``(B, C, *patch_size)`` on ``device`` to logits
        ``(B, K, *patch_size)``. Called under :func:`torch.inference_mode`.
    image : numpy.ndarray or torch.Tensor
        ``(C, X, Y)`` or ``(C, X, Y, Z)``; the number of spatial axes is
        ``len(patch_size)``.
    patch_size : sequence of int
        Window size. Axes of the image shorter than the window are padded
        with zeros (symmetrically) and the padding is cropped off the result.
    overlap : float
        Fraction of a window shared with its neighbour, in ``[0, 1)``.
    batch_size : int
        Windows per call of ``predict_fn``.
    activation : {"softmax", "sigmoid", None}
        Applied to each window's logits (over the K axis for softmax) before
        blending, so probabilities are blended; ``None`` blends raw outputs.
    blend : {"gaussian", "constant"}
        Weight of a voxel within its window: :func:`gaussian_importance`, or 1.
    device : str or torch.device, optional
        Where the image, the windows and the float32 accumulators live;
        default the image's device (CPU for numpy input).

    Yields
    ------
    Progress
        After each batch: ``done`` windows of ``total``, stage ``"predict"``,
        and an ETA in seconds.

    Returns
    -------
    torch.Tensor
        ``(K, *spatial)`` float32 on the CPU, on the input's grid.

    Raises
    ------
    ValueError
        For an image whose number of axes does not match ``patch_size``, a
        bad option, or a ``predict_fn`` output of the wrong shape.
    """
    return (
        yield from _windows(
            predict_fn,
            image,
            patch_size=patch_size,
            overlap=overlap,
            batch_size=batch_size,
            activation=activation,
            blend=blend,
            device=device,
        )
    )


# --------------------------------------------------------------------------- models


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


def _finish(prob: torch.Tensor, decision: str = "argmax") -> Prediction:
    k = prob.shape[0]
    probs = prob.numpy().astype(np.float32, copy=False)
    labels = decide(probs, rule=decision)
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
        Window weighting, see :func:`sliding_window`.
    decision : {"argmax", "foreground"}
        How probabilities become labels, see :func:`napari_medseg.core.decision.decide`.

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
            )
            prob = prob.movedim(1, 1 + slice_axis).contiguous()
    finally:
        model.train(was_training)
    return _finish(prob, decision)
