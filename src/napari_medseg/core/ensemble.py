"""Segment with several models at once: the mean of their probabilities.

Models trained on the same labels with different seeds (or data, or
architectures) make partly independent errors; averaging their class
probabilities before the decision cancels some of them, as nnU-Net does with
its cross-validation folds. Each model prepares the image its own way (its
spacing, normalisation and crop), so the average is taken on the input grid.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from typing import Any

import numpy as np

from napari_medseg.core.checkpoint import Checkpoint
from napari_medseg.core.decision import check_rule, check_threshold
from napari_medseg.core.events import Progress
from napari_medseg.core.pipeline import Segmentation, labelled, segment

__all__ = ["ensemble_problem", "segment_ensemble"]


def ensemble_problem(ckpts: Sequence[Checkpoint]) -> str | None:
    """Why these models cannot be averaged (None when they can).

    They must predict the same label values from the same number of channels.
    """
    if not ckpts:
        return "No model given."
    first = ckpts[0]
    for i, ck in enumerate(ckpts[1:], start=2):
        if ck.mapping.values != first.mapping.values:
            return (f"Model {i} predicts label values {list(ck.mapping.values)}, model 1 "
                    f"{list(first.mapping.values)}: an ensemble needs models of the same "
                    "labels.")
        if ck.model_config.out_channels != first.model_config.out_channels:
            return (f"Model {i} has {ck.model_config.out_channels} outputs, model 1 "
                    f"{first.model_config.out_channels} (a sigmoid and a softmax model of the "
                    "same labels): train them with the same loss.")
        if ck.model_config.in_channels != first.model_config.in_channels:
            return (f"Model {i} takes {ck.model_config.in_channels} channel(s), model 1 "
                    f"{first.model_config.in_channels}.")
        if ck.channel_names and first.channel_names and ck.channel_names != first.channel_names:
            return (f"Model {i} takes the channels {list(ck.channel_names)}, model 1 "
                    f"{list(first.channel_names)}: pass models trained on the same channels, "
                    "in the same order.")
    return None


def segment_ensemble(ckpts: Sequence[Checkpoint], channels: Sequence[np.ndarray],
                     spacing: Sequence[float], *, models: Sequence[Any] | None = None,
                     decision: str | None = None, threshold: float | None = None,
                     **kwargs: Any) -> Generator[Progress, None, Segmentation]:
    """Segment with every model and decide on the mean of their probabilities.

    Parameters
    ----------
    ckpts : sequence of Checkpoint
        Models of the same label values and channels (see :func:`ensemble_problem`).
    channels, spacing
        As for :func:`~napari_medseg.core.pipeline.segment`.
    models : sequence of torch.nn.Module, optional
        The networks, if already built (one per checkpoint).
    decision, threshold : optional
        The decision rule and threshold; by default the first model's.
    **kwargs
        Passed to :func:`~napari_medseg.core.pipeline.segment` for every model
        (``device``, ``tta``, ``batch_size``, ``slice_axis``, ``region``...).

    Yields
    ------
    Progress
        Over all models together, in thousandths of the whole (``stage`` names the
        model: "predict (model 2/3)").

    Returns
    -------
    Segmentation
        Labels decided on the mean probabilities; their entropy.

    Raises
    ------
    ValueError
        Models that cannot be averaged, or what ``segment`` refuses.
    """
    problem = ensemble_problem(ckpts)
    if problem:
        raise ValueError(problem)
    if models is not None and len(models) != len(ckpts):
        raise ValueError(f"{len(models)} networks for {len(ckpts)} checkpoints.")
    first = ckpts[0]
    rule = check_rule(decision or first.train_config.decision)
    thr = check_threshold(first.train_config.threshold if threshold is None else threshold)
    n = len(ckpts)
    if n == 1:
        return (yield from segment(first, channels, spacing,
                                   model=None if models is None else models[0],
                                   decision=rule, threshold=thr, **kwargs))
    total: np.ndarray | None = None
    for i, ck in enumerate(ckpts):
        job = segment(ck, channels, spacing, model=None if models is None else models[i],
                      decision=rule, threshold=thr, **kwargs)
        t0 = time.perf_counter()
        try:
            while True:
                ev = next(job)
                eta = None
                if ev.eta_s is not None and ev.done:
                    # the models still to come, as long as this one takes in all
                    per_model = (time.perf_counter() - t0) / ev.fraction
                    eta = ev.eta_s + (n - i - 1) * per_model
                # each model an equal share, counted in thousandths: the models' window
                # counts differ where their spacings or patches do
                yield Progress(round(1000 * (i + ev.fraction)), 1000 * n,
                               f"{ev.stage} (model {i + 1}/{n})".lstrip(), eta)
        except StopIteration as stop:
            seg: Segmentation = stop.value
        total = seg.probabilities if total is None else total + seg.probabilities
        del seg
    assert total is not None
    return labelled(total / n, first.mapping, rule=rule, threshold=thr)
