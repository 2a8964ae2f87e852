"""Training from several raters: config, cases, sampling, augmentation, what the model learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_medseg.core.config import TrainConfig
from napari_medseg.core.data import UNLABELLED, Case, LabelMapping, rater_majority
from napari_medseg.core.sampling import PatchSampler, augment_batch, rater_soft_targets
from tests.conftest import shared_data


@pytest.fixture
def one_thread():
    """Tiny models train several times faster on one thread on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- config ------------------------------------------------------------------------------


def test_config_validates_and_round_trips_the_rater_mode():
    assert TrainConfig().raters == "soft"
    for mode in ("soft", "sample", "majority"):
        tc = TrainConfig(patch_size=(16, 16), raters=mode)
        assert TrainConfig.from_dict(tc.to_dict()) == tc
    with pytest.raises(ValueError, match="raters='vote' is not one of soft, sample, majority"):
        TrainConfig(raters="vote")
    old = TrainConfig(patch_size=(16, 16)).to_dict()
    del old["raters"]  # a checkpoint written before the option existed
    assert TrainConfig.from_dict(old).raters == "soft"


# --- fusing and vote fractions, by hand --------------------------------------------------


def test_majority_counts_only_raters_that_labelled_and_ties_go_to_background():
    r = np.array([[1, 1, 0, -1, -1, 2],
                  [1, 0, 0, -1, 1, 2],
                  [0, -1, 1, -1, -1, 1],
                  [-1, -1, -1, -1, -1, 1]], np.int16)
    # col 0: 1,1,0 -> 1; col 1: 1,0 tie -> 0; col 2: 0,0,1 -> 0; col 3: nobody -> -1;
    # col 4: one rater says 1 -> 1 (abstentions are not background votes); col 5: 2,2,1,1 tie -> 1.
    assert rater_majority(r).tolist() == [1, 0, 0, -1, 1, 1]


def test_soft_targets_are_fractions_of_the_raters_that_labelled():
    stack = torch.tensor([[[1, 1, 0, -1, 2], [1, 0, 0, -1, -1], [0, -1, 2, -1, -1]]])  # B=1, R=3
    soft, mask = rater_soft_targets(stack, 3)
    exp = torch.tensor([[1 / 3, 1 / 2, 2 / 3, 0, 0], [2 / 3, 1 / 2, 0, 0, 0], [0, 0, 1 / 3, 0, 1]])
    assert torch.allclose(soft[0], exp)
    assert mask[0].tolist() == [1, 1, 1, 0, 1]
    fg, _ = rater_soft_targets(stack, 3, binary=True)
    assert torch.allclose(fg[0, 0], exp[1] + exp[2])
    with pytest.raises(ValueError, match="integer"):
        rater_soft_targets(stack.float(), 3)


def test_case_from_raters_checks_shapes():
    img = np.zeros((1, 6, 5), np.float32)
    case = Case.from_raters(img, [np.zeros((6, 5)), np.ones((6, 5)), np.ones((6, 5))], (1.0, 1.0))
    assert case.n_raters == 3 and case.raters.dtype == np.int16 and (case.target == 1).all()
    with pytest.raises(ValueError, match=r"must be \(R, \*\(6, 5\)\)"):
        Case(img, np.zeros((6, 5), np.int16), (1.0, 1.0), raters=np.zeros((2, 5, 6), np.int16))


# --- sampling and augmentation -----------------------------------------------------------


def _bit_case(shape, n_bits):
    """Rater j labels a voxel 1 where bit j of its flat index is set; the image holds the index."""
    flat = np.arange(int(np.prod(shape))).reshape(shape)
    raters = np.stack([(flat >> j) & 1 for j in range(n_bits)]).astype(np.int16)
    return Case.from_raters(flat[None].astype(np.float32), raters, (1.0,) * len(shape)), flat


def _decode(stack):
    return sum(stack[j].astype(np.int64) << j for j in range(stack.shape[0]))


@pytest.mark.parametrize("shape, patch, dims", [((40, 36), (16, 16), 2),
                                                ((20, 18, 9), (8, 8), 2),
                                                ((20, 18, 9), (8, 8, 4), 3)])
def test_soft_mode_cuts_every_rater_at_the_same_place(shape, patch, dims):
    n_bits = int(np.prod(shape) - 1).bit_length()
    case, _ = _bit_case(shape, n_bits)
    s = PatchSampler([case], patch, spatial_dims=dims, slice_axis=2, seed=3, raters="soft")
    x, y = s.sample(6)
    assert y.shape == (6, n_bits, *patch) and y.dtype == torch.int64
    for i in range(6):
        inside = (y[i] >= 0).all(0).numpy()
        # Every rater's bit, read together, spells the voxel index the image channel holds.
        where = x[i, 0].numpy()[inside].astype(np.int64)
        assert np.array_equal(_decode(y[i].numpy())[inside], where)


def test_sample_mode_takes_one_whole_rater_per_patch_at_the_same_locations():
    case, _ = _bit_case((40, 36), 11)
    xs, _ = PatchSampler([case], (16, 16), spatial_dims=2, seed=5, raters="soft").sample(20)
    sampler = PatchSampler([case], (16, 16), spatial_dims=2, seed=5, raters="sample")
    x, y = sampler.sample(20)
    assert torch.equal(x, xs)  # the rater mode does not change where patches are cut
    drawn = set()
    for i in range(20):
        idx = x[i, 0].numpy().astype(np.int64)
        hits = [j for j in range(11) if np.array_equal((idx >> j) & 1, y[i].numpy())]
        assert hits, "a patch's labels are no single rater's labels at that place"
        drawn.update(hits)
    assert len(drawn) > 3


def test_soft_mode_pads_cases_with_fewer_raters_as_abstaining():
    img = np.zeros((1, 12, 12), np.float32)
    three = Case.from_raters(img, [np.ones((12, 12))] * 3, (1.0, 1.0), "three")
    single = Case(img, np.zeros((12, 12), np.int16), (1.0, 1.0), "one")
    y = PatchSampler([three, single], (8, 8), spatial_dims=2, seed=0, raters="soft").sample(16)[1]
    for yi in y:
        if (yi[0] == 0).all():  # the single-label case
            assert (yi[1:] == UNLABELLED).all()
        else:
            assert (yi == 1).all()


def test_raters_are_augmented_together_exactly_as_one_label_volume_is():
    x = torch.randn(4, 1, 12, 10)
    y = torch.randint(-1, 3, (4, 5, 12, 10))
    xa, ya = augment_batch(x.clone(), y.clone(), gen=torch.Generator().manual_seed(7), p_rotate=1.0)
    assert ya.shape == y.shape and ya.dtype == y.dtype
    for r in range(5):
        xr, yr = augment_batch(x.clone(), y[:, r].clone(), gen=torch.Generator().manual_seed(7),
                               p_rotate=1.0)
        assert torch.equal(xr, xa) and torch.equal(yr, ya[:, r])
    assert not torch.equal(ya, y)  # something did move


# --- what training learns ----------------------------------------------------------------


def _disk_case(seed, size=64):
    """A radial ramp image; raters outline the disk at radii 8, 14 and 20."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    c = size / 2 - 0.5 + rng.uniform(-3, 3, 2)
    r = np.hypot(yy - c[0], xx - c[1])
    img = (np.clip(1 - r / 28, 0, 1) * 2 + rng.normal(0, 0.05, r.shape)).astype(np.float32)[None]
    raters = [(r < rad).astype(np.int16) for rad in (8, 14, 20)]
    return img, raters, r


def _train_band(mode):
    from napari_medseg.core.config import ModelConfig
    from napari_medseg.core.engine import fit, run
    from napari_medseg.core.inference import predict_volume

    cases = [Case.from_raters(img, raters, (1.0, 1.0), f"c{s}")
             for s in range(2) for img, raters, _ in [_disk_case(s)]]
    mc = ModelConfig(spatial_dims=2, in_channels=1, out_channels=2, base_width=8, depth=2)
    tc = TrainConfig(patch_size=(32, 32), batch_size=8, epochs=1, steps_per_epoch=150, lr=1e-2,
                     seed=0, raters=mode)
    res = run(fit(cases, model_config=mc, train_config=tc, mapping=LabelMapping((0, 1))))
    img, _, r = _disk_case(9)  # unseen
    pred = run(predict_volume(res.model, img, spatial_dims=2, patch_size=(32, 32)))
    p = np.asarray(pred.probabilities)[1]
    return res, p[(r > 9) & (r < 13)].mean(), p[(r > 15) & (r < 19)].mean()


def test_soft_targets_learn_the_vote_fraction_where_majority_learns_0_or_1(one_thread):
    """Inner band: 2 of 3 raters say foreground; outer band: 1 of 3."""
    res, inner, outer = _train_band("soft")
    assert abs(inner - 2 / 3) < 0.12 and abs(outer - 1 / 3) < 0.12, (inner, outer)
    assert res.checkpoint.train_config.raters == "soft"
    assert res.checkpoint.extra["raters"] == {"mode": "soft", "max_raters": 3, "n_raters": [3, 3]}
    _, m_inner, m_outer = _train_band("majority")
    assert m_inner > 0.85 and m_outer < 0.15, (m_inner, m_outer)


def test_one_label_volume_trains_identically_in_every_mode(one_thread):
    from napari_medseg.core.config import ModelConfig
    from napari_medseg.core.engine import fit, run

    img, raters, _ = _disk_case(0, size=32)
    case = Case(img, raters[1], (1.0, 1.0))
    mc = ModelConfig(spatial_dims=2, in_channels=1, out_channels=2, base_width=4, depth=2)
    states = []
    for mode in ("soft", "sample", "majority"):
        tc = TrainConfig(patch_size=(16, 16), batch_size=2, epochs=1, steps_per_epoch=3,
                         raters=mode)
        res = run(fit([case], model_config=mc, train_config=tc, mapping=LabelMapping((0, 1))))
        assert res.checkpoint.extra["raters"]["mode"] == "single"
        states.append(res.checkpoint.state_dict)
    for other in states[1:]:
        assert all(torch.equal(states[0][k], other[k]) for k in states[0])


def test_sample_mode_and_sparse_raters_train_with_bce(one_thread, tmp_path):
    from napari_medseg.core.checkpoint import load_checkpoint
    from napari_medseg.core.config import ModelConfig
    from napari_medseg.core.engine import fit, run

    img, raters, _ = _disk_case(0, size=32)
    raters[2] = raters[2].copy()
    raters[2][:, :16] = UNLABELLED  # this rater labelled half the image only
    case = Case.from_raters(img, raters, (1.0, 1.0))
    mc = ModelConfig(spatial_dims=2, in_channels=1, out_channels=1, base_width=4, depth=2)
    for mode in ("sample", "soft"):
        tc = TrainConfig(patch_size=(16, 16), batch_size=2, epochs=1, steps_per_epoch=3,
                         loss="bce", raters=mode)
        res = run(fit([case], model_config=mc, train_config=tc, mapping=LabelMapping((0, 1)),
                      checkpoint_path=str(tmp_path / f"{mode}.pt")))
        assert np.isfinite(res.history[0]["loss"])
        ck = load_checkpoint(tmp_path / f"{mode}.pt")
        assert ck.train_config.raters == mode and ck.extra["raters"]["n_raters"] == [3]


# --- the pipeline on real multi-rater data -----------------------------------------------


def test_bubil_cell_becomes_a_ten_rater_case():
    import imageio.v3 as iio

    from napari_medseg.core.prepare import prepare_rater_case
    from napari_medseg.core.raters import majority_vote, vote_fraction

    d = shared_data("bubil_cells") / "B22"
    img = np.asarray(iio.imread(d / "image.png"), np.float32)
    masks = [(np.asarray(iio.imread(p)) > 0).astype(np.uint8)
             for p in sorted((d / "raters").glob("*.png"))]
    assert len(masks) == 10
    tc = TrainConfig(patch_size=(64, 64), crop_foreground=False)
    case, _ = prepare_rater_case([img], masks, (1.0, 1.0), mapping=LabelMapping((0, 1)),
                                 config=tc, name="B22")
    assert case.raters.shape == (10, *img.shape) and case.image.shape == (1, *img.shape)
    # The case's fused target is the raters module's plurality vote (ties -> background).
    assert np.array_equal(case.target, majority_vote(masks, tie="low"))
    soft, mask = rater_soft_targets(torch.from_numpy(case.raters[None].astype(np.int64)), 2)
    assert np.allclose(soft[0, 1].numpy(), vote_fraction(masks)) and bool(mask.all())
    bad = masks[:3] + [masks[3][:-1]]
    with pytest.raises(ValueError, match=r"rater 4\).*differ in shape"):
        prepare_rater_case([img], bad, (1.0, 1.0), mapping=LabelMapping((0, 1)), config=tc,
                           name="B22")
