"""Restoration training and restoring: data, blind spots, the event generator, real MRI."""

import numpy as np
import pytest
import torch

from napari_medseg.core.checkpoint import load_checkpoint
from napari_medseg.core.degrade import degrade
from napari_medseg.core.engine import run
from napari_medseg.core.events import EpochDone, Message, StepDone
from napari_medseg.core.metrics import psnr
from napari_medseg.core.models import build_model
from napari_medseg.core.restoration import (
    RestoreConfig,
    RestorePatchSampler,
    RestoreValidated,
    blind_spot,
    fit_restoration,
    fit_restore_norm,
    prepare_restore_case,
    restoration_model_config,
    restore,
    restore_array,
)
from tests.conftest import shared_data

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = dict(patch_size=(32, 32), batch_size=2, epochs=2, steps_per_epoch=3, lr=3e-3,
            val_slices=2, device="cpu")


@pytest.fixture(scope="module")
def clean():
    from napari_medseg.core.sample import brain_phantom

    return (np.clip(brain_phantom(shape=(48, 48, 12), seed=0).t1, 0, None) * 1000).astype(
        np.float32)


def test_config_validation():
    RestoreConfig(mode="synthetic", degrade="rician:0.05")
    with pytest.raises(ValueError, match="needs a degradation"):
        RestoreConfig(mode="synthetic")
    with pytest.raises(ValueError, match="pixel-wise"):
        RestoreConfig(mode="noise2void", loss="l1+ssim")
    with pytest.raises(ValueError, match="not one of"):
        RestoreConfig(mode="denoise", degrade="rician:0.1")
    with pytest.raises(ValueError, match="Unknown restoration loss"):
        RestoreConfig(degrade="rician:0.1", loss="huber")
    rc = RestoreConfig(mode="pairs", loss="0.8*l1+0.2*ssim", patch_size=(16, 16, 8), epochs=None,
                       minutes=1.5)
    assert RestoreConfig.from_dict(rc.to_dict() | {"future_key": 1}) == rc
    mc = restoration_model_config(spatial_dims=3, mode="noise2void")
    assert not mc.residual and mc.out_channels == mc.in_channels


def test_blind_spot_masks_a_fraction_with_neighbours():
    rng = np.random.default_rng(0)
    x = np.arange(64 * 64, dtype=np.float32).reshape(1, 64, 64)  # every value distinct
    masked, mask = blind_spot(x, fraction=0.02, radius=2, rng=rng)
    n = int(mask.sum())
    assert 0.01 * 64 * 64 < n < 0.04 * 64 * 64
    changed = masked != x
    assert np.array_equal(changed[0], mask > 0)  # exactly the masked pixels changed
    for i, j in zip(*np.nonzero(mask)):
        v = int(masked[0, i, j])
        si, sj = divmod(v, 64)
        assert (si, sj) != (i, j) and max(abs(si - i), abs(sj - j)) <= 2
    m3, k3 = blind_spot(np.random.default_rng(1).random((2, 8, 8, 8)).astype(np.float32),
                        fraction=0.05, radius=1, rng=rng)
    assert k3.shape == (8, 8, 8) and k3.sum() > 0 and m3.shape == (2, 8, 8, 8)


def test_sampler_modes(clean):
    noisy = degrade(clean, "rician:0.1", seed=0)
    syn = prepare_restore_case(clean, mode="synthetic", degrade="rician:0.1")
    assert syn.reference is clean or np.array_equal(syn.reference[0], clean)
    s = RestorePatchSampler([syn], mode="synthetic", patch_size=(32, 32),
                            degrade="rician:0.1", augment=False)
    x, y, m = s.sample(4)
    assert x.shape == y.shape == (4, 1, 32, 32) and m is None
    # Inputs and targets share one normalisation: the difference is the noise.
    std = syn.norms[0].std
    resid = (x - y).numpy() * std
    assert 0.03 * syn.scale < resid.std() < 0.2 * syn.scale
    pairs = prepare_restore_case(noisy, mode="pairs", target=clean)
    x, y, _ = RestorePatchSampler([pairs], mode="pairs", patch_size=(16, 16, 8)).sample(2)
    assert x.shape == (2, 1, 16, 16, 8)
    n2v = prepare_restore_case(noisy, mode="noise2void")
    x, y, m = RestorePatchSampler([n2v], mode="noise2void", patch_size=(32, 32)).sample(3)
    assert m is not None and m.shape == (3, 32, 32)
    keep = (m == 0).unsqueeze(1)
    assert torch.equal(x[keep], y[keep]) and not torch.equal(x, y)
    # Whole-image degradations are drawn per refresh, local ones per patch.
    glob = RestorePatchSampler([syn], mode="synthetic", patch_size=(32, 32),
                               degrade="kspace:2+rician:0.05")
    glob.refresh()
    assert glob._global[0] is not None and glob.sample(2)[0].shape == (2, 1, 32, 32)
    with pytest.raises(ValueError, match="clean target"):
        prepare_restore_case(noisy, mode="pairs")
    with pytest.raises(ValueError, match="differ"):
        prepare_restore_case(noisy, mode="pairs", target=clean[:, :, :5])


@pytest.mark.parametrize("dims", [2, 3])
def test_identity_network_restores_input_in_its_units(clean, dims):
    mc = restoration_model_config(spatial_dims=dims, base_width=4, depth=2)
    model = build_model(mc)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
    img = degrade(clean, "rician:0.1", seed=1)[None] + 50.0
    out = run(restore_array(model, img, spatial_dims=dims, train_patch=(32,) * dims,
                            divisor=mc.divisor))
    np.testing.assert_allclose(out, img, rtol=1e-4, atol=1e-2)
    norms = fit_restore_norm(img)
    assert not np.isfinite(norms[0].lo) and norms[0].std > 0  # no clipping


def test_fit_yields_events_and_saves_the_best(tmp_path, clean):
    case = prepare_restore_case(clean, mode="synthetic", degrade="rician:0.08")
    rc = RestoreConfig(mode="synthetic", degrade="rician:0.08", loss="l1+ssim", **TINY)
    mc = restoration_model_config(base_width=4, depth=2)
    path = tmp_path / "r.pt"
    events = []
    res = run(fit_restoration([case], model_config=mc, config=rc, checkpoint_path=str(path)),
              events.append)
    kinds = [type(e) for e in events]
    assert kinds[0] is Message and kinds.count(StepDone) == 6 and kinds.count(EpochDone) == 2
    vals = [e for e in events if isinstance(e, RestoreValidated)]
    assert len(vals) == 2 and all(v.psnr is not None and v.ssim is not None for v in vals)
    assert res.steps == 6 and not res.stopped and res.best_psnr == max(v.psnr for v in vals)
    ck = load_checkpoint(path)
    assert ck.task == "restore" and ck.extra["restore"]["loss"] == "l1+ssim"
    assert ck.model_config.residual and len(ck.history) >= 1
    out = run(restore(ck, degrade(clean, "rician:0.08", seed=5)))
    assert out.shape == clean.shape and out.dtype == np.float32
    with pytest.raises(ValueError, match="not a restoration model"):
        ck.task = "segment"
        run(restore(ck, clean))


def test_stop_flag_and_self_supervised(tmp_path, clean):
    noisy = degrade(clean, "rician:0.08", seed=2)
    case = prepare_restore_case(noisy, mode="noise2void")  # no clean reference
    rc = RestoreConfig(mode="noise2void", loss="mse", **TINY)
    mc = restoration_model_config(base_width=4, depth=2, mode="noise2void")
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 2

    events = []
    res = run(fit_restoration([case], model_config=mc, config=rc, should_stop=stop,
                              checkpoint_path=str(tmp_path / "n.pt")), events.append)
    assert res.stopped and res.steps == 2 and (tmp_path / "n.pt").exists()
    vals = [e for e in events if isinstance(e, RestoreValidated)]
    assert vals and vals[0].psnr is None and vals[0].loss is not None  # blind-spot loss


def test_short_training_improves_psnr_on_real_mri():
    """Train on brain1 (synthetic Rician 5 %), test on unseen brain2: PSNR must rise >= 1 dB."""
    from napari_medseg.core import io

    root = shared_data("tcia_mri")
    c1 = io.read_volume(root / "brain1_image.nii.gz").data.astype(np.float32)[:, :, 8:16]
    c2 = io.read_volume(root / "brain2_image.nii.gz").data.astype(np.float32)[:, :, 10:12]
    case = prepare_restore_case(c1, mode="synthetic", degrade="rician:0.05")
    rc = RestoreConfig(mode="synthetic", degrade="rician:0.05", loss="l1", patch_size=(48, 48),
                       batch_size=4, epochs=1, steps_per_epoch=20, lr=3e-3, val_slices=1,
                       device="cpu", seed=0)
    mc = restoration_model_config(base_width=8, depth=3)
    res = run(fit_restoration([case], model_config=mc, config=rc))
    noisy = degrade(c2, "rician:0.05", seed=3)
    out = run(restore(res.checkpoint, noisy, model=res.model))
    dr = float(c2.max() - c2.min())
    before, after = psnr(noisy, c2, data_range=dr), psnr(out, c2, data_range=dr)
    print(f"brain2 slices 10-11: noisy {before:.2f} dB -> restored {after:.2f} dB")
    assert after > before + 1.0, (before, after)


def test_3d_pairs_training_and_restore(clean):
    noisy = degrade(clean, "rician:0.08", seed=4)
    case = prepare_restore_case(noisy, mode="pairs", target=clean, spacing=(1, 1, 2))
    rc = RestoreConfig(mode="pairs", loss="0.5*l1+0.5*ssim",
                       **(TINY | dict(patch_size=(16, 16, 12), epochs=1, steps_per_epoch=2)))
    mc = restoration_model_config(spatial_dims=3, base_width=4, depth=2)
    events = []
    res = run(fit_restoration([case], model_config=mc, config=rc), events.append)
    val = [e for e in events if isinstance(e, RestoreValidated)][0]
    assert val.psnr is not None and val.psnr_input is not None
    out = run(restore(res.checkpoint, noisy, model=res.model))
    assert out.shape == clean.shape
    with pytest.raises(ValueError, match="3D model"):
        run(restore(res.checkpoint, noisy[:, :, 0]))


def test_minutes_budget_follows_the_given_clock(clean):
    """A GUI passes a clock that stands still while paused: the budget counts that clock."""
    case = prepare_restore_case(clean, mode="synthetic", degrade="rician:0.08")
    rc = RestoreConfig(mode="synthetic", degrade="rician:0.08",
                       **(TINY | {"epochs": None, "minutes": 1.0, "steps_per_epoch": 50}))
    mc = restoration_model_config(base_width=4, depth=2)
    now = [0.0]

    def clock():  # 25 "seconds" per reading: the one-minute budget ends after a few steps
        now[0] += 25.0
        return now[0]

    events = []
    res = run(fit_restoration([case], model_config=mc, config=rc, clock=clock), events.append)
    steps = [e for e in events if isinstance(e, StepDone)]
    # the clock is read a fixed number of times per step: the minute runs out after step 2
    assert res.steps == len(steps) == 2 and not res.stopped
    assert steps[-1].elapsed_s >= 60.0 and steps[0].elapsed_s < 60.0
