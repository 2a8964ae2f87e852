"""Ensembles: the mean of several models' probabilities, checked by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from napari_medseg.core.engine import run
from napari_medseg.core.ensemble import ensemble_problem, segment_ensemble
from napari_medseg.core.events import Progress

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Constant(nn.Module):
    """The same class probabilities everywhere (a softmax of log ``probs``)."""

    def __init__(self, probs) -> None:
        super().__init__()
        self.spatial_dims = 3
        self.logits = nn.Parameter(torch.tensor(probs, dtype=torch.float32).log(),
                                   requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.logits.shape[0]
        return self.logits.reshape(1, k, 1, 1, 1).expand((x.shape[0], k, *x.shape[2:]))


def _ckpt(values=(0, 1, 2), channels=1, names=(), **tc):
    from napari_medseg.core.checkpoint import Checkpoint
    from napari_medseg.core.config import ModelConfig, TrainConfig
    from napari_medseg.core.data import LabelMapping

    mc = ModelConfig(spatial_dims=3, in_channels=channels, out_channels=len(values),
                     base_width=4, depth=2)
    cfg = TrainConfig(patch_size=(8, 8, 8), crop_foreground=False, intensity_norm="none", **tc)
    return Checkpoint(mc, cfg, LabelMapping(tuple(values)), (), None, {},
                      channel_names=list(names))


def test_the_mean_of_the_probabilities_decides():
    img = [np.random.default_rng(0).random((10, 9, 8)).astype(np.float32)]
    # alone, model A says class 1 and model B class 2; together class 2 (0.45 > 0.40)
    a, b = _Constant((0.2, 0.6, 0.2)), _Constant((0.1, 0.2, 0.7))
    events: list[Progress] = []
    seg = run(segment_ensemble([_ckpt(), _ckpt()], img, (1.0, 1.0, 1.0), models=[a, b],
                               device="cpu"), events.append)
    np.testing.assert_allclose(seg.probabilities[:, 3, 4, 5], [0.15, 0.4, 0.45], atol=1e-5)
    assert (seg.labels == 2).all()
    p = np.array([0.15, 0.4, 0.45])
    np.testing.assert_allclose(seg.entropy, -(p * np.log(p)).sum(), atol=1e-4)
    assert events and events[-1].done == events[-1].total
    assert {e.stage for e in events} == {"predict (model 1/2)", "predict (model 2/2)"}
    assert all(x.done <= y.done for x, y in zip(events, events[1:]))


def test_the_first_models_decision_rule_unless_told():
    img = [np.ones((8, 8, 8), np.float32)]
    nets = [_Constant((0.45, 0.3, 0.25)), _Constant((0.45, 0.3, 0.25))]
    ckpts = [_ckpt(decision="foreground"), _ckpt(decision="argmax")]
    fg = run(segment_ensemble(ckpts, img, (1.0,) * 3, models=nets, device="cpu"))
    assert (fg.labels == 1).all()  # foreground first: 0.55 of tumour beats 0.5
    am = run(segment_ensemble(ckpts, img, (1.0,) * 3, models=nets, device="cpu",
                              decision="argmax"))
    assert (am.labels == 0).all()


@pytest.mark.parametrize("other, message", [
    (dict(values=(0, 1, 4)), "label values [0, 1, 4], model 1 [0, 1, 2]"),
    (dict(values=(0, 1)), "label values [0, 1]"),
    (dict(channels=2), "takes 2 channel(s), model 1 1"),
    (dict(names=("t1c",)), "channels ['t1c'], model 1 ['flair']"),
])
def test_models_that_cannot_be_averaged_are_refused(other, message):
    first = _ckpt(names=("flair",))
    second = _ckpt(**{"names": ("flair",), **other})
    assert message in ensemble_problem([first, second])
    with pytest.raises(ValueError, match=r"\[|channel"):
        run(segment_ensemble([first, second], [np.ones((8, 8, 8), np.float32)], (1.0,) * 3))
    assert ensemble_problem([first, _ckpt(names=("flair",))]) is None
    assert ensemble_problem([]) == "No model given."
