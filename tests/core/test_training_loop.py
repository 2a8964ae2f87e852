"""The shared training loop with fake tasks: budgets, schedule, stopping, best weights, saving."""

from dataclasses import dataclass

import pytest
import torch

from napari_medseg.core.checkpoint import Checkpoint
from napari_medseg.core.config import ModelConfig, TrainConfig
from napari_medseg.core.data import LabelMapping
from napari_medseg.core.engine import run
from napari_medseg.core.events import EpochDone, StepDone
from napari_medseg.core.training_loop import (
    VAL_SHARE,
    Validation,
    poly_lr,
    progress_fraction,
    train_loop,
)


def saved(path):
    """The weights and history a fake task's checkpoint file holds (read raw: the fake
    one-weight network does not fit the UNet its config names, which load_checkpoint
    refuses)."""
    payload = torch.load(path, weights_only=True)
    return Checkpoint(ModelConfig(spatial_dims=2), TrainConfig(patch_size=(16, 16)),
                      LabelMapping((0, 1)), (), None, payload["state_dict"],
                      history=list(payload["history"]))


@dataclass(frozen=True)
class Sched:
    lr: float = 0.1
    epochs: int | None = 2
    minutes: float | None = None
    steps_per_epoch: int = 3


@dataclass(frozen=True)
class Checked:
    epoch: int
    step: int
    score: float
    best: bool
    elapsed_s: float


class FakeTask:
    """A one-weight 'network' whose weight is the number of steps run; scores given per epoch."""

    def __init__(self, scores=(1.0,), stop_after=None):
        self.model = torch.nn.Linear(1, 1, bias=False)
        torch.nn.init.zeros_(self.model.weight)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1.0)
        self.scores = list(scores)
        self.stop_after = stop_after
        self.lrs: list[float] = []
        self.polls = 0
        self.calls: list[str] = []

    def train_step(self) -> float:
        self.lrs.append(self.opt.param_groups[0]["lr"])
        with torch.no_grad():
            self.model.weight += 1.0
        return float(self.model.weight.item())

    def validate(self, epoch, step):
        score = self.scores[min(epoch, len(self.scores)) - 1]
        return Validation(score, {"score": score},
                          lambda best, elapsed: Checked(epoch, step, score, best, elapsed))

    def should_stop(self) -> bool:
        self.polls += 1
        return self.stop_after is not None and self.polls > self.stop_after

    def make_checkpoint(self, state, history):
        self.calls.append("checkpoint")
        return Checkpoint(model_config=ModelConfig(spatial_dims=2), train_config=TrainConfig(
            patch_size=(16, 16)), mapping=LabelMapping((0, 1)), norms=(), spacing=None,
            state_dict=state, history=list(history))

    def loop(self, schedule, **kw):
        return train_loop(model=self.model, optimiser=self.opt, schedule=schedule,
                          train_step=self.train_step, validate=self.validate,
                          make_checkpoint=self.make_checkpoint,
                          new_model=lambda: torch.nn.Linear(1, 1, bias=False),
                          should_stop=self.should_stop, **kw)


def ticking(dt=1.0):
    now = [0.0]

    def clock():
        now[0] += dt
        return now[0]
    return clock


def weight(sd) -> float:
    return float(sd["weight"].item())


def test_progress_fraction_and_poly_lr():
    assert progress_fraction(3, 0.0, total_steps=12, budget_s=None) == 0.25
    assert progress_fraction(3, 30.0, total_steps=12, budget_s=60.0) == 0.5  # the further one
    assert progress_fraction(20, 0.0, total_steps=12, budget_s=None) == 1.0
    assert progress_fraction(5, 5.0, total_steps=None, budget_s=None) == 0.0
    assert poly_lr(0.1, 0.0) == 0.1 and poly_lr(0.1, 1.0) == 0.0
    assert poly_lr(1.0, 0.5) == pytest.approx(0.5 ** 0.9)


def test_events_order_and_lr_schedule_follow_the_steps():
    task = FakeTask(scores=(1.0, 2.0))
    events = []
    res = run(task.loop(Sched(), clock=lambda: 0.0), events.append)
    assert [type(e).__name__ for e in events] == ["StepDone"] * 3 + ["EpochDone", "Checked"] + \
        ["StepDone"] * 3 + ["EpochDone", "Checked"]
    assert [e.step for e in events if isinstance(e, StepDone)] == [1, 2, 3, 4, 5, 6]
    # The clock stands still: the schedule moves with the steps alone.
    assert task.lrs == [poly_lr(0.1, k / 6) for k in range(6)]
    assert [e.loss for e in events if isinstance(e, EpochDone)] == [2.0, 5.0]
    assert res.steps == 6 and not res.stopped and res.best_score == 2.0
    assert [list(h) for h in res.history] == [["epoch", "step", "loss", "score", "elapsed_s"]] * 2
    assert not res.model.training and weight(res.model.state_dict()) == 6.0


def test_a_fake_clock_gives_the_exact_step_count():
    # One second per reading, a 6-second budget: t0 = 1, then two readings per step
    # (elapsed 2, 4, 6 after steps 1-3), so the budget runs out after exactly 3 steps.
    task = FakeTask()
    events = []
    res = run(task.loop(Sched(epochs=None, minutes=0.1, steps_per_epoch=100), clock=ticking()),
              events.append)
    steps = [e for e in events if isinstance(e, StepDone)]
    assert res.steps == 3 and not res.stopped
    assert [e.elapsed_s for e in steps] == [2.0, 4.0, 6.0]
    assert [e.total_steps for e in steps] == [None] * 3
    assert steps[0].eta_s == pytest.approx(2.0 * (1 - 2 / 6) / (2 / 6))
    assert task.lrs[0] == pytest.approx(poly_lr(0.1, 1 / 6))  # the schedule reads the clock too


def test_should_stop_stops_between_steps_and_keeps_the_best_weights(tmp_path):
    task = FakeTask(scores=(1.0, 0.5), stop_after=4)  # epoch 1 is best; stop before step 5
    path = tmp_path / "m.pt"
    events = []
    res = run(task.loop(Sched(epochs=10, steps_per_epoch=2), checkpoint_path=str(path),
                        clock=ticking()), events.append)
    assert res.stopped and res.steps == 4 and task.polls == 5
    assert [e.best for e in events if isinstance(e, Checked)] == [True, False]
    assert weight(res.model.state_dict()) == 2.0 and weight(res.checkpoint.state_dict) == 2.0
    assert weight(task.model.state_dict()) == 4.0  # the live model trained on
    ck = saved(path)  # rewritten on the stop: best weights, the whole history
    assert weight(ck.state_dict) == 2.0 and [h["epoch"] for h in ck.history] == [1, 2]


def test_kept_weights_are_copies_that_later_steps_do_not_change():
    task = FakeTask(scores=(2.0, 1.0, 0.0))
    res = run(task.loop(Sched(epochs=3, steps_per_epoch=1), clock=lambda: 0.0))
    assert res.best_score == 2.0 and weight(res.checkpoint.state_dict) == 1.0


def test_stop_before_any_step_returns_the_current_weights(tmp_path):
    task = FakeTask(stop_after=0)
    res = run(task.loop(Sched(), checkpoint_path=str(tmp_path / "m.pt"), clock=ticking()))
    assert res.stopped and res.steps == 0 and res.best_score is None and res.history == []
    assert (tmp_path / "m.pt").exists()


def test_closing_keeps_the_best_weights_or_the_current_ones(tmp_path):
    early = FakeTask()
    gen = early.loop(Sched(epochs=50), checkpoint_path=str(tmp_path / "a.pt"), clock=ticking())
    for ev in gen:
        if isinstance(ev, StepDone) and ev.step == 2:
            break
    gen.close()
    assert weight(saved(tmp_path / "a.pt").state_dict) == 2.0

    late = FakeTask(scores=(1.0, 0.0))
    gen = late.loop(Sched(epochs=50), checkpoint_path=str(tmp_path / "b.pt"), clock=ticking())
    for ev in gen:
        if isinstance(ev, StepDone) and ev.step == 5:
            break
    gen.close()
    assert weight(saved(tmp_path / "b.pt").state_dict) == 3.0  # the validated best


def test_agree_decides_stops_and_only_the_main_process_validates(tmp_path):
    task = FakeTask()
    asked: list[bool] = []
    exits: list[str] = []

    def agree(flag: bool) -> bool:
        asked.append(bool(flag))
        return flag

    events = []
    res = run(task.loop(Sched(epochs=2, steps_per_epoch=2), checkpoint_path=str(tmp_path / "m.pt"),
                        clock=lambda: 0.0, agree=agree, is_main=False,
                        on_exit=lambda failed: exits.append(f"exit {failed}")), events.append)
    # Before and after each step: stop request, then limit.
    assert asked == [False, False, False, False, False, False, False, True]
    assert not any(isinstance(e, Checked) for e in events) and res.history == []
    assert not (tmp_path / "m.pt").exists() and exits == ["exit False"]


def test_on_exit_runs_before_the_final_checkpoint_and_on_errors():
    task = FakeTask(stop_after=1)
    order: list[str] = []
    task.calls = order
    run(task.loop(Sched(), clock=lambda: 0.0,
                  on_exit=lambda failed: order.append(f"exit {failed}")))
    assert order == ["exit False", "checkpoint"]

    broken = FakeTask()
    broken.train_step = lambda: 1 / 0
    exits: list[str] = []
    with pytest.raises(ZeroDivisionError):
        run(broken.loop(Sched(), clock=lambda: 0.0,
                        on_exit=lambda failed: exits.append(f"exit {failed}")))
    assert exits == ["exit True"]  # DDP: leave without waiting for the other ranks


def test_start_epoch_runs_before_each_epoch():
    task = FakeTask()
    starts: list[int] = []
    run(task.loop(Sched(epochs=3, steps_per_epoch=2), clock=lambda: 0.0,
                  start_epoch=lambda: starts.append(len(task.lrs))))
    assert starts == [0, 2, 4]


def test_with_a_time_budget_validation_takes_at_most_its_share_of_the_time():
    # Each clock reading moves 1 s; each validation 9 s more (10 s in all, with its reading).
    now = [0.0]

    def clock():
        now[0] += 1.0
        return now[0]

    task = FakeTask(scores=(1.0,))
    plain = task.validate

    def slow_validate(epoch, step):
        now[0] += 9.0
        return plain(epoch, step)

    task.validate = slow_validate
    events = []
    res = run(task.loop(Sched(epochs=None, minutes=10.0, steps_per_epoch=1), clock=clock),
              events.append)
    epochs = [e.epoch for e in events if isinstance(e, EpochDone)]
    checked = [e for e in events if isinstance(e, Checked)]
    # Without the rule every one of the ~170 epochs would validate, taking ~3/4 of the time.
    assert len(epochs) > 150
    assert checked[0].epoch == 1 and checked[-1].epoch == epochs[-1]  # first and last always
    # Validations spent 10 s each; before each one after the first, the time spent
    # validating, this one included, stayed within VAL_SHARE of the time so far.
    starts = [h["elapsed_s"] - 10.0 for h in res.history]
    assert all(10.0 * (k + 1) <= VAL_SHARE * t for k, t in enumerate(starts[1:-1], start=1))
    assert 5 <= len(checked) <= 7  # at ~3, 200, 300, 400, 500 s and the end (600 s)
    assert res.history[-1]["elapsed_s"] >= 600.0


def test_without_a_time_budget_every_epoch_validates():
    task = FakeTask()
    events = []
    run(task.loop(Sched(epochs=4, steps_per_epoch=1), clock=ticking(50.0)), events.append)
    assert [e.epoch for e in events if isinstance(e, Checked)] == [1, 2, 3, 4]
