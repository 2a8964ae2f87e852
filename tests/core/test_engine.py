"""The training engine: events, stopping, budgets, checkpoints, warm start, errors."""

import time

import numpy as np
import pytest

from napari_medseg.core.checkpoint import load_checkpoint
from napari_medseg.core.config import ModelConfig, TrainConfig
from napari_medseg.core.data import Case, LabelMapping
from napari_medseg.core.engine import fit, pick_device, run
from napari_medseg.core.events import EpochDone, Message, StepDone, Validated


def _cases(n=1, size=24, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = rng.normal(0, 0.3, (1, size, size)).astype(np.float32)
        tgt = np.zeros((size, size), np.int16)
        r0 = 4 + i
        tgt[r0:r0 + 8, 6:14] = 1
        img[0][tgt == 1] += 2.0  # bright square: easy to learn
        out.append(Case(img, tgt, (1.0, 1.0), f"case{i}"))
    return out


MC = ModelConfig(spatial_dims=2, in_channels=1, out_channels=2, base_width=4, depth=2)


def _tc(**kw):
    base = dict(patch_size=(16, 16), batch_size=4, epochs=2, steps_per_epoch=5, seed=0, lr=1e-2)
    return TrainConfig(**(base | kw))


def test_events_and_result(tmp_path):
    events = []
    res = run(fit(_cases(), model_config=MC, train_config=_tc(), mapping=LabelMapping((0, 1)),
                  checkpoint_path=str(tmp_path / "m.pt")), events.append)
    kinds = [type(e) for e in events]
    assert kinds[0] is Message and kinds.count(StepDone) == 10
    assert kinds.count(EpochDone) == 2 and kinds.count(Validated) == 2
    steps = [e.step for e in events if isinstance(e, StepDone)]
    assert steps == list(range(1, 11))
    val = [e for e in events if isinstance(e, Validated)]
    assert set(val[0].dice) == {1}  # keyed by the user's label value
    assert res.steps == 10 and not res.stopped and len(res.history) == 2
    ck = load_checkpoint(tmp_path / "m.pt")
    assert ck.history and ck.mapping.values == (0, 1)
    # whether a 2D model learnt from volumes, where its slice axis means something
    from napari_medseg.core.pipeline import trained_on_volumes

    assert ck.extra["image_dims"] == _cases()[0].image.ndim - 1
    assert trained_on_volumes(ck) is (ck.extra["image_dims"] == 3)


def test_learns_an_easy_task():
    res = run(fit(_cases(), model_config=MC, train_config=_tc(epochs=6, steps_per_epoch=10),
                  mapping=LabelMapping((0, 1))))
    assert res.best_dice is not None and res.best_dice > 0.8


def test_stop_between_steps_keeps_a_model(tmp_path):
    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return calls["n"] > 3

    res = run(fit(_cases(), model_config=MC, train_config=_tc(epochs=50),
                  mapping=LabelMapping((0, 1)), should_stop=should_stop,
                  checkpoint_path=str(tmp_path / "m.pt")))
    assert res.stopped and res.steps == 3
    assert (tmp_path / "m.pt").exists()


def test_closing_the_generator_saves_current_weights(tmp_path):
    gen = fit(_cases(), model_config=MC, train_config=_tc(epochs=50), mapping=LabelMapping((0, 1)),
              checkpoint_path=str(tmp_path / "m.pt"))
    for ev in gen:
        if isinstance(ev, StepDone) and ev.step == 2:
            break
    gen.close()
    assert load_checkpoint(tmp_path / "m.pt").model_config == MC


def test_minutes_budget_stops_training():
    t0 = time.perf_counter()
    res = run(fit(_cases(), model_config=MC, train_config=_tc(epochs=None, minutes=0.02),
                  mapping=LabelMapping((0, 1))))
    assert time.perf_counter() - t0 < 20
    assert res.steps >= 1 and not res.stopped


def test_val_fraction_holds_out_cases():
    events = []
    run(fit(_cases(3), model_config=MC, train_config=_tc(epochs=1, val_fraction=0.3),
            mapping=LabelMapping((0, 1))), events.append)
    msgs = [e.text for e in events if isinstance(e, Message)]
    assert any("held-out case(s): case2" in m for m in msgs)


def test_warm_start_continues_from_weights():
    first = run(fit(_cases(), model_config=MC, train_config=_tc(epochs=4, steps_per_epoch=10),
                    mapping=LabelMapping((0, 1))))
    second = run(fit(_cases(), model_config=MC, train_config=_tc(epochs=1, steps_per_epoch=1,
                                                                   lr=1e-6),
                     mapping=LabelMapping((0, 1)), init_state=first.checkpoint.state_dict))
    assert second.best_dice == pytest.approx(first.best_dice, abs=0.05)


def test_bce_binary():
    mc = ModelConfig(spatial_dims=2, in_channels=1, out_channels=1, base_width=4, depth=2)
    # A single sigmoid output learns this imbalanced task more slowly than softmax.
    res = run(fit(_cases(), model_config=mc, train_config=_tc(loss="bce", epochs=5,
                                                              steps_per_epoch=40, lr=2e-2),
                  mapping=LabelMapping((0, 1))))
    assert res.best_dice > 0.5


def test_sparse_labels_train_only_on_labelled():
    cases = _cases()
    t = cases[0].target
    sparse = np.full_like(t, -1)
    sparse[:, 8:12] = t[:, 8:12]  # a few annotated columns only
    cases[0].target = sparse
    res = run(fit(cases, model_config=MC, train_config=_tc(epochs=3, steps_per_epoch=10),
                  mapping=LabelMapping((0, 1))))
    assert res.steps == 30


def test_errors_are_clear():
    one_class = _cases()
    one_class[0].target[:] = 0
    with pytest.raises(ValueError, match="label at least background and one structure"):
        next(fit(one_class, model_config=MC, train_config=_tc(), mapping=LabelMapping((0, 1))))
    with pytest.raises(ValueError, match="output channel"):
        next(fit(_cases(), model_config=MC, train_config=_tc(),
                 mapping=LabelMapping((0, 1, 2))))
    with pytest.raises(ValueError, match="patch_size"):
        next(fit(_cases(), model_config=MC, train_config=_tc(patch_size=(8, 8, 8)),
                 mapping=LabelMapping((0, 1))))


def test_pick_device():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type in ("cpu", "cuda", "mps")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            pick_device("cuda")


def test_budget_follows_the_given_clock():
    # A clock that advances 1 s per reading: a 0.1-minute budget ends after ~6 readings,
    # however fast the machine is (a paused GUI passes a clock that stands still).
    ticks = iter(range(10_000))
    res = run(fit(_cases(), model_config=MC, train_config=_tc(epochs=None, minutes=0.1),
                  mapping=LabelMapping((0, 1)), clock=lambda: float(next(ticks))))
    assert res.steps in range(1, 7)
