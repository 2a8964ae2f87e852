"""Restoration training as a generator of events (no printing, no threads, no Qt).

:func:`fit_restoration` runs the training loop it shares with the segmentation
engine (:func:`napari_medseg.core.training_loop.train_loop`): it yields
:class:`~napari_medseg.core.events.StepDone`, :class:`~napari_medseg.core.events.EpochDone`
and :class:`RestoreValidated` between steps, stops on ``should_stop()`` or when the
generator is closed, keeps the best model (by validation PSNR, or by the
self-supervised validation loss when no clean reference exists) and writes it with
:func:`napari_medseg.core.checkpoint.save_checkpoint` (``task="restore"``) whenever
it improves.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from napari_medseg.core.checkpoint import Checkpoint
from napari_medseg.core.config import ModelConfig, TrainConfig
from napari_medseg.core.data import LabelMapping
from napari_medseg.core.events import EpochDone, Message, StepDone
from napari_medseg.core.restoration.config import RestoreConfig
from napari_medseg.core.restoration.data import RestoreCase, RestorePatchSampler
from napari_medseg.core.training_loop import Validation, optimiser_step, train_loop

__all__ = ["RestoreResult", "RestoreValidated", "fit_restoration", "restoration_model_config",
           "validate_restoration"]


@dataclass(frozen=True)
class RestoreValidated:
    """Validation after an epoch of restoration training.

    ``psnr`` (dB) and ``ssim`` compare the restored validation images with
    their clean references (None when there is none, as in pure
    self-supervised training); ``loss`` is the training loss on fixed
    validation patches (for noise2void: the blind-spot loss). ``best`` says
    whether this model was kept.
    """

    epoch: int
    step: int
    psnr: float | None
    ssim: float | None
    loss: float | None
    best: bool
    elapsed_s: float
    psnr_input: float | None = None


Event = StepDone | EpochDone | RestoreValidated | Message


@dataclass
class RestoreResult:
    """What restoration training produced: the best checkpoint and network, and the history."""

    checkpoint: Checkpoint
    model: torch.nn.Module
    steps: int
    stopped: bool
    best_psnr: float | None
    history: list[dict[str, Any]] = field(default_factory=list)


def restoration_model_config(*, spatial_dims: int = 2, in_channels: int = 1, base_width: int = 16,
                             depth: int = 4, mode: str = "synthetic", norm: str = "batch",
                             arch: str = "unet") -> ModelConfig:
    """A UNet for restoration: output channels = input channels, residual head.

    The residual head (``residual=True``) adds the input to the network's
    output, so the network predicts the correction; for ``noise2void`` it is
    off (the blind-spot pixel's own value must not pass straight through).
    Batch norm by default: instance norm would divide out each patch's
    contrast, which a restoration network needs to keep.
    """
    return ModelConfig(arch=arch, spatial_dims=spatial_dims, in_channels=in_channels,
                       out_channels=in_channels, base_width=base_width, depth=depth, norm=norm,
                       residual=mode != "noise2void")


def _zero_head(model: torch.nn.Module) -> None:
    """Start a residual network at the identity: its last convolution outputs 0.

    Training then improves on the noisy input from the first step instead of
    first unlearning a random correction (zero-initialised residual branches;
    the head's first update opens the gradient path to the other layers).
    """
    head = getattr(model, "head", None)
    if isinstance(head, (torch.nn.Conv2d, torch.nn.Conv3d)):
        with torch.no_grad():
            head.weight.zero_()
            if head.bias is not None:
                head.bias.zero_()


def _slab(case: RestoreCase, rc: RestoreConfig, spatial_dims: int
          ) -> tuple[np.ndarray, np.ndarray | None]:
    """Validation input and reference, cut to at most ``val_slices`` central slices (2D models)."""
    x, ref = case.val_input, case.reference
    assert x is not None
    if spatial_dims == 2 and x.ndim == 4 and rc.val_slices:
        ax = 1 + rc.slice_axis
        n = x.shape[ax]
        k = min(n, rc.val_slices)
        s = (n - k) // 2
        sl = [slice(None)] * x.ndim
        sl[ax] = slice(s, s + k)
        x = x[tuple(sl)]
        ref = ref[tuple(sl)] if ref is not None else None
    return x, ref


def restoration_ssim_kind(spatial_dims: int, ndim: int, slice_axis: int) -> str:
    """How :func:`restoration_ssim` measures an ``ndim``-D image, for printed results:
    ``"2D, per slice along axis 2"`` or ``"3D"`` (the two differ by 0.1 or more on noisy
    volumes, so a number without its kind cannot be compared)."""
    if spatial_dims == 2 and ndim == 3:
        return f"2D, mean over slices along axis {slice_axis}"
    return f"{ndim}D"


def restoration_ssim(pred: np.ndarray, ref: np.ndarray, data_range: float, spatial_dims: int,
                     slice_axis: int) -> float:
    """SSIM of (C, *spatial) images as validation measures it, window fitted to the image.

    Per slice along ``slice_axis`` for a 2D model on a volume, else over the whole
    image; the window is 7 voxels, or the largest odd size the image allows.
    """
    from napari_medseg.core.metrics import ssim, ssim_window

    vals = []
    for p, r in zip(pred, ref):  # channels
        if spatial_dims == 2 and p.ndim == 3:
            win = ssim_window([n for a, n in enumerate(p.shape) if a != slice_axis])
            vals.append(ssim(p, r, data_range=data_range, channel_axis=slice_axis,
                             win_size=win))
        else:
            vals.append(ssim(p, r, data_range=data_range, win_size=ssim_window(p.shape)))
    return float(np.mean(vals))


def validate_restoration(model: torch.nn.Module, cases: Sequence[RestoreCase], *,
                         model_config: ModelConfig, config: RestoreConfig, device: torch.device
                         ) -> tuple[float | None, float | None, float | None]:
    """Mean PSNR and SSIM over validation cases with a clean reference, and of the input.

    Returns ``(psnr, ssim, psnr_of_noisy_input)``; Nones when no case has a
    reference. PSNR uses each reference's ``max - min`` as ``data_range``;
    SSIM is per slice (2D models on volumes) or 3D.
    """
    from napari_medseg.core.engine import run
    from napari_medseg.core.metrics import psnr
    from napari_medseg.core.restoration.apply import restore_array

    ps, ss, p0 = [], [], []
    for case in cases:
        if case.reference is None:
            continue
        x, ref = _slab(case, config, model_config.spatial_dims)
        assert ref is not None
        out = run(restore_array(model, x, spatial_dims=model_config.spatial_dims,
                                train_patch=config.patch_size, norms=case.norms,
                                slice_axis=config.slice_axis, overlap=config.overlap,
                                batch_size=max(2, config.batch_size // 2), device=device,
                                divisor=model_config.divisor))
        dr = float(case.reference.max() - case.reference.min()) or 1.0
        ps.append(psnr(out, ref, data_range=dr))
        p0.append(psnr(x, ref, data_range=dr))
        ss.append(restoration_ssim(out, ref, dr, model_config.spatial_dims, config.slice_axis))
    model.train()
    if not ps:
        return None, None, None
    return float(np.mean(ps)), float(np.mean(ss)), float(np.mean(p0))


def _checkpoint(mc: ModelConfig, rc: RestoreConfig, state: dict[str, torch.Tensor],
                history: list[dict[str, Any]], cases: Sequence[RestoreCase],
                channel_names: Sequence[str], fingerprints: Sequence[str]) -> Checkpoint:
    # TrainConfig carries the shared fields; its segmentation loss is unused for task "restore",
    # and restoration augments geometry only (no intensity jitter: the noise level is learnt).
    tc = TrainConfig(patch_size=tuple(rc.patch_size), batch_size=rc.batch_size, lr=rc.lr,
                     weight_decay=rc.weight_decay, epochs=rc.epochs, minutes=rc.minutes,
                     steps_per_epoch=rc.steps_per_epoch, seed=rc.seed, device=rc.device,
                     augment=rc.augment, intensity_jitter=0.0, intensity_norm="zscore",
                     slice_axis=rc.slice_axis,
                     val_fraction=rc.val_fraction, amp=rc.amp, crop_foreground=False,
                     overlap=rc.overlap, extra={"task": "restore"})
    return Checkpoint(model_config=mc, train_config=tc, mapping=LabelMapping((0,)),
                      norms=tuple(cases[0].norms), spacing=None, state_dict=state,
                      history=list(history), task="restore",
                      channel_names=list(channel_names), fingerprints=list(fingerprints),
                      extra={"restore": rc.to_dict(),
                             "scales": [float(c.scale) for c in cases]})


def fit_restoration(
    train_cases: Sequence[RestoreCase],
    *,
    model_config: ModelConfig,
    config: RestoreConfig,
    val_cases: Sequence[RestoreCase] | None = None,
    init_state: dict[str, torch.Tensor] | None = None,
    checkpoint_path: str | None = None,
    should_stop: Callable[[], bool] | None = None,
    channel_names: Sequence[str] = (),
    fingerprints: Sequence[str] = (),
    clock: Callable[[], float] = time.perf_counter,
) -> Generator[Event, None, RestoreResult]:
    """Train a restoration network, yielding events; return a :class:`RestoreResult`.

    Parameters
    ----------
    train_cases : sequence of RestoreCase
        From :func:`~napari_medseg.core.restoration.data.prepare_restore_case`, all of
        ``config.mode``.
    model_config : ModelConfig
        ``out_channels == in_channels``; see :func:`restoration_model_config`.
    config : RestoreConfig
    val_cases : sequence of RestoreCase, optional
        Default: ``config.val_fraction`` of the cases held out, else the training cases.
    init_state : dict, optional
        Weights to continue from.
    checkpoint_path : str, optional
        Where to write the best model whenever it improves.
    should_stop : callable, optional
        Polled between steps; True stops (the best model is kept).
    clock : callable
        Seconds, for the ``minutes`` budget, the learning-rate schedule and ETAs; a GUI
        passes one that stands still while the user has paused training.

    Raises
    ------
    ValueError
        Channels or patch size that do not fit the model.
    """
    from napari_medseg.core.engine import pick_device, seed_everything
    from napari_medseg.core.losses import make_restoration_loss
    from napari_medseg.core.models import build_model

    rc, mc = config, model_config
    if len(rc.patch_size) != mc.spatial_dims:
        raise ValueError(f"patch_size {rc.patch_size} does not match a {mc.spatial_dims}D model.")
    if mc.out_channels != mc.in_channels:
        raise ValueError(f"A restoration model outputs its input's channels: in_channels "
                         f"{mc.in_channels}, out_channels {mc.out_channels}.")
    if not train_cases:
        raise ValueError("No training image given.")
    for c in train_cases:
        if c.source.shape[0] != mc.in_channels:
            raise ValueError(f"{c.name}: {c.source.shape[0]} channel(s), the model expects "
                             f"{mc.in_channels}.")
    train_cases = list(train_cases)
    gen = seed_everything(rc.seed)
    del gen
    device = pick_device(rc.device)
    yield Message(f"training a {mc.spatial_dims}D restoration UNet ({rc.mode}, loss {rc.loss}) "
                  f"on {device.type}", extra={"device": device.type})
    model = build_model(mc)
    if init_state is not None:
        model.load_state_dict(init_state)
    elif mc.residual:
        _zero_head(model)
    model.to(device)
    fmt = torch.channels_last if mc.spatial_dims == 2 else torch.channels_last_3d
    model = model.to(memory_format=fmt)
    loss_fn = make_restoration_loss(rc.loss, spatial_dims=mc.spatial_dims,
                                    in_channels=mc.in_channels,
                                    perceptual_checkpoint=rc.perceptual_checkpoint).to(device)
    if "perceptual" in loss_fn.names:
        src = next(m for n, m in zip(loss_fn.names, loss_fn.parts) if n == "perceptual")
        yield Message(f"perceptual loss features: {src.source}")  # type: ignore[union-attr]
    opt = torch.optim.AdamW(model.parameters(), lr=rc.lr, weight_decay=rc.weight_decay)
    use_amp = rc.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    vcases = list(val_cases) if val_cases else list(train_cases)
    if not val_cases and rc.val_fraction > 0 and len(train_cases) >= 2:
        n_val = min(len(train_cases) - 1, max(1, round(len(train_cases) * rc.val_fraction)))
        vcases, train_cases = train_cases[-n_val:], train_cases[:-n_val]
        yield Message(f"validating on {n_val} held-out image(s): "
                      + ", ".join(c.name for c in vcases))
    sampler = RestorePatchSampler(train_cases, mode=rc.mode, patch_size=rc.patch_size,
                                  degrade=rc.degrade, fg_fraction=rc.fg_fraction,
                                  slice_axis=rc.slice_axis, augment=rc.augment,
                                  n2v_fraction=rc.n2v_fraction, n2v_radius=rc.n2v_radius,
                                  seed=rc.seed + 1)
    # Fixed validation patches (the self-supervised criterion, and a loss curve for all modes).
    vsampler = RestorePatchSampler(vcases, mode=rc.mode, patch_size=rc.patch_size,
                                   degrade=rc.degrade, fg_fraction=rc.fg_fraction,
                                   slice_axis=rc.slice_axis, augment=False,
                                   n2v_fraction=rc.n2v_fraction, n2v_radius=rc.n2v_radius,
                                   seed=rc.seed + 7919)
    # Noise2Void's criterion sees only the masked pixels (~2 %): more patches for a steady value.
    vbatches = [vsampler.sample(rc.batch_size)
                for _ in range(8 if rc.mode == "noise2void" else 2)]
    has_ref = any(c.reference is not None for c in vcases)

    def train_step() -> float:
        x, y, m = sampler.sample(rc.batch_size)
        x = x.to(device, non_blocking=True).contiguous(memory_format=fmt)
        y = y.to(device, non_blocking=True)
        m = None if m is None else m.to(device, non_blocking=True)
        with torch.autocast(device.type, enabled=use_amp):
            out = model(x)
        loss = loss_fn(out.float(), y, m)
        optimiser_step(loss, opt, scaler)
        if loss_fn.adversarial:
            loss_fn.after_step(out.detach().float(), y)
        return float(loss.detach())

    def val_loss() -> float:
        model.eval()
        vals = []
        with torch.no_grad():
            for x, y, m in vbatches:
                x = x.to(device).contiguous(memory_format=fmt)
                out = model(x).float()
                vals.append(float(loss_fn(out, y.to(device),
                                          None if m is None else m.to(device))))
        model.train()
        return float(np.mean(vals))

    def validate_epoch(epoch: int, step: int) -> Validation[RestoreValidated]:
        vl = val_loss()
        p, s, p0 = (validate_restoration(model, vcases, model_config=mc, config=rc,
                                         device=device) if has_ref else (None, None, None))
        # Without a clean reference the self-supervised validation loss picks the model.
        return Validation(
            p if p is not None else -vl, {"val_loss": vl, "psnr": p, "ssim": s, "psnr_input": p0},
            lambda best, elapsed: RestoreValidated(epoch, step, p, s, vl, best, elapsed, p0))

    def ckpt(state: dict[str, torch.Tensor], history: list[dict[str, Any]]) -> Checkpoint:
        return _checkpoint(mc, rc, state, history, train_cases, channel_names, fingerprints)

    res = yield from train_loop(
        model=model, optimiser=opt, schedule=rc, train_step=train_step, validate=validate_epoch,
        make_checkpoint=ckpt, new_model=lambda: build_model(mc), checkpoint_path=checkpoint_path,
        should_stop=should_stop, clock=clock, start_epoch=sampler.refresh)
    best_psnr = max((h["psnr"] for h in res.history if h["psnr"] is not None), default=None)
    return RestoreResult(res.checkpoint, res.model, res.steps, res.stopped, best_psnr,
                         res.history)
