"""Training as a generator of events: no printing, no threads, no Qt.

``fit`` yields :mod:`~napari_medseg.core.events` between optimisation steps;
whoever iterates it decides how to show them and may stop by returning
``True`` from ``should_stop`` or by closing the generator. The best model
(by validation Dice) is written to disk every time it improves, so stopping
at any moment keeps it.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from napari_medseg.core import distributed
from napari_medseg.core.checkpoint import Checkpoint
from napari_medseg.core.config import ModelConfig, TrainConfig
from napari_medseg.core.data import Case, LabelMapping
from napari_medseg.core.events import EpochDone, Message, StepDone, Validated
from napari_medseg.core.normalize import ChannelNorm
from napari_medseg.core.sampling import PatchSampler, augment_batch, rater_soft_targets
from napari_medseg.core.training_loop import Validation, optimiser_step, train_loop

Event = StepDone | EpochDone | Validated | Message


def pick_device(name: str | torch.device | None = "auto") -> torch.device:
    """CUDA, then MPS, then CPU for ``auto``; a requested device that is missing is an error."""
    if isinstance(name, torch.device):
        return name
    name = name or "auto"
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA GPU is available; use --device auto.")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' requested but MPS is not available; use --device auto.")
    return torch.device(name)


def available_devices() -> list[str]:
    """Devices this machine really has, best first (for device pickers)."""
    out = []
    if torch.cuda.is_available():
        out.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append("mps")
    out.append("cpu")
    return out


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a CPU generator for augmentation draws."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


@dataclass
class FitResult:
    """What training produced.

    Attributes
    ----------
    checkpoint : Checkpoint
        The best model (by validation mean Dice) with its metadata.
    model : torch.nn.Module
        The best model's network, on the CPU, eval mode.
    steps : int
        Optimisation steps run.
    stopped : bool
        True when stopped on request before the epoch/time limit.
    best_dice : float or None
    history : list of dict
    """

    checkpoint: Checkpoint
    model: torch.nn.Module
    steps: int
    stopped: bool
    best_dice: float | None
    history: list[dict[str, Any]] = field(default_factory=list)


def _dice_on_labelled(pred: np.ndarray, target: np.ndarray, num_classes: int) -> dict[int, float | None]:
    """Per-class Dice counting only labelled voxels (target >= 0); None when absent in both."""
    m = target >= 0
    p, t = pred[m].astype(np.int64), target[m].astype(np.int64)
    conf = np.bincount(p * num_classes + t, minlength=num_classes**2).reshape(num_classes, num_classes)
    out: dict[int, float | None] = {}
    for k in range(1, num_classes):
        tp = conf[k, k]
        denom = conf[k, :].sum() + conf[:, k].sum()
        out[k] = None if denom == 0 else float(2 * tp / denom)
    return out


def validate(model: torch.nn.Module, cases: Sequence[Case], *, model_config: ModelConfig,
             train_config: TrainConfig, device: torch.device, num_classes: int
             ) -> dict[int, float | None]:
    """Mean per-class Dice over cases (class indices as keys), labelled voxels only."""
    from napari_medseg.core.inference import predict_volume

    sums: dict[int, list[float]] = {}
    for case in cases:
        gen = predict_volume(model, case.image, spatial_dims=model_config.spatial_dims,
                             patch_size=tuple(train_config.patch_size), overlap=min(train_config.overlap, 0.25),
                             batch_size=max(2, train_config.batch_size), slice_axis=train_config.slice_axis,
                             device=device, decision=train_config.decision,
                             threshold=train_config.threshold)
        try:
            while True:
                next(gen)
        except StopIteration as stop:
            pred = stop.value
        labels = np.asarray(pred.labels)
        if num_classes == 2 and model_config.out_channels == 1:
            labels = labels.astype(np.int64)
        for k, d in _dice_on_labelled(labels, case.target, num_classes).items():
            if d is not None:
                sums.setdefault(k, []).append(d)
    model.train()
    return {k: (float(np.mean(sums[k])) if k in sums else None) for k in range(1, num_classes)}


def _contiguous_pointwise_weights(model: torch.nn.Module) -> None:
    """Give 1x1(x1) convolution weights plain contiguous strides, in place.

    For them channels_last(_3d) and contiguous are the same bytes, but the strides of
    the size-1 axes differ, and the 3D backward returns contiguous gradients: DDP's
    reducer compares strides literally and warned "Grad strides do not match bucket view
    strides" on every run.
    """
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 4 and all(n == 1 for n in p.shape[2:]):
                # is_contiguous() ignores size-1 axes and .contiguous() would keep the strides
                p.data = p.data.clone(memory_format=torch.contiguous_format)


def fit(
    train_cases: Sequence[Case],
    *,
    model_config: ModelConfig,
    train_config: TrainConfig,
    mapping: LabelMapping,
    norms: Sequence[ChannelNorm] = (),
    val_cases: Sequence[Case] | None = None,
    init_state: dict[str, torch.Tensor] | None = None,
    checkpoint_path: str | None = None,
    should_stop: Callable[[], bool] | None = None,
    channel_names: Sequence[str] = (),
    fingerprints: Sequence[str] = (),
    clock: Callable[[], float] = time.perf_counter,
) -> Generator[Event, None, FitResult]:
    """Train a segmentation network, yielding events; return a :class:`FitResult`.

    Parameters
    ----------
    train_cases : sequence of Case
        Prepared cases (see :func:`napari_medseg.core.prepare.prepare_case`, and
        :func:`~napari_medseg.core.prepare.prepare_rater_case` for an image labelled by
        several raters; ``train_config.raters`` says how those are used). Validation
        scores multi-rater cases against their plurality vote.
    model_config, train_config : ModelConfig, TrainConfig
    mapping : LabelMapping
        Label values <-> classes; stored in the checkpoint.
    norms : sequence of ChannelNorm
        Normalisation statistics of the training data (stored for reference).
    val_cases : sequence of Case or None
        Validation cases; None validates on the training cases' labelled voxels.
    init_state : dict or None
        Weights to start from ("continue training" after corrections).
    checkpoint_path : str or None
        Where to write the best model whenever it improves.
    should_stop : callable or None
        Polled between steps; True stops training (the best model is kept).
    clock : callable
        Seconds, for the ``minutes`` budget and ETAs; a GUI passes one that
        stands still while the user has paused training.
    """
    tc, mc = train_config, model_config
    if len(tc.patch_size) != mc.spatial_dims:
        raise ValueError(f"patch_size {tc.patch_size} does not match a {mc.spatial_dims}D model.")
    num_classes = mapping.num_classes
    expected_out = 1 if tc.loss == "bce" else num_classes
    if tc.loss == "bce" and num_classes != 2:
        raise ValueError(f"BCE is for one foreground class; the labels have values "
                         f"{list(mapping.values)}. Use dice_ce or ce.")
    if mc.out_channels != expected_out:
        raise ValueError(f"Model has {mc.out_channels} output channel(s); loss {tc.loss!r} with "
                         f"{num_classes} classes needs {expected_out}.")
    for c in train_cases:
        if c.image.shape[0] != mc.in_channels:
            raise ValueError(f"{c.name}: {c.image.shape[0]} channel(s), the model expects "
                             f"{mc.in_channels}.")
    present = set()
    for c in train_cases:
        present.update(int(v) for v in np.unique(c.target if c.raters is None else c.raters)
                       if v >= 0)
    if len(present) < 2:
        raise ValueError(f"Only class value(s) {[mapping.values[k] for k in present]} are labelled; "
                         "label at least background and one structure.")

    from napari_medseg.core.losses import make_loss
    from napari_medseg.core.models import build_model

    gen = seed_everything(tc.seed)
    dist_info, device = distributed.setup(pick_device(tc.device))
    # Every rank starts from the same weights (seeded above) but draws its own patches and
    # augmentation: with one seed for all, every rank flipped and rescaled alike each step.
    rank_seed = tc.seed + 1000 * dist_info.rank
    gen.manual_seed(rank_seed)
    main = dist_info.is_main
    where = f"{device.type}" + (f", {dist_info.world_size} processes (DDP)" if dist_info.enabled
                                 else "")
    yield Message(f"training on {where}", extra={"device": device.type,
                                                  "world_size": dist_info.world_size})
    model = build_model(mc)
    if init_state is not None:
        model.load_state_dict(init_state)
    model.to(device)
    mem_fmt = torch.channels_last if mc.spatial_dims == 2 else torch.channels_last_3d
    model = model.to(memory_format=mem_fmt)
    net: torch.nn.Module = model
    if dist_info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        _contiguous_pointwise_weights(model)
        net = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    loss_fn = make_loss(tc.loss, num_classes=mc.out_channels)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    use_amp = tc.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    vcases = list(val_cases) if val_cases else list(train_cases)
    if not val_cases and tc.val_fraction > 0 and len(train_cases) >= 2:
        # Hold out the last cases: the best-model choice then reflects unseen data.
        n_val = min(len(train_cases) - 1, max(1, round(len(train_cases) * tc.val_fraction)))
        vcases = list(train_cases[-n_val:])
        train_cases = list(train_cases[:-n_val])
        yield Message(f"validating on {n_val} held-out case(s): "
                      + ", ".join(c.name for c in vcases))
    rater_info = _rater_info(train_cases, tc.raters)
    if rater_info["max_raters"] > 1:
        yield Message(f"{rater_info['max_raters']} rater(s) per case at most, rater mode "
                      f"{tc.raters!r}", extra={"raters": rater_info})
    sampler = PatchSampler(train_cases, tc.patch_size, spatial_dims=mc.spatial_dims,
                           fg_oversample=tc.fg_oversample, slice_axis=tc.slice_axis,
                           seed=rank_seed,
                           raters=tc.raters)

    def train_step() -> float:
        x, y = sampler.sample(tc.batch_size)
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        if tc.augment:
            x, y = augment_batch(x, y, gen=gen, intensity=tc.intensity_jitter,
                                 scale=tc.scale_jitter)
        mask = None
        if y.ndim == x.ndim:  # a stack of raters ("soft"): vote fractions after augmenting
            y, mask = rater_soft_targets(y, num_classes, binary=mc.out_channels == 1)
        x = x.contiguous(memory_format=mem_fmt)
        with torch.autocast(device.type, enabled=use_amp):
            logits = net(x)
            loss = loss_fn(logits.float(), y, mask)
        optimiser_step(loss, opt, scaler)
        return float(loss.detach())

    def validate_epoch(epoch: int, step: int) -> Validation[Validated]:
        dice = validate(model, vcases, model_config=mc, train_config=tc, device=device,
                        num_classes=num_classes)
        vals = [d for d in dice.values() if d is not None]
        mean = float(np.mean(vals)) if vals else 0.0
        dice_by_value = {int(mapping.values[k]): d for k, d in dice.items()}
        return Validation(
            mean, {"dice": {str(k): v for k, v in dice_by_value.items()}, "mean_dice": mean},
            lambda best, elapsed: Validated(epoch, step, dice_by_value, mean, best, elapsed))

    def make_ckpt(state: dict[str, torch.Tensor], history: list[dict[str, Any]]) -> Checkpoint:
        return Checkpoint(model_config=mc, train_config=tc, mapping=mapping, norms=tuple(norms),
                          spacing=tc.spacing, state_dict=state, history=list(history),
                          channel_names=list(channel_names), fingerprints=list(fingerprints),
                          extra={"raters": rater_info,
                                 # a 2D model's slice axis means something only for volumes
                                 "image_dims": int(train_cases[0].image.ndim - 1)})

    res = yield from train_loop(
        model=model, optimiser=opt, schedule=tc, train_step=train_step, validate=validate_epoch,
        make_checkpoint=make_ckpt, new_model=lambda: build_model(mc),
        checkpoint_path=checkpoint_path, should_stop=should_stop, clock=clock,
        agree=lambda flag: distributed.any_rank(flag, dist_info, device), is_main=main,
        on_exit=lambda failed: distributed.teardown(dist_info, failed=failed))
    return FitResult(res.checkpoint, res.model, res.steps, res.stopped, res.best_score,
                     res.history)


def _rater_info(cases: Sequence[Case], mode: str) -> dict[str, Any]:
    """What the checkpoint records about the raters the model learnt from."""
    counts = [c.n_raters for c in cases]
    return {"mode": mode if max(counts) > 1 else "single", "max_raters": max(counts),
            "n_raters": counts}


def run(gen: Generator[Any, None, Any], on_event: Callable[[Any], None] | None = None) -> Any:
    """Drive a generator engine to completion synchronously; return its result."""
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(ev)


def copy_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of a model's weights (for warm starts)."""
    return copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
