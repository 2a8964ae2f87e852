"""The sliding window itself: batch the windows, activate, weight, blend and crop,
yielding progress as it goes."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from napari_medseg.core.events import Progress
from napari_medseg.core.inference.tiling import gaussian_importance, tile_starts

__all__ = ["sliding_window"]

Activation = Literal["softmax", "sigmoid"] | None
Blend = Literal["gaussian", "constant"]
ArrayLike = np.ndarray | torch.Tensor
DeviceLike = str | torch.device | None

_AXES = {2: "(C, X, Y)", 3: "(C, X, Y, Z)"}


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
    pad: str = "zero",
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

    if pad not in ("zero", "min"):
        raise ValueError(f"pad={pad!r} is not one of 'zero', 'min'.")
    # Pad axes shorter than the patch, symmetrically: with zeros, or with each channel's
    # minimum (a segmentation model's training patches are padded with that "outside").
    padded = tuple(max(s, p) for s, p in zip(spatial, patch))
    before = tuple((ps - s) // 2 for ps, s in zip(padded, spatial))
    if padded != spatial:
        widths: list[int] = []
        for s, ps, b in reversed(list(zip(spatial, padded, before))):
            widths += [b, ps - s - b]
        if pad == "min":
            low = x.reshape(x.shape[0], -1).amin(dim=1).reshape(-1, *([1] * nd))
            out = low.expand(x.shape[0], *padded).clone()
            out[(slice(None), *(slice(b, b + s) for b, s in zip(before, spatial)))] = x
            x = out
        else:
            x = F.pad(x, widths)

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
    pad: str = "zero",
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
        (symmetrically, see ``pad``) and the padding is cropped off the result.
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
    pad : {"zero", "min"}
        Padding value: 0, or each channel's minimum (what the segmentation
        sampler pads training patches with).

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
            pad=pad,
        )
    )
