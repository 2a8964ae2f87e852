"""The one training loop behind the generator engines (segmentation and restoration).

A task supplies what differs -- one batch's loss and optimiser step, what
validation measures, what its checkpoint holds -- as callables; the loop owns
everything else, so the engines cannot drift apart: when to stop (epochs, a
``minutes`` budget on an injectable clock, a stop request), the poly
learning-rate schedule, :class:`~napari_medseg.core.events.StepDone` and
:class:`~napari_medseg.core.events.EpochDone` with ETAs, keeping the best
weights and writing them whenever they improve.

Like the engines it yields events and returns its result; callers delegate to
it with ``yield from``, which also forwards ``close()`` to it.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import torch

from napari_medseg.core.checkpoint import Checkpoint, save_checkpoint
from napari_medseg.core.events import EpochDone, StepDone

__all__ = ["VAL_SHARE", "LoopResult", "Schedule", "Validation", "cpu_state", "optimiser_step",
           "poly_lr", "progress_fraction", "train_loop"]

E = TypeVar("E")
StateDict = dict[str, torch.Tensor]

# StepDone's loss is a running mean over this many steps: one batch is too noisy to read.
RUNNING_STEPS = 20

#: With a time budget, validation may use at most this share of the time spent so far:
#: a few large volumes can take as long to validate as hundreds of steps take to train.
VAL_SHARE = 0.1


class Schedule(Protocol):
    """How long to train and from which learning rate (TrainConfig and RestoreConfig fit)."""

    @property
    def lr(self) -> float: ...

    @property
    def epochs(self) -> int | None: ...

    @property
    def minutes(self) -> float | None: ...

    @property
    def steps_per_epoch(self) -> int: ...


@dataclass(frozen=True)
class Validation(Generic[E]):
    """One epoch's validation, as the task measured it.

    Attributes
    ----------
    score : float
        Higher is better; the loop keeps the weights with the highest score (on a tie,
        the later ones).
    metrics : dict
        The task's fields of the history row, stored between ``loss`` and ``elapsed_s``.
    event : callable
        ``event(best, elapsed_s) -> E``: the event to yield, built once the loop knows
        whether these weights were kept.
    """

    score: float
    metrics: dict[str, Any]
    event: Callable[[bool, float], E]


@dataclass
class LoopResult:
    """What the loop produced.

    Attributes
    ----------
    checkpoint : Checkpoint
        The best weights (the current ones when nothing was validated) with the task's metadata.
    model : torch.nn.Module
        A fresh network holding those weights, on the CPU, in eval mode.
    steps : int
        Optimisation steps run.
    stopped : bool
        True when stopped on request before the epoch/time limit.
    best_score : float or None
        Best validation score; None when nothing was validated.
    history : list of dict
        One row per validation.
    """

    checkpoint: Checkpoint
    model: torch.nn.Module
    steps: int
    stopped: bool
    best_score: float | None
    history: list[dict[str, Any]] = field(default_factory=list)


def progress_fraction(step: int, elapsed_s: float, *, total_steps: int | None,
                      budget_s: float | None) -> float:
    """How far training is, in [0, 1]: the further of the step count and the time budget.

    Parameters
    ----------
    step : int
        Steps done.
    elapsed_s : float
        Seconds spent, on the loop's clock.
    total_steps, budget_s : int or float or None
        The limits; None (or 0) for a limit that is not set. With neither set the
        fraction stays 0.
    """
    f = 0.0
    if total_steps:
        f = max(f, step / total_steps)
    if budget_s:
        f = max(f, elapsed_s / budget_s)
    return min(f, 1.0)


def poly_lr(base_lr: float, fraction: float) -> float:
    """The poly schedule (power 0.9): ``base_lr`` at the start, 0 at the end of training."""
    return base_lr * (1 - fraction) ** 0.9


def cpu_state(model: torch.nn.Module) -> StateDict:
    """A copy of ``model``'s weights on the CPU that later steps cannot change."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def optimiser_step(loss: torch.Tensor, optimiser: torch.optim.Optimizer,
                   scaler: torch.amp.GradScaler) -> None:
    """Backpropagate ``loss`` and step, through the AMP scaler (a no-op one without AMP)."""
    optimiser.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimiser)
    scaler.update()


def _eta(elapsed_s: float, fraction: float) -> float | None:
    return elapsed_s * (1 - fraction) / fraction if fraction > 0 else None


def _alone(flag: bool) -> bool:
    return flag


def train_loop(
    *,
    model: torch.nn.Module,
    optimiser: torch.optim.Optimizer,
    schedule: Schedule,
    train_step: Callable[[], float],
    validate: Callable[[int, int], Validation[E]],
    make_checkpoint: Callable[[StateDict, list[dict[str, Any]]], Checkpoint],
    new_model: Callable[[], torch.nn.Module],
    checkpoint_path: str | None = None,
    should_stop: Callable[[], bool] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    start_epoch: Callable[[], None] | None = None,
    agree: Callable[[bool], bool] = _alone,
    is_main: bool = True,
    on_exit: Callable[[bool], None] | None = None,
) -> Generator[StepDone | EpochDone | E, None, LoopResult]:
    """Train until the epochs or the time budget run out or a stop is requested.

    Each step sets the learning rate, runs ``train_step`` and yields a
    :class:`~napari_medseg.core.events.StepDone`; each epoch yields an
    :class:`~napari_medseg.core.events.EpochDone`, then validates and yields the
    task's event. With a time budget (``minutes``) an epoch's validation is
    skipped when validating would bring the time spent validating above
    :data:`VAL_SHARE` of the time spent so far (judged by the last validation's
    duration); the first epoch and the last one are always validated. However
    training ends (finished, stopped, closed, Ctrl-C), ``checkpoint_path`` ends up
    holding the best weights and the whole history, or the current weights when
    nothing was validated and the file did not exist (an earlier model is kept).

    Parameters
    ----------
    model : torch.nn.Module
        The network being trained (not a DDP wrapper): its weights are the ones kept.
    optimiser : torch.optim.Optimizer
        Its learning rate is set before every step.
    schedule : Schedule
        ``lr``, ``epochs``, ``minutes`` and ``steps_per_epoch``.
    train_step : callable
        ``train_step() -> loss``: draws one batch, steps the optimiser (see
        :func:`optimiser_step`) and returns the batch's loss.
    validate : callable
        ``validate(epoch, step) -> Validation``, called after each epoch (main process only).
    make_checkpoint : callable
        ``make_checkpoint(state, history) -> Checkpoint`` for weights to write or return.
    new_model : callable
        Builds an untrained network of the same architecture, for the returned model.
    checkpoint_path : str or None
        Where to write the best weights whenever they improve.
    should_stop : callable or None
        Polled before every step; True stops training (the best weights are kept).
    clock : callable
        Seconds, for the ``minutes`` budget, the schedule and ETAs; read once at the
        start, twice per step, once per epoch and twice more per validated epoch.
    start_epoch : callable or None
        Called at the start of every epoch (e.g. to redraw the training patches).
    agree : callable
        Turns this process's stop decision into the job's; with DDP, true when any
        rank says so, or one rank leaves while the others wait in the all-reduce.
    is_main : bool
        Only the main process validates and writes checkpoints.
    on_exit : callable or None
        ``on_exit(failed)``, called when training ends, however it ends, before the final
        checkpoint is written (DDP leaves its process group here); ``failed`` is true when
        it ends on an exception or by being closed.

    Returns
    -------
    LoopResult
    """
    epochs, steps_per_epoch = schedule.epochs, schedule.steps_per_epoch
    total_steps = None if epochs is None else epochs * steps_per_epoch
    budget_s = None if schedule.minutes is None else schedule.minutes * 60.0
    history: list[dict[str, Any]] = []
    best: float | None = None
    best_state: StateDict | None = None
    stopped = False
    step = 0
    running: deque[float] = deque(maxlen=RUNNING_STEPS)
    val_spent = 0.0  # seconds spent validating so far
    val_last: float | None = None  # the last validation's duration
    t0 = clock()

    def fraction(elapsed_s: float) -> float:
        return progress_fraction(step, elapsed_s, total_steps=total_steps, budget_s=budget_s)

    epoch = 0
    done = False
    clean = False  # the loop ran to its end (not an exception, not closed)
    model.train()
    try:
        while not done:
            epoch += 1
            if start_epoch is not None:
                start_epoch()
            ep_losses: list[float] = []
            for _ in range(steps_per_epoch):
                if agree(should_stop is not None and should_stop()):
                    stopped = done = True
                    break
                lr = poly_lr(schedule.lr, fraction(clock() - t0))
                for group in optimiser.param_groups:
                    group["lr"] = lr
                loss = train_step()
                step += 1
                ep_losses.append(loss)
                running.append(loss)
                elapsed = clock() - t0
                yield StepDone(step, epoch, float(np.mean(running)), lr, elapsed,
                               _eta(elapsed, fraction(elapsed)), total_steps)
                limit = bool((total_steps and step >= total_steps)
                             or (budget_s and elapsed >= budget_s))
                if agree(limit):
                    done = True
                    break
            if not ep_losses:
                break
            elapsed = clock() - t0
            epoch_loss = float(np.mean(ep_losses))
            yield EpochDone(epoch, step, epoch_loss, elapsed, _eta(elapsed, fraction(elapsed)))
            if not is_main:  # the main process validates and saves; the others train on
                continue
            if (budget_s and not done and val_last is not None
                    and val_spent + val_last > VAL_SHARE * elapsed):
                continue
            val = validate(epoch, step)
            after = clock() - t0
            val_last = after - elapsed
            val_spent += val_last
            improved = best is None or val.score >= best
            history.append({"epoch": epoch, "step": step, "loss": epoch_loss, **val.metrics,
                            "elapsed_s": after})
            if improved:
                best = val.score
                best_state = cpu_state(model)
                if checkpoint_path:
                    save_checkpoint(checkpoint_path, make_checkpoint(best_state, history))
            yield val.event(improved, clock() - t0)
        clean = True
    except (GeneratorExit, KeyboardInterrupt):
        # Closed (a killed job) or Ctrl-C: the file keeps this run's best weights with the
        # whole history, or the current weights when nothing was validated yet.
        if checkpoint_path and is_main:
            if best_state is not None:
                save_checkpoint(checkpoint_path, make_checkpoint(best_state, history))
            elif not os.path.exists(checkpoint_path):
                # unvalidated weights only where there is nothing to lose: an earlier
                # run's validated model in that file is worth more
                save_checkpoint(checkpoint_path, make_checkpoint(cpu_state(model), history))
        raise
    finally:
        if on_exit is not None:
            on_exit(not clean)
    if best_state is None:  # stopped before the first validation: keep the current weights
        best_state = cpu_state(model)
    ckpt = make_checkpoint(best_state, history)
    if checkpoint_path and is_main:
        # Rewritten at the end so the file's history includes the epochs after the last gain.
        save_checkpoint(checkpoint_path, ckpt)
    final = new_model()
    final.load_state_dict(best_state)
    final.eval()
    return LoopResult(ckpt, final, step, stopped, best, history)
