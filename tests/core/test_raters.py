"""Raters: agreement, majority vote, STAPLE (against SimpleITK and by hand), soft Dice."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from napari_medseg.core import raters as R
from napari_medseg.core.metrics import dice_per_class
from tests.conftest import shared_data

BUBIL_RATERS = [f"expert{k}_{tool}.png" for k in range(1, 6) for tool in ("amira", "imagej")]


def _bubil(case: str, *, gold: bool = False) -> list[np.ndarray]:
    import imageio.v3 as iio

    root = shared_data("bubil_cells") / case
    masks = [np.asarray(iio.imread(root / "raters" / f)) for f in BUBIL_RATERS]
    if gold:
        masks.append(np.asarray(iio.imread(root / "gold_standard.png")))
    return masks


def _sitk_staple(masks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    import SimpleITK as sitk  # a test dependency: a missing reference must fail, not skip
    f = sitk.STAPLEImageFilter()
    f.SetForegroundValue(1.0)  # voxels == 1 are foreground, anything else background
    f.SetConfidenceWeight(1.0)  # default; scales the fixed foreground prior
    # MaximumIterations left at its default (unlimited): ITK stops at squared change <= 1e-14.
    prob = sitk.GetArrayFromImage(f.Execute([sitk.GetImageFromArray(m) for m in masks]))
    return (prob, np.array(f.GetSensitivity()), np.array(f.GetSpecificity()),
            int(f.GetElapsedIterations()))


def _itk_reference(masks: list[np.ndarray], *, iters: int) -> tuple[np.ndarray, ...]:
    """ITK's binary STAPLE written per voxel (no pattern grouping), fixed number of rounds."""
    d = np.stack([m.reshape(-1) == 1 for m in masks]).astype(np.float64)  # (N, V)
    w = d.mean(axis=0)
    g = w.mean()
    for _ in range(iters):
        p = (d * w).sum(axis=1) / w.sum()
        q = ((1 - d) * (1 - w)).sum(axis=1) / (1 - w).sum()
        a = g * np.prod(np.where(d == 1, p[:, None], 1 - p[:, None]), axis=0)
        b = (1 - g) * np.prod(np.where(d == 1, 1 - q[:, None], q[:, None]), axis=0)
        w = a / (a + b)
    return w.reshape(masks[0].shape), p, q


def _noisy_disks(n: int = 5, shape=(64, 64), seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    out = []
    for j in range(n):
        r = 14 + 2 * (j % 3)
        m = (yy - 32) ** 2 + (xx - 30 - j) ** 2 < r**2
        m ^= rng.random(shape) < 0.02
        out.append(m.astype(np.uint8))
    return out


# --------------------------------------------------------------------------- STAPLE vs SimpleITK


@pytest.mark.parametrize("case, gold", [("B01", False), ("B07", True)])
def test_staple_matches_simpleitk_on_bubil(case, gold):
    masks = _bubil(case, gold=gold)  # gold=True adds a third copy of expert 2
    prob_ref, sens_ref, spec_ref, iters_ref = _sitk_staple(masks)
    res = R.staple(masks)
    assert res.binary and res.labels == (0, 1)
    np.testing.assert_allclose(res.sensitivity, sens_ref, atol=1e-6)  # issue: 0.01
    np.testing.assert_allclose(res.specificity, spec_ref, atol=1e-6)
    assert np.abs(res.probability - prob_ref).max() < 1e-5
    d = dice_per_class(res.consensus, (prob_ref > 0.5).astype(np.uint8), labels=[1])[1]
    assert d is not None and d >= 0.99
    assert res.iterations == iters_ref + 1  # ITK counts rounds from 0
    assert res.converged and np.isfinite(res.probability).all()
    # expert2_amira and expert2_imagej (and the gold standard) are one mask: reported, kept
    groups = R.identical_raters(masks)
    assert groups == ([[2, 3, 10]] if gold else [[2, 3]])
    assert res.sensitivity[2] == res.sensitivity[3]
    assert any("identical" in n for n in res.notes)


def test_staple_matches_simpleitk_with_an_empty_rater():
    masks = [m[250:450, 300:500] for m in _bubil("B01")[:4]]
    masks.append(np.zeros_like(masks[0]))
    prob_ref, sens_ref, spec_ref, _ = _sitk_staple(masks)
    res = R.staple(masks)
    np.testing.assert_allclose(res.sensitivity, sens_ref, atol=1e-6)
    np.testing.assert_allclose(res.specificity, spec_ref, atol=1e-6)
    assert res.sensitivity[-1] == 0.0
    assert np.abs(res.probability - prob_ref).max() < 1e-5
    assert any("rater 4 marks no foreground" in n for n in res.notes)


def test_pattern_em_equals_per_voxel_em():
    masks = _noisy_disks()
    res = R.staple(masks, max_iter=7, tol=0.0, probability_dtype=np.float64)
    w, p, q = _itk_reference(masks, iters=7)
    assert res.iterations == 7 and not res.converged
    np.testing.assert_allclose(res.probability, w, atol=1e-12)
    np.testing.assert_allclose(res.sensitivity, p, atol=1e-12)
    np.testing.assert_allclose(res.specificity, q, atol=1e-12)
    assert any("max_iter" in n for n in res.notes)


def test_binary_staple_equals_multilabel_with_two_labels():
    masks = _noisy_disks(seed=3)
    b = R.staple(masks)
    m = R.staple(masks, multilabel=True)
    assert m.probability.shape == (2, 64, 64)
    np.testing.assert_allclose(m.sensitivity[:, 1], b.sensitivity, atol=1e-12)
    np.testing.assert_allclose(m.specificity[:, 1], b.specificity, atol=1e-12)
    np.testing.assert_allclose(m.sensitivity[:, 0], b.specificity, atol=1e-12)
    np.testing.assert_allclose(m.probability[1], b.probability, atol=1e-6)
    np.testing.assert_array_equal(m.consensus, b.consensus)


def test_confidence_weight_scales_the_prior():
    masks = _noisy_disks(seed=1)
    lo = R.staple(masks, confidence_weight=0.5)
    assert lo.prior[1] == pytest.approx(R.staple(masks).prior[1] * 0.5)
    assert lo.probability.sum() < R.staple(masks).probability.sum()


# --------------------------------------------------------------------------- multi-label


def test_multilabel_staple_known_answer():
    truth = np.zeros((60, 60), np.uint8)
    truth[10:30, 10:50] = 1
    truth[35:55, 5:40] = 2
    truth[40:50, 45:58] = 3
    raters = []
    for j in range(5):
        r = truth.copy()
        rows = slice(12 * j, 12 * j + 12)  # each rater errs in its own band only
        band = r[rows]
        band[band == 1] = 2  # rater j calls its band's label-1 voxels 2
        band[(band == 0) & (np.arange(60)[None, :] % 7 == j)] = 3
        raters.append(r)
    res = R.staple(raters)
    assert not res.binary and res.labels == (0, 1, 2, 3)
    np.testing.assert_array_equal(res.consensus, truth)
    assert res.probability.shape == (4, 60, 60)
    np.testing.assert_allclose(res.probability.sum(axis=0), 1.0, atol=1e-5)
    for j, r in enumerate(raters):
        expected = np.zeros((4, 4))
        np.add.at(expected, (truth.ravel(), r.ravel()), 1)
        expected /= expected.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(res.confusion[j], expected, atol=1e-6)
        np.testing.assert_allclose(res.sensitivity[j], np.diagonal(expected), atol=1e-6)
    assert res.converged and np.isfinite(res.specificity).all()


def test_binary_method_refuses_multilabel_masks_clearly():
    a = np.array([[0, 1], [2, 2]], np.uint8)
    with pytest.raises(ValueError, match=r"labels \[0, 1, 2\].*foreground=V"):
        R.staple([a, a], multilabel=False)
    res = R.staple([a, a], foreground=2)  # one structure against the rest
    np.testing.assert_array_equal(res.consensus, np.array([[0, 0], [2, 2]]))


# --------------------------------------------------------------------------- large volumes


def test_staple_above_2_to_the_24_voxels_is_exact():
    z, y, x = np.ogrid[:20, :20, :20]
    d2 = (z - 10) ** 2 + (y - 10) ** 2 + (x - 9) ** 2
    tile = [(d2 < 36), (d2 < 49), ((z - 10) ** 2 + (y - 9) ** 2 + (x - 10) ** 2 < 30)]
    tile[2] = tile[2] ^ ((z + 2 * y + 3 * x) % 11 == 0)
    small = R.staple([t.astype(np.uint8) for t in tile], probability_dtype=np.float64)
    big_masks = [np.tile(t.astype(np.uint8), (13, 13, 13)) for t in tile]  # 260^3 voxels
    big = R.staple(big_masks)
    del big_masks
    assert big.probability.size == 260**3 > 2**24
    # Scaling every pattern count by 13^3 leaves the EM's fixed point unchanged.
    np.testing.assert_allclose(big.sensitivity, small.sensitivity, rtol=1e-12)
    np.testing.assert_allclose(big.specificity, small.specificity, rtol=1e-12)
    assert big.iterations == small.iterations
    np.testing.assert_allclose(big.probability[-20:, -20:, -20:], small.probability, atol=1e-7)
    assert int(np.count_nonzero(big.consensus)) == 13**3 * int(np.count_nonzero(small.consensus))
    # the reason for float64: a float32 running count stops at 2^24
    assert np.float32(2**24) + np.float32(1) == np.float32(2**24)


# --------------------------------------------------------------------------- agreement


def test_cohen_kappa_by_hand():
    # 50 items: both yes 20, A yes/B no 5, A no/B yes 10, both no 15.
    a = np.array([1] * 20 + [1] * 5 + [0] * 10 + [0] * 15)
    b = np.array([1] * 20 + [0] * 5 + [1] * 10 + [0] * 15)
    # p_o = 35/50 = 0.7; p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5; kappa = 0.2 / 0.5
    assert R.cohen_kappa(a, b) == pytest.approx(0.4, abs=1e-12)
    k = R.pairwise_kappa([a, b, a])
    assert k[0, 1] == pytest.approx(0.4) and k[0, 2] == 1.0 and k[1, 1] == 1.0
    assert R.cohen_kappa(np.zeros(5), np.zeros(5)) is None  # one category only: undefined
    assert np.isnan(R.pairwise_kappa([np.zeros(5), np.zeros(5)])[0, 1])


FLEISS_TABLE = [  # Fleiss (1971) example as on Wikipedia: 10 subjects, 14 raters, 5 categories
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
]


def test_fleiss_kappa_by_hand():
    table = np.array(FLEISS_TABLE)
    raters = np.zeros((14, 10), np.uint8)
    for i, row in enumerate(table):
        raters[:, i] = np.repeat(np.arange(1, 6), row)
    n, v = 14, 10
    p_i = ((table**2).sum(axis=1) - n) / (n * (n - 1))
    p_k = table.sum(axis=0) / (v * n)
    expected = (p_i.mean() - (p_k**2).sum()) / (1 - (p_k**2).sum())
    got = R.fleiss_kappa(list(raters))
    assert got == pytest.approx(expected, abs=1e-12)
    assert got == pytest.approx(0.210, abs=5e-4)
    assert R.fleiss_kappa([raters[0]]) is None
    assert R.fleiss_kappa([np.ones(4), np.ones(4)]) is None
    assert R.fleiss_kappa([raters[0], raters[0]]) == pytest.approx(1.0)


def test_pairwise_dice_equals_metrics_dice_per_class():
    rng = np.random.default_rng(0)
    raters = [rng.integers(0, 3, (30, 40)).astype(np.uint8) for _ in range(4)]
    raters.append(np.zeros((30, 40), np.uint8))
    raters[1][raters[1] == 2] = 0  # rater 1 never uses label 2
    raters.append(raters[1].copy())
    got = R.pairwise_dice(raters)
    assert set(got) == {1, 2}
    for j in range(6):
        for m in range(6):
            ref = dice_per_class(raters[j], raters[m], labels=[1, 2])
            for lab in (1, 2):
                if ref[lab] is None:
                    assert np.isnan(got[lab][j, m])
                else:
                    assert got[lab][j, m] == pytest.approx(ref[lab], abs=1e-12)


def test_vote_maps_by_hand():
    # columns: 0, 1, 2 and 4 of 4 raters say foreground
    r = [np.array([0, 1, 1, 1]), np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1]),
         np.array([0, 0, 0, 1])]
    np.testing.assert_allclose(R.vote_fraction(r), [0, 0.25, 0.5, 1])
    h = -(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75))
    np.testing.assert_allclose(R.vote_entropy(r), [0, h, 1, 0], atol=1e-6)
    np.testing.assert_array_equal(R.disagreement(r), [False, True, True, False])
    m = [np.array([1, 2, 0]), np.array([1, 2, 2]), np.array([1, 0, 1])]
    np.testing.assert_allclose(R.vote_fraction(m, label=2), [0, 2 / 3, 1 / 3], atol=1e-7)
    np.testing.assert_allclose(R.vote_fraction(m), [1, 2 / 3, 2 / 3], atol=1e-7)
    np.testing.assert_allclose(R.vote_entropy(m)[2], math.log2(3), atol=1e-6)


# --------------------------------------------------------------------------- majority vote


def test_majority_vote_ties():
    r = [np.array([1, 1, 0]), np.array([1, 0, 0]), np.array([0, 1, 1]), np.array([1, 0, 0])]
    # votes for foreground: 3, 2 (tie), 1
    np.testing.assert_array_equal(R.majority_vote(r), [1, 0, 0])  # low: background wins
    np.testing.assert_array_equal(R.majority_vote(r, tie="high"), [1, 1, 0])
    np.testing.assert_array_equal(R.majority_vote(r, tie="undecided"), [1, 2, 0])
    np.testing.assert_array_equal(R.majority_vote(r, tie="undecided", undecided_label=9),
                                  [1, 9, 0])
    m = [np.array([1, 2, 3]), np.array([2, 2, 3]), np.array([1, 3, 0]), np.array([2, 3, 0])]
    np.testing.assert_array_equal(R.majority_vote(m), [1, 2, 0])
    np.testing.assert_array_equal(R.majority_vote(m, tie="high"), [2, 3, 3])
    with pytest.raises(ValueError, match="unused value"):
        R.majority_vote(m, tie="undecided", undecided_label=2)
    with pytest.raises(ValueError, match="tie must be"):
        R.majority_vote(m, tie="random")  # type: ignore[arg-type]
    assert R.majority_vote([np.array([0, 255], np.uint8)] * 3).dtype == np.uint8


# --------------------------------------------------------------------------- edge cases


def test_all_raters_empty():
    z = np.zeros((8, 8), np.uint8)
    res = R.staple([z, z, z])
    assert res.probability.max() == 0 and res.consensus.max() == 0
    np.testing.assert_array_equal(res.sensitivity, 1.0)
    np.testing.assert_array_equal(res.specificity, 1.0)
    assert any("undefined" in n for n in res.notes)
    assert np.isnan(R.pairwise_dice([z, z])[1]).all()
    rep = R.rater_report([z, z, z])
    json.dumps(rep, allow_nan=False)
    assert rep["pairwise_dice"][0][1] is None and rep["fleiss_kappa"] is None


def test_identical_raters():
    m = _noisy_disks(1)[0]
    res = R.staple([m, m, m])
    np.testing.assert_array_equal(res.consensus, m)
    np.testing.assert_allclose(res.sensitivity, 1.0)
    np.testing.assert_allclose(res.specificity, 1.0)
    assert R.fleiss_kappa([m, m, m]) == pytest.approx(1.0)
    assert R.identical_raters([m, m, m]) == [[0, 1, 2]]
    full = np.ones_like(m)
    res = R.staple([full, full])
    assert res.consensus.min() == 1 and np.array_equal(res.specificity, [1.0, 1.0])


def test_single_rater():
    m = _noisy_disks(1)[0]
    res = R.staple([m])
    np.testing.assert_array_equal(res.consensus, m)
    np.testing.assert_array_equal(res.probability, m.astype(np.float32))
    assert res.iterations == 0 and res.converged
    assert res.sensitivity.tolist() == [1.0] and res.specificity.tolist() == [1.0]
    assert any("single rater" in n for n in res.notes)
    np.testing.assert_array_equal(R.majority_vote([m]), m)
    assert R.fleiss_kappa([m]) is None
    rep = R.rater_report([m], names=["only"])
    assert rep["pairwise_dice"] == [[1.0]] and rep["iterations"] == 0


def test_errors_are_clear():
    with pytest.raises(ValueError, match="at least one rater"):
        R.staple([])
    with pytest.raises(ValueError, match=r"Rater 1 has shape \(4, 5\) but rater 0 has \(4, 4\)"):
        R.staple([np.zeros((4, 4)), np.zeros((4, 5))])
    with pytest.raises(ValueError, match="non-integer"):
        R.staple([np.zeros(4), np.full(4, 0.5)])
    with pytest.raises(ValueError, match="max_iter"):
        R.staple([np.zeros(4)] * 2, max_iter=0)


def test_pattern_routes_agree(monkeypatch):
    masks = _noisy_disks(6, seed=5)
    direct = R.staple(masks, probability_dtype=np.float64)
    monkeypatch.setattr(R, "_BINCOUNT_MAX", 4)  # force the np.unique route
    votes = R.RaterVotes.from_raters(masks)
    assert votes.n_slots == votes.n_patterns
    other = R.staple(votes, probability_dtype=np.float64)
    np.testing.assert_allclose(other.probability, direct.probability, atol=1e-12)
    np.testing.assert_allclose(other.sensitivity, direct.sensitivity, atol=1e-12)
    np.testing.assert_array_equal(R.vote_fraction(votes), R.vote_fraction(masks))


def test_many_raters_beyond_64_bit_codes():
    rng = np.random.default_rng(1)
    truth = np.zeros((12, 12), np.uint8)
    truth[3:9, 2:10] = 1
    masks = [truth ^ (rng.random(truth.shape) < 0.05) for _ in range(70)]
    votes = R.RaterVotes.from_raters(masks)
    assert votes.n_raters == 70 and int(votes.counts.sum()) == truth.size
    res = R.staple(votes)
    np.testing.assert_array_equal(res.consensus, truth)
    np.testing.assert_array_equal(R.majority_vote(votes), truth)


# --------------------------------------------------------------------------- soft Dice


def test_qubiq_dice():
    r = [np.array([0, 1, 1, 1, 0]), np.array([0, 0, 1, 1, 0]), np.array([0, 0, 0, 1, 0]),
         np.array([0, 0, 0, 1, 0]), np.array([0, 0, 0, 1, 0])]
    frac = R.vote_fraction(r, dtype=np.float64)  # 0, .2, .4, 1, 0 (float32 would cross 0.2)
    assert R.qubiq_dice(frac, r) == pytest.approx(1.0)
    per = R.soft_dice_per_level(np.array([0, 0, 0, 1.0, 0]), r)
    # levels < 0.2: target {1,2,3} vs pred {3} -> 0.5; 0.2..0.3: {2,3} vs {3} -> 2/3; >=0.4: 1
    assert per[0.1] == pytest.approx(0.5)
    assert per[0.2] == pytest.approx(2 / 3) and per[0.3] == pytest.approx(2 / 3)
    assert per[0.4] == pytest.approx(1.0) and per[0.9] == pytest.approx(1.0)
    assert R.qubiq_dice(np.array([0, 0, 0, 1.0, 0]), r) == pytest.approx((0.5 + 4 / 3 + 6) / 9)
    z = [np.zeros(3, np.uint8)] * 2
    assert R.qubiq_dice(np.zeros(3), z) is None
    assert R.qubiq_dice(np.ones(3), z) == 0.0
    with pytest.raises(ValueError, match="differ in shape"):
        R.qubiq_dice(np.zeros(4), z)


def test_rater_report_is_json_and_complete():
    masks = _noisy_disks(4, seed=2)
    masks.append(masks[0].copy())
    rep = R.rater_report(masks, names=list("abcde"), method="majority")
    text = json.dumps(rep, allow_nan=False)
    assert "NaN" not in text
    assert np.array(rep["pairwise_dice"]).shape == (5, 5)
    assert len(rep["staple"]["sensitivity"]) == 5 and len(rep["staple"]["specificity"]) == 5
    assert rep["n_voxels"] == 64 * 64 and rep["iterations"] >= 2
    assert rep["identical_raters"] == [["a", "e"]]
    assert any("identical raters: a = e" in n for n in rep["notes"])
    assert rep["fleiss_kappa"] is not None and 0 < rep["fleiss_kappa"] <= 1
    assert rep["dice_to_consensus"][0] == pytest.approx(
        dice_per_class(masks[0], R.majority_vote(masks), labels=[1])[1])
