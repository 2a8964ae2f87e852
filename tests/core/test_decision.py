"""Decision rules from probabilities to classes, checked by hand."""

from __future__ import annotations

import numpy as np
import torch
import pytest

from napari_medseg.core.decision import decide


def _probs(*cols):
    return np.array(cols, dtype=np.float32).T  # (K, n voxels)


def test_argmax_and_foreground_first_differ_where_parts_split_the_foreground():
    # voxel 0: background 0.4 beats each part (0.35, 0.25) but not their sum 0.6
    # voxel 1: clearly background; voxel 2: clearly part 2
    p = _probs([0.4, 0.35, 0.25], [0.8, 0.1, 0.1], [0.1, 0.2, 0.7])
    assert decide(p, rule="argmax").tolist() == [0, 0, 2]
    assert decide(p, rule="foreground").tolist() == [1, 0, 2]
    assert decide(p, rule="foreground", threshold=0.7).tolist() == [0, 0, 2]


def test_two_classes_both_rules_agree():
    rng = np.random.default_rng(0)
    fg = rng.random((5, 7))
    p = np.stack([1 - fg, fg])
    assert np.array_equal(decide(p, rule="argmax"), decide(p, rule="foreground"))


def test_single_sigmoid_channel_thresholds():
    p = np.array([[0.2, 0.5, 0.51, 0.9]])
    assert decide(p).tolist() == [0, 0, 1, 1]
    assert decide(p, threshold=0.8).tolist() == [0, 0, 0, 1]


@pytest.mark.parametrize("kw,msg", [({"rule": "vote"}, "Unknown decision rule"),
                                    ({"threshold": 1.0}, "strictly between")])
def test_bad_options_are_refused(kw, msg):
    with pytest.raises(ValueError, match=msg):
        decide(np.full((3, 2), 1 / 3), **kw)


def test_array_without_class_axis_is_refused():
    with pytest.raises(ValueError, match="Expected"):
        decide(np.zeros(4))


class _Constant(torch.nn.Module):
    """A 'model' whose softmax is (0.4, 0.35, 0.25) at every voxel."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = torch.nn.Parameter(torch.tensor([0.4, 0.35, 0.25]).log(),
                                         requires_grad=False)

    def forward(self, x):
        shape = (x.shape[0], 3, *x.shape[2:])
        return self.logits.reshape(1, 3, *([1] * (x.ndim - 2))).expand(shape)


def _labels(decision, threshold=0.5):
    from napari_medseg.core.engine import run
    from napari_medseg.core.inference import predict_volume

    image = np.zeros((1, 12, 10), np.float32)
    return run(predict_volume(_Constant(), image, spatial_dims=2, patch_size=(8, 8),
                              decision=decision, threshold=threshold)).labels


def test_predict_volume_applies_the_rule():
    assert (_labels("argmax") == 0).all()
    assert (_labels("foreground") == 1).all()
    with pytest.raises(ValueError, match="Unknown decision rule"):
        _labels("vote")


def test_the_foreground_threshold_reaches_predict_volume_and_segment():
    from napari_medseg.core.checkpoint import Checkpoint
    from napari_medseg.core.config import ModelConfig, TrainConfig
    from napari_medseg.core.data import LabelMapping
    from napari_medseg.core.engine import run
    from napari_medseg.core.pipeline import segment

    # the foreground classes together hold 0.6 everywhere
    assert (_labels("foreground", threshold=0.55) == 1).all()
    assert (_labels("foreground", threshold=0.65) == 0).all()
    with pytest.raises(ValueError, match="strictly between"):
        _labels("foreground", threshold=1.0)

    ck = Checkpoint(model_config=ModelConfig(spatial_dims=2, in_channels=1, out_channels=3),
                    train_config=TrainConfig(patch_size=(8, 8), decision="foreground",
                                             threshold=0.65),
                    mapping=LabelMapping((0, 1, 2)), norms=(), spacing=None, state_dict={},
                    history=[])
    image = [np.zeros((12, 10), np.float32)]

    def seg(**kw):
        return run(segment(ck, image, (1.0, 1.0), model=_Constant(), device="cpu", **kw)).labels

    assert (seg() == 0).all()  # the model's own threshold, 0.65
    assert (seg(threshold=0.5) == 1).all()  # overridden
    with pytest.raises(ValueError, match="strictly between"):
        seg(threshold=0.0)
    assert ck.describe().endswith("foreground above 0.65")


def test_train_config_carries_the_rule():
    from napari_medseg.core.config import TrainConfig

    tc = TrainConfig(patch_size=(8, 8), decision="foreground")
    assert TrainConfig.from_dict(tc.to_dict()).decision == "foreground"
    old = tc.to_dict()
    del old["decision"]  # a model saved before the option existed
    assert TrainConfig.from_dict(old).decision == "argmax"
    with pytest.raises(ValueError, match="decision"):
        TrainConfig(patch_size=(8, 8), decision="vote")
    tc = TrainConfig(patch_size=(8, 8), threshold=0.4)
    assert TrainConfig.from_dict(tc.to_dict()).threshold == 0.4
    del old["threshold"]
    assert TrainConfig.from_dict(old).threshold == 0.5
    with pytest.raises(ValueError, match="threshold must lie strictly between 0 and 1"):
        TrainConfig(patch_size=(8, 8), threshold=1.5)


@pytest.mark.parametrize("rule", ["argmax", "foreground"])
def test_a_two_class_softmax_keeps_its_threshold_under_either_rule(rule):
    # p(fg) 0.4 and 0.25: foreground at threshold 0.3 only where p(fg) = 0.4; argmax alone
    # would label neither voxel.
    p = _probs([0.6, 0.4], [0.75, 0.25], [0.2, 0.8])
    assert decide(p, rule=rule, threshold=0.3).tolist() == [1, 0, 1]
    assert decide(p, rule=rule, threshold=0.9).tolist() == [0, 0, 0]
    assert decide(p, rule=rule).tolist() == [0, 0, 1]


def test_which_decisions_read_the_threshold():
    from napari_medseg.core.decision import uses_threshold

    assert uses_threshold(1, "argmax") and uses_threshold(2, "argmax")
    assert not uses_threshold(3, "argmax") and uses_threshold(3, "foreground")


class _Binary(torch.nn.Module):
    """A two-class softmax of (0.6, 0.4) at every voxel."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = torch.nn.Parameter(torch.tensor([0.6, 0.4]).log(), requires_grad=False)

    def forward(self, x):
        return self.logits.reshape(1, 2, *([1] * (x.ndim - 2))).expand(
            (x.shape[0], 2, *x.shape[2:]))


def test_segment_applies_a_binary_models_threshold_under_argmax():
    from napari_medseg.core.checkpoint import Checkpoint
    from napari_medseg.core.config import ModelConfig, TrainConfig
    from napari_medseg.core.data import LabelMapping
    from napari_medseg.core.engine import run
    from napari_medseg.core.pipeline import segment

    ck = Checkpoint(model_config=ModelConfig(spatial_dims=2, in_channels=1, out_channels=2),
                    train_config=TrainConfig(patch_size=(8, 8), threshold=0.3),
                    mapping=LabelMapping((0, 7)), norms=(), spacing=None, state_dict={})
    image = [np.zeros((12, 10), np.float32)]

    def seg(**kw):
        return run(segment(ck, image, (1.0, 1.0), model=_Binary(), device="cpu", **kw)).labels

    assert (seg() == 7).all()  # p(fg) 0.4 above the model's 0.3, although argmax says 0
    assert (seg(threshold=0.5) == 0).all()
    assert (seg(decision="foreground") == 7).all()
