"""Restoration losses: values on hand-made inputs, gradients, specs."""

import math

import numpy as np
import pytest
import torch

from napari_medseg.core.losses import (
    AdversarialLoss,
    L1Loss,
    MSELoss,
    PerceptualLoss,
    SSIMLoss,
    make_restoration_loss,
    parse_loss_spec,
    ssim_torch,
)
from napari_medseg.core.metrics import ssim as ssim_metric

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pair(shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    y = torch.rand(shape, generator=g, dtype=dtype)
    return y + 0.1 * torch.randn(shape, generator=g, dtype=dtype), y


def test_l1_mse_by_hand_and_masked():
    y = torch.zeros(1, 1, 2, 2)
    x = torch.tensor([[[[1.0, -2.0], [0.0, 0.0]]]])
    assert float(L1Loss()(x, y)) == pytest.approx(0.75)
    assert float(MSELoss()(x, y)) == pytest.approx(1.25)
    m = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])  # (N, *spatial)
    assert float(L1Loss()(x, y, m)) == pytest.approx(0.5)
    assert float(MSELoss()(x, y, m.unsqueeze(1))) == pytest.approx(0.5)
    # No weight anywhere: 0, not NaN, and a zero gradient.
    xr = x.clone().requires_grad_()
    v = L1Loss()(xr, y, torch.zeros(1, 2, 2))
    v.backward()
    assert float(v) == 0 and float(xr.grad.abs().sum()) == 0


def test_pixel_gradients_are_the_textbook_ones():
    x, y = _pair((2, 1, 5, 4))
    x.requires_grad_()
    MSELoss()(x, y).backward()
    torch.testing.assert_close(x.grad, 2 * (x - y).detach() / x.numel())
    x.grad = None
    L1Loss()(x, y).backward()
    torch.testing.assert_close(x.grad, torch.sign(x - y).detach() / x.numel())


@pytest.mark.parametrize("shape", [(2, 1, 24, 20), (1, 2, 14, 13, 12)])
@pytest.mark.parametrize("gaussian", [True, False])
def test_ssim_loss_equals_one_minus_metric(shape, gaussian):
    x, y = _pair(shape, dtype=torch.float64)
    loss = SSIMLoss(gaussian_weights=gaussian, data_range=1.0)(x, y)
    ref = np.mean([ssim_metric(x[i, c].numpy(), y[i, c].numpy(), data_range=1.0,
                               gaussian_weights=gaussian)
                   for i in range(shape[0]) for c in range(shape[1])])
    assert float(loss) == pytest.approx(1 - ref, abs=1e-6)
    assert float(SSIMLoss(gaussian_weights=gaussian)(y, y)) == pytest.approx(0.0, abs=1e-6)


def test_ssim_gradient_matches_finite_differences_and_descends():
    x, y = _pair((1, 1, 13, 12), seed=1, dtype=torch.float64)
    x.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a: ssim_torch(a, y, data_range=1.0, gaussian_weights=False), (x,), eps=1e-6,
        atol=1e-5)
    xf, yf = _pair((2, 1, 32, 32), seed=2)
    xf.requires_grad_()
    lossf = SSIMLoss()
    before = lossf(xf, yf)
    before.backward()
    with torch.no_grad():
        step = xf - 0.5 * xf.grad / xf.grad.abs().max()
    assert float(lossf(step, yf)) < float(before)


def test_ssim_loss_refuses_masks_and_small_patches():
    x, y = _pair((1, 1, 8, 8))
    with pytest.raises(ValueError, match="window 11 does not fit"):
        SSIMLoss()(x, y)
    with pytest.raises(ValueError, match="cannot use a pixel mask"):
        SSIMLoss(gaussian_weights=False, win_size=7)(x, y, torch.ones(1, 8, 8))


def test_perceptual_loss_random_encoder_is_frozen():
    x, y = _pair((2, 1, 32, 32))
    loss = PerceptualLoss(spatial_dims=2)
    assert "random frozen" in loss.source
    assert float(loss(y, y)) == 0.0
    x.requires_grad_()
    v = loss(x, y)
    v.backward()
    assert float(v) > 0 and float(x.grad.abs().sum()) > 0
    assert all(p.grad is None and not p.requires_grad for p in loss.parameters())
    # The same seed gives the same network (reproducible values).
    assert float(PerceptualLoss(spatial_dims=2)(x, y)) == pytest.approx(float(v))


def test_perceptual_loss_from_a_segmentation_checkpoint(tmp_path):
    from napari_medseg.core.checkpoint import Checkpoint, save_checkpoint
    from napari_medseg.core.config import ModelConfig, TrainConfig
    from napari_medseg.core.data import LabelMapping
    from napari_medseg.core.models import build_model

    mc = ModelConfig(spatial_dims=2, in_channels=2, out_channels=3, base_width=4, depth=3)
    model = build_model(mc)
    ck = Checkpoint(mc, TrainConfig(patch_size=(32, 32)), LabelMapping((0, 1, 2)), (), None,
                    model.state_dict())
    path = save_checkpoint(tmp_path / "seg.pt", ck)
    loss = PerceptualLoss(spatial_dims=2, checkpoint=path, levels=2)
    assert "seg.pt" in loss.source
    x, y = _pair((1, 1, 24, 24))  # one channel, repeated to the encoder's two
    assert float(loss(x, y)) > 0
    with pytest.raises(ValueError, match="2D model cannot give features of 3D"):
        PerceptualLoss(spatial_dims=3, checkpoint=path)


def test_adversarial_loss_trains_its_discriminator():
    torch.manual_seed(0)
    adv = AdversarialLoss(spatial_dims=2)
    x, y = _pair((4, 1, 16, 16))
    x.requires_grad_()
    g = adv(x, y)
    g.backward()
    assert float(g) > 0 and float(x.grad.abs().sum()) > 0
    d0 = [p.detach().clone() for p in adv.discriminator.parameters()]
    first = adv.discriminator_step(x, y)
    for _ in range(8):
        last = adv.discriminator_step(x, y)
    assert last < first  # it learns to tell the noisy patches from the clean ones
    assert any(not torch.equal(a, b) for a, b in zip(d0, adv.discriminator.parameters()))


def test_specs_and_composite():
    assert parse_loss_spec("l1+ssim") == [(1.0, "l1"), (1.0, "ssim")]
    assert parse_loss_spec("0.8*l1 + 0.2*SSIM") == [(0.8, "l1"), (0.2, "ssim")]
    assert parse_loss_spec("mae+1e-2*gan") == [(1.0, "l1"), (0.01, "adv")]
    for bad, msg in (("", "spec is like"), ("l1+", "Cannot read"), ("huber", "valid names"),
                     ("l1+0.5*l1", "twice"), ("0*l1", "no positive weight"),
                     ("2**l1", "Cannot read")):
        with pytest.raises(ValueError, match=msg):
            parse_loss_spec(bad)
    x, y = _pair((2, 1, 24, 24))
    comp = make_restoration_loss("0.8*l1+0.2*ssim", spatial_dims=2)
    assert comp.spec == "0.8*l1+0.2*ssim" and not comp.pixelwise and not comp.adversarial
    v = comp(x, y)
    expected = 0.8 * float(L1Loss()(x, y)) + 0.2 * float(SSIMLoss()(x, y))
    assert float(v) == pytest.approx(expected, rel=1e-5)
    assert set(comp.last_terms) == {"l1", "ssim"}
    assert make_restoration_loss("mse", spatial_dims=3).pixelwise
    with_adv = make_restoration_loss("l1+0.01*adv", spatial_dims=2)
    assert with_adv.adversarial and "discriminator" in with_adv.after_step(x, y)
    assert math.isfinite(float(with_adv(x, y)))
