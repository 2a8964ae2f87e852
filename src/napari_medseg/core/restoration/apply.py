"""Restore an image with a trained network, in the image's own intensity units.

The image is normalised with statistics fitted on itself (as at training
time), run through :func:`napari_medseg.core.inference.sliding_window` with
no activation (a restoration network outputs intensities, blended with the
Gaussian window weights), and mapped back with the inverse normalisation.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence

import numpy as np
import torch
from torch import nn

from napari_medseg.core.data import check_image
from napari_medseg.core.events import Progress
from napari_medseg.core.inference import sliding_window
from napari_medseg.core.normalize import ChannelNorm
from napari_medseg.core.restoration.data import apply_norm, fit_restore_norm, invert_norm

__all__ = ["inference_patch", "restore", "restore_array"]

#: Largest in-plane window of a 2D model, and of each axis of a 3D model.
MAX_WINDOW = {2: 512, 3: 128}


def inference_patch(shape: Sequence[int], train_patch: Sequence[int], divisor: int
                    ) -> tuple[int, ...]:
    """Window for restoring: as large as the image allows (fewer seams), capped for memory.

    A window never exceeds the image (the network pads internally to its
    ``divisor`` by replication, which suits images better than the sliding
    window's zero padding) and is at least the training patch where the image
    is larger.
    """
    nd = len(train_patch)
    cap = MAX_WINDOW[nd] if nd in MAX_WINDOW else 256
    out = []
    for s, p in zip(shape, train_patch):
        w = max(int(p), min(int(s), max(cap, int(p))))
        w = min(w, int(s))
        if w < s and w > divisor:
            w = (w // divisor) * divisor
        out.append(max(1, w))
    return tuple(out)


def restore_array(model: nn.Module, image: np.ndarray, *, spatial_dims: int,
                  train_patch: Sequence[int], norms: Sequence[ChannelNorm] | None = None,
                  slice_axis: int = 2, overlap: float = 0.25, batch_size: int = 4,
                  device: str | torch.device | None = None, divisor: int = 8,
                  ) -> Generator[Progress, None, np.ndarray]:
    """Restore a ``(C, *spatial)`` image; yields :class:`Progress`, returns it restored.

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``(B, C, *patch)`` to ``(B, C, *patch)`` restored, normalised intensities.
    image : numpy.ndarray
        ``(C, X, Y)`` or ``(C, X, Y, Z)`` in the image's units.
    spatial_dims : {2, 3}
        A 2D model restores a 3D volume slice by slice along ``slice_axis``.
    train_patch : sequence of int
        The training patch (the window is at least this, see :func:`inference_patch`).
    norms : sequence of ChannelNorm, optional
        Default: fitted on ``image`` itself (:func:`fit_restore_norm`).
    overlap, batch_size : float, int
        Sliding-window settings.
    device : str or torch.device, optional
        Default: where the model's parameters are.

    Returns
    -------
    numpy.ndarray
        The restored image, float32, in the input's units and shape.
    """
    img = np.asarray(image, np.float32)
    nd = img.ndim - 1
    if spatial_dims == 3 and nd != 3:
        raise ValueError(f"A 3D model restores 3D volumes (C, X, Y, Z), got shape {img.shape}.")
    if nd not in (2, 3):
        raise ValueError(f"Expected (C, X, Y) or (C, X, Y, Z), got shape {img.shape}.")
    in_ch = getattr(getattr(model, "config", None), "in_channels", img.shape[0])
    if in_ch != img.shape[0]:
        raise ValueError(f"The model restores {in_ch}-channel images; got {img.shape[0]} "
                         "channel(s).")
    norms = tuple(norms) if norms is not None else fit_restore_norm(img)
    x = apply_norm(img, norms)
    params = list(model.parameters())
    dev = torch.device(device) if device is not None else (
        params[0].device if params else torch.device("cpu"))
    was_training = model.training
    model.to(dev).eval()
    slicewise = spatial_dims == 2 and nd == 3
    try:
        if slicewise:
            vol = np.moveaxis(x, 1 + slice_axis, 1)
            patch = inference_patch(vol.shape[2:], train_patch, divisor)

            def run_slices(b: torch.Tensor) -> torch.Tensor:
                return model(b.squeeze(2)).float().unsqueeze(2)

            out = yield from sliding_window(run_slices, vol, patch_size=(1, *patch),
                                            overlap=overlap, batch_size=batch_size,
                                            activation=None, device=dev)
            res = np.moveaxis(out.numpy(), 1, 1 + slice_axis)
        else:
            patch = inference_patch(x.shape[1:], train_patch, divisor)

            def run(b: torch.Tensor) -> torch.Tensor:
                return model(b).float()

            out = yield from sliding_window(run, x, patch_size=patch, overlap=overlap,
                                            batch_size=batch_size, activation=None, device=dev)
            res = out.numpy()
    finally:
        model.train(was_training)
    return invert_norm(np.ascontiguousarray(res), norms)


def restore(ckpt: object, image: np.ndarray | Sequence[np.ndarray], *,
            model: nn.Module | None = None, device: str | torch.device | None = None,
            overlap: float | None = None, batch_size: int = 4
            ) -> Generator[Progress, None, np.ndarray]:
    """Restore an image with a restoration checkpoint (``task == "restore"``).

    Parameters
    ----------
    ckpt : Checkpoint
        Written by :func:`~napari_medseg.core.restoration.fit_restoration`.
    image : array or sequence of arrays
        One spatial array (single-channel model) or one per channel.
    model : torch.nn.Module, optional
        The network already built from ``ckpt`` (saves rebuilding it).
    device, overlap, batch_size
        Overrides; defaults from the checkpoint (device: CUDA if available).

    Returns
    -------
    numpy.ndarray
        Same shape as ``image`` (a single array), or ``(C, *spatial)`` for a list of channels;
        float32 in the input's intensity units.

    Raises
    ------
    ValueError
        A segmentation checkpoint, or an image the model cannot take.
    """
    from napari_medseg.core.checkpoint import Checkpoint
    from napari_medseg.core.engine import pick_device
    from napari_medseg.core.restoration.config import RestoreConfig

    if not isinstance(ckpt, Checkpoint):
        raise TypeError(f"Expected a Checkpoint, got {type(ckpt).__name__}.")
    if ckpt.task != "restore":
        raise ValueError(f"This is a {ckpt.task!r} model, not a restoration model; use "
                         "`napari-medseg predict` for segmentation models.")
    rc = RestoreConfig.from_dict(ckpt.extra.get("restore", {}))
    single = not isinstance(image, (list, tuple))
    chans = [np.asarray(image)] if single else [np.asarray(c) for c in image]
    img = check_image(chans)
    net = model if model is not None else ckpt.build_model()
    dev = pick_device(device or "auto")
    mc = ckpt.model_config
    out = yield from restore_array(net, img, spatial_dims=mc.spatial_dims,
                                   train_patch=rc.patch_size, slice_axis=rc.slice_axis,
                                   overlap=rc.overlap if overlap is None else overlap,
                                   batch_size=batch_size, device=dev, divisor=mc.divisor)
    return out[0] if single else out
