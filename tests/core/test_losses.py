"""Tests for napari_medseg.core.losses (tiny tensors, CPU only)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from napari_medseg.core.losses import (
    LOSSES,
    BCELoss,
    CrossEntropyLoss,
    DiceCELoss,
    SoftDiceLoss,
    make_loss,
)

SHAPES = {2: (5, 6), 3: (3, 4, 5)}


def _inputs(k: int, dims: int, *, n: int = 2, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    spatial = SHAPES[dims]
    logits = torch.randn(n, k, *spatial, generator=g, dtype=dtype)
    target = torch.randint(0, max(k, 2), (n, *spatial), generator=g)
    return logits, target


def _all_losses(k: int):
    out = [SoftDiceLoss(), SoftDiceLoss(batch_dice=False), DiceCELoss()]
    out.append(CrossEntropyLoss() if k > 1 else BCELoss())
    return out


# --- values checked by hand -----------------------------------------------------------


def test_ce_known_value_with_ignore():
    # voxel 0: logits (1, 2, 0), class 1; voxel 1: (0, 0, 0), class 2; voxel 2 ignored.
    logits = torch.tensor([[[1.0, 0.0, 9.0], [2.0, 0.0, -9.0], [0.0, 0.0, 3.0]]])[..., None]
    target = torch.tensor([[1, 2, -1]])[..., None]
    ce0 = -math.log(math.exp(2) / (math.exp(1) + math.exp(2) + 1))
    ce1 = math.log(3)
    assert CrossEntropyLoss()(logits, target).item() == pytest.approx((ce0 + ce1) / 2, rel=1e-6)


def test_binary_dice_and_bce_known_value():
    logits = torch.zeros(1, 1, 1, 5)  # p = 0.5 everywhere
    target = torch.tensor([[[1, 0, 1, 1, -1]]])
    # I = 1.5, P = 2, T = 3 -> Dice = 3 / 5
    assert SoftDiceLoss(smooth=0)(logits, target).item() == pytest.approx(0.4, abs=1e-7)
    assert BCELoss()(logits, target).item() == pytest.approx(math.log(2), rel=1e-6)
    both = DiceCELoss(smooth=0, dice_weight=2.0, ce_weight=0.5)(logits, target).item()
    assert both == pytest.approx(0.8 + 0.5 * math.log(2), rel=1e-6)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("k", [1, 3])
def test_perfect_prediction_gives_zero_dice(dims, k):
    _, target = _inputs(k, dims)
    if k == 1:
        logits = (target.float() * 2 - 1).unsqueeze(1) * 50
    else:
        logits = F.one_hot(target, k).movedim(-1, 1).float() * 50
    for loss in (SoftDiceLoss(), SoftDiceLoss(include_background=True, batch_dice=False)):
        assert loss(logits, target).item() == pytest.approx(0.0, abs=1e-5)
    assert DiceCELoss()(logits, target).item() == pytest.approx(0.0, abs=1e-5)


# --- reference implementations --------------------------------------------------------


@pytest.mark.parametrize("dims", [2, 3])
def test_ce_matches_torch_with_ignore_index(dims):
    logits, target = _inputs(4, dims)
    target[0, 0] = -1
    target[1, ..., 1] = -1
    ref = F.cross_entropy(logits, target, ignore_index=-1)
    assert torch.allclose(CrossEntropyLoss()(logits, target), ref, atol=1e-6)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("include_background", [False, True])
@pytest.mark.parametrize("batch", [True, False])
def test_dice_matches_monai(dims, include_background, batch):
    import monai.losses as monai_losses  # a test dependency: fail, never skip
    logits, target = _inputs(3, dims, seed=dims)
    ref = monai_losses.DiceLoss(
        softmax=True, to_onehot_y=True, include_background=include_background, batch=batch
    )(logits, target.unsqueeze(1))
    ours = SoftDiceLoss(include_background=include_background, batch_dice=batch)(logits, target)
    assert abs(ours.item() - ref.item()) < 1e-5


@pytest.mark.parametrize("dims", [2, 3])
def test_binary_dice_matches_monai_sigmoid(dims):
    import monai.losses as monai_losses  # a test dependency: fail, never skip
    logits, target = _inputs(1, dims)
    ref = monai_losses.DiceLoss(sigmoid=True, batch=True)(logits, target.unsqueeze(1).float())
    assert abs(SoftDiceLoss()(logits, target).item() - ref.item()) < 1e-5


def test_multilabel_bce_matches_torch():
    logits, _ = _inputs(3, 2)
    soft = torch.rand(logits.shape, generator=torch.Generator().manual_seed(1))
    ref = F.binary_cross_entropy_with_logits(logits, soft)
    assert torch.allclose(BCELoss()(logits, soft), ref, atol=1e-6)


def test_dice_ce_is_weighted_sum():
    logits, target = _inputs(3, 3)
    target[0, 0] = -1
    expect = 0.3 * SoftDiceLoss()(logits, target) + 2.0 * CrossEntropyLoss()(logits, target)
    got = DiceCELoss(dice_weight=0.3, ce_weight=2.0)(logits, target)
    assert torch.allclose(got, expect, atol=1e-6)


# --- ignore / mask --------------------------------------------------------------------


def _grad(loss, logits, target, mask=None):
    x = logits.clone().requires_grad_(True)
    value = loss(x, target, mask)
    value.backward()
    return value.detach(), x.grad


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("how", ["index", "mask"])
def test_ignored_voxels_have_no_effect(dims, k, how):
    logits, target = _inputs(k, dims, seed=3)
    ignored = torch.zeros_like(target, dtype=torch.bool)
    ignored[0, 1:3] = True
    ignored[1, ..., 0] = True
    mask = None
    if how == "index":
        target = target.masked_fill(ignored, -1)
    else:
        mask = ~ignored
    changed = logits + 20 * torch.randn(logits.shape) * ignored.unsqueeze(1)
    for loss in _all_losses(k):
        v1, g1 = _grad(loss, logits, target, mask)
        v2, g2 = _grad(loss, changed, target, mask)
        assert torch.allclose(v1, v2, atol=1e-6), loss
        assert torch.allclose(g1, g2, atol=1e-7), loss
        assert torch.all(g1.movedim(1, -1)[ignored] == 0), loss
        assert g1.abs().sum() > 0, loss


def test_mask_combines_with_ignore_index():
    logits, target = _inputs(3, 2)
    target[0, 0] = -1
    mask = torch.ones_like(target, dtype=torch.bool)
    mask[1, 1] = False
    both = target.masked_fill(~mask, -1)
    for loss in _all_losses(3):
        assert torch.allclose(loss(logits, target, mask), loss(logits, both), atol=1e-7)


@pytest.mark.parametrize("k", [1, 3])
def test_whole_batch_ignored_gives_zero_no_nan(k):
    logits, target = _inputs(k, 3)
    for loss in _all_losses(k):
        v, g = _grad(loss, logits, torch.full_like(target, -1))
        assert v.item() == 0.0 and torch.all(g == 0), loss
        v, g = _grad(loss, logits, target, torch.zeros(target.shape))
        assert v.item() == 0.0 and torch.all(g == 0), loss


@pytest.mark.parametrize("k", [1, 3])
def test_smooth_zero_whole_batch_ignored_gives_zero(k):
    """At smooth=0 Dice is 0/0 where nothing counts: scored 1 (loss 0), as with smoothing."""
    logits, target = _inputs(k, 3)
    for loss in (SoftDiceLoss(smooth=0.0), SoftDiceLoss(smooth=0.0, batch_dice=False),
                 DiceCELoss(smooth=0.0)):
        v, g = _grad(loss, logits, torch.full_like(target, -1))
        assert v.item() == 0.0 and torch.all(g == 0), loss


# --- gradients --------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3])
def test_dice_gradcheck_float64(k):
    logits, target = _inputs(k, 2, n=1, dtype=torch.float64)
    logits = logits[..., :3, :3].clone().requires_grad_(True)
    target = target[..., :3, :3].clone()
    target[0, 0, 0] = -1
    for loss in (SoftDiceLoss(), SoftDiceLoss(include_background=True, batch_dice=False)):
        assert torch.autograd.gradcheck(lambda x, loss=loss: loss(x, target), (logits,))


@pytest.mark.parametrize("k", [1, 3])
def test_gradient_step_reduces_loss(k):
    logits, target = _inputs(k, 3, seed=5)
    for loss in _all_losses(k):
        v, g = _grad(loss, logits, target)
        assert loss(logits - 0.5 * g / g.norm(), target) < v, loss


def test_absent_class_is_finite_and_bounded():
    # class 2 in neither target nor (practically) prediction
    logits, target = _inputs(3, 3)
    target = target.clamp_max(1)
    logits[:, 2] = -30.0
    v, g = _grad(SoftDiceLoss(), logits, target)
    assert torch.isfinite(v) and torch.isfinite(g).all()
    # a barely predicted absent class: gradient stays bounded (<= 1/2 in total)
    logits[:, 2] = -14.0
    v, g = _grad(SoftDiceLoss(), logits, target)
    assert torch.isfinite(g).all() and g.abs().sum() < 1.0


# --- soft targets -------------------------------------------------------------------------


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("k", [1, 3])
def test_one_hot_soft_target_equals_hard(dims, k):
    logits, target = _inputs(k, dims, seed=7)
    soft = target.float().unsqueeze(1) if k == 1 else F.one_hot(target, k).movedim(-1, 1).float()
    mask = torch.rand(target.shape, generator=torch.Generator().manual_seed(2)) > 0.3
    for loss in _all_losses(k):
        for m in (None, mask):
            v_hard, g_hard = _grad(loss, logits, target, m)
            v_soft, g_soft = _grad(loss, logits, soft, m)
            assert torch.allclose(v_hard, v_soft, atol=1e-6), loss
            assert torch.allclose(g_hard, g_soft, atol=1e-7), loss


def test_channel_axis_index_target_and_half_precision():
    logits, target = _inputs(3, 2)
    loss = DiceCELoss()
    ref = loss(logits, target)
    assert torch.allclose(loss(logits, target.unsqueeze(1)), ref)
    half = loss(logits.bfloat16(), target)
    assert half.dtype == torch.float32 and abs(half.item() - ref.item()) < 2e-2


# --- errors and the factory table ---------------------------------------------------------


def test_bad_inputs_raise_helpful_errors():
    logits, target = _inputs(3, 2)
    with pytest.raises(ValueError, match=r"\[-1, 2\]"):
        SoftDiceLoss()(logits, target + 1)
    with pytest.raises(ValueError, match=r"\[-1, 2\]"):
        CrossEntropyLoss()(logits, target - 2)
    with pytest.raises(TypeError, match="integer"):
        CrossEntropyLoss()(logits, target.float())
    with pytest.raises(ValueError, match="shape"):
        SoftDiceLoss()(logits, target[:, :-1])
    with pytest.raises(ValueError, match="mask"):
        SoftDiceLoss()(logits, target, torch.ones(2, 1))
    with pytest.raises(ValueError, match="BCELoss"):
        CrossEntropyLoss()(logits[:, :1], target.clamp_max(1))
    with pytest.raises(ValueError, match="CrossEntropyLoss"):
        BCELoss()(logits, target)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        BCELoss()(logits[:, :1], target)
    with pytest.raises(ValueError, match="smooth"):
        SoftDiceLoss(smooth=-1.0)


def test_make_loss_table():
    assert set(LOSSES) >= {"dice_ce", "dice", "ce", "bce"}
    assert isinstance(make_loss("dice_ce", num_classes=3), DiceCELoss)
    assert isinstance(make_loss("dice", num_classes=1), SoftDiceLoss)
    assert isinstance(make_loss("ce", num_classes=2), CrossEntropyLoss)
    assert isinstance(make_loss("bce", num_classes=1), BCELoss)
    loss = make_loss("dice", num_classes=3, include_background=True)
    assert loss.include_background
    with pytest.raises(ValueError, match="dice, dice_ce"):
        make_loss("focal", num_classes=2)
    with pytest.raises(ValueError, match="'ce' or 'dice_ce'"):
        make_loss("bce", num_classes=3)
    with pytest.raises(ValueError, match="'bce'"):
        make_loss("ce", num_classes=1)
    with pytest.raises(ValueError, match="num_classes"):
        make_loss("dice", num_classes=0)


def test_binary_dice_ce_uses_bce():
    logits, target = _inputs(1, 3)
    expect = SoftDiceLoss()(logits, target) + BCELoss()(logits, target)
    assert torch.allclose(make_loss("dice_ce", num_classes=1)(logits, target), expect)


def test_soft_dice_min_overlap_is_minimal_at_fractional_targets():
    # Rater vote fractions: with the default min(p, t) overlap, p == t is the optimum (loss 0);
    # the product overlap is lower when p is pushed from t towards 0/1.
    t = torch.tensor([0.0, 0.2, 0.5, 0.7, 1.0, 1.0]).view(1, 1, 1, 6)
    frac = (t > 0) & (t < 1)

    def loss_at(p, **kw):
        logits = torch.logit(p.clamp(1e-6, 1 - 1e-6))
        return SoftDiceLoss(smooth=0.0, **kw)(logits, t).item()

    assert loss_at(t) == pytest.approx(0.0, abs=1e-5)
    for d in (-0.1, 0.1):
        assert loss_at(torch.where(frac, t + d, t)) > 0.01
    sharpened = torch.where(frac, (t > 0.45).float(), t)  # 0.2 -> 0, 0.5 and 0.7 -> 1
    assert loss_at(sharpened, soft_overlap="product") < loss_at(t, soft_overlap="product") - 0.03
    ce = DiceCELoss(smooth=0.0)
    assert ce.soft_overlap == "min" and "soft_overlap='min'" in repr(ce)
    with pytest.raises(ValueError, match="soft_overlap"):
        SoftDiceLoss(soft_overlap="max")


def test_foreground_term_known_value_and_ignore():
    # one voxel labelled 1 with p = (0.4, 0.35, 0.25): the union of the foreground classes
    # holds 0.6, so its Dice is 2 * 0.6 / (0.6 + 1); a second, ignored voxel changes nothing
    p = torch.tensor([[0.4, 0.35, 0.25], [0.9, 0.05, 0.05]])
    logits = p.log().T.reshape(1, 3, 2, 1)
    target = torch.tensor([1, -1]).reshape(1, 2, 1)
    plain = DiceCELoss()(logits, target)
    with_fg = DiceCELoss(foreground_weight=2.0)(logits, target)
    expected_fg = 1 - 2 * 0.6 / (0.6 + 1)
    assert float(with_fg - plain) == pytest.approx(2.0 * expected_fg, abs=1e-5)
    # the registered name is Dice + CE + one foreground term
    named = make_loss("dice_ce_fg", num_classes=3)(logits, target)
    assert float(named - plain) == pytest.approx(expected_fg, abs=1e-5)
    # soft targets: the foreground target is 1 - t_background
    soft = torch.tensor([[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]]).T.reshape(1, 3, 2, 1)
    mask = torch.tensor([1.0, 0.0]).reshape(1, 2, 1)
    d_soft = DiceCELoss(foreground_weight=1.0)(logits, soft, mask) - DiceCELoss()(logits, soft,
                                                                                   mask)
    assert float(d_soft) == pytest.approx(expected_fg, abs=1e-5)


def test_foreground_term_needs_softmax_channels():
    with pytest.raises(ValueError, match="num_classes >= 2"):
        make_loss("dice_ce_fg", num_classes=1)
    with pytest.raises(ValueError, match="foreground_weight"):
        DiceCELoss(foreground_weight=-1.0)
