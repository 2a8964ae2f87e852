"""Overlap metrics: hand-computed values, empty-mask policies, references."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.spatial.distance import cdist

from napari_medseg.core.metrics import (
    dice,
    dice_per_class,
    evaluate_segmentation,
    hausdorff95,
    hausdorff_distance,
    normalized_surface_dice,
    segmentation_columns,
    segmentation_rows,
    to_jsonable,
    unit_of,
    volume_difference,
)

FAST = settings(max_examples=40, deadline=None)


# --------------------------------------------------------------------------- references


def _surface_ref(mask: np.ndarray) -> np.ndarray:
    """Surface by explicit face-neighbour check (outside the array = background)."""
    padded = np.pad(mask, 1, constant_values=False)
    inner = tuple(slice(1, -1) for _ in range(mask.ndim))
    interior = mask.copy()
    for ax in range(mask.ndim):
        for step in (-1, 1):
            sl = list(inner)
            sl[ax] = slice(1 + step, padded.shape[ax] - 1 + step)
            interior &= padded[tuple(sl)]
    return mask & ~interior


def _directed_ref(a: np.ndarray, b: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    # A length-1 axis is not a direction a surface faces (a 2D slice stored X x Y x 1).
    keep = [ax for ax, n in enumerate(a.shape) if n > 1] or [0]
    a, b = a.reshape([a.shape[ax] for ax in keep]), b.reshape([b.shape[ax] for ax in keep])
    spacing = [spacing[ax] for ax in keep]
    pa = np.argwhere(_surface_ref(a)) * np.asarray(spacing)
    pb = np.argwhere(_surface_ref(b)) * np.asarray(spacing)
    d = cdist(pa, pb)
    return d.min(axis=1), d.min(axis=0)


def _hd_ref(a, b, spacing, q):
    dab, dba = _directed_ref(a, b, spacing)
    return max(np.percentile(dab, q), np.percentile(dba, q))


def _nsd_ref(a, b, spacing, tol):
    dab, dba = _directed_ref(a, b, spacing)
    return (np.sum(dab <= tol) + np.sum(dba <= tol)) / (dab.size + dba.size)


def _mask_pairs(max_side: int = 6):
    shapes = st.one_of(
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=max_side + 2),
        hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=max_side),
    )
    return shapes.flatmap(
        lambda s: st.tuples(hnp.arrays(bool, s), hnp.arrays(bool, s), st.just(s))
    )


spacings = st.floats(0.3, 3.0, allow_nan=False)


# --------------------------------------------------------------------------- Dice


def test_dice_toy_1d_and_2d():
    assert dice([1, 1, 0, 0], [0, 1, 1, 0]) == pytest.approx(0.5)  # 2*1 / (2+2)
    p = np.array([[1, 1, 0], [1, 0, 0]], bool)
    t = np.array([[1, 1, 1], [0, 0, 0]], bool)
    assert dice(p, t) == pytest.approx(2 * 2 / (3 + 3))
    assert dice(p, p) == 1.0
    assert isinstance(dice(p, t), float)


def test_dice_empty_policy():
    z = np.zeros((3, 4), bool)
    one = z.copy()
    one[1, 1] = True
    assert dice(z, z) is None
    assert dice(one, z) == 0.0
    assert dice(z, one) == 0.0


@FAST
@given(_mask_pairs())
def test_dice_matches_formula(pair):
    p, t, _ = pair
    expected = None if p.sum() + t.sum() == 0 else 2 * (p & t).sum() / (p.sum() + t.sum())
    got = dice(p, t)
    assert (got is None) == (expected is None)
    if expected is not None:
        assert got == pytest.approx(expected)


def test_dice_per_class_brats_labels():
    pred = np.array([[0, 1, 1, 2], [2, 4, 4, 0]])
    targ = np.array([[0, 1, 2, 2], [2, 4, 0, 0]])
    # 1: pred 2, ref 1, inter 1 -> 2/3; 2: pred 2, ref 3, inter 2 -> 4/5;
    # 4: pred 2, ref 1, inter 1 -> 2/3; 0: pred 2, ref 3, inter 2 -> 4/5.
    d = dice_per_class(pred, targ)
    assert list(d) == [1, 2, 4]
    assert d[1] == pytest.approx(2 / 3)
    assert d[2] == pytest.approx(4 / 5)
    assert d[4] == pytest.approx(2 / 3)
    d = dice_per_class(pred, targ, labels=[0, 1, 2, 3, 4])
    assert d[0] == pytest.approx(4 / 5)
    assert d[3] is None  # absent in both
    only_pred = dice_per_class(pred, np.zeros_like(targ), labels=[4])
    assert only_pred == {4: 0.0}


@FAST
@given(
    st.tuples(st.integers(1, 5), st.integers(1, 5)).flatmap(
        lambda s: st.tuples(
            hnp.arrays(np.int64, s, elements=st.sampled_from([-3, 0, 1, 2, 4, 7, 10**6])),
            hnp.arrays(np.int64, s, elements=st.sampled_from([-3, 0, 1, 2, 4, 7, 10**6])),
        )
    ),
    st.sampled_from([None, [0, 2, 5], [10**6, -3]]),
)
def test_dice_per_class_matches_per_label_dice(pair, labels):
    p, t = pair
    # exercise both the raw-bincount path and the compact-index path
    for p_, t_ in ((p, t), (np.where(p == 10**6, 9, p), np.where(t == 10**6, 9, t))):
        d = dice_per_class(p_, t_, labels=labels)
        present = set(np.unique(p_).tolist()) | set(np.unique(t_).tolist())
        want = labels if labels is not None else sorted(present - {0})
        assert list(d) == [int(v) for v in want]
        for v, got in d.items():
            assert got == dice(p_ == v, t_ == v)


def test_dice_per_class_rejects_float_labels():
    with pytest.raises(ValueError, match="integer label array.*float64"):
        dice_per_class(np.zeros((2, 2)), np.zeros((2, 2), int))


# --------------------------------------------------------------------------- Hausdorff


def test_hd95_single_voxels_anisotropic():
    a = np.zeros((15, 3, 4), bool)
    b = np.zeros_like(a)
    a[0, 1, 0] = True
    b[12, 1, 2] = True
    # 12 * 1 mm along axis 0, 2 * 2.5 mm along axis 2 -> sqrt(144 + 25) = 13 mm
    assert hausdorff95(a, b, spacing=(1, 1, 2.5)) == pytest.approx(13.0)
    assert hausdorff95(b, a, spacing=(1, 1, 2.5)) == pytest.approx(13.0)
    # 2D: 3 px at 1 mm and 2 px at 2 mm -> 5 mm
    c = np.zeros((5, 5), bool)
    d = np.zeros_like(c)
    c[0, 0] = d[3, 2] = True
    assert hausdorff95(c, d, spacing=(1.0, 2.0)) == pytest.approx(5.0)


def test_hd95_ignores_the_worst_five_percent():
    # Target: a 40-voxel line; pred: the same line plus one outlier 30 mm away.
    t = np.zeros((3, 80), bool)
    t[0, :40] = True
    p = t.copy()
    p[2, 70] = True
    assert hausdorff_distance(p, t, spacing=(1, 1), percentile=100) == pytest.approx(
        math.hypot(2, 31)
    )
    assert hausdorff95(p, t, spacing=(1, 1)) == pytest.approx(0.0)


def test_surface_metrics_empty_policy():
    z = np.zeros((4, 4, 4), bool)
    one = z.copy()
    one[2, 2, 2] = True
    sp = (1.0, 1.0, 1.0)
    assert hausdorff95(z, z, spacing=sp) is None
    assert hausdorff95(one, z, spacing=sp) == math.inf
    assert hausdorff95(z, one, spacing=sp) == math.inf
    assert normalized_surface_dice(z, z, spacing=sp) is None
    assert normalized_surface_dice(one, z, spacing=sp) == 0.0
    assert normalized_surface_dice(z, one, spacing=sp) == 0.0


@settings(max_examples=80, deadline=None)
@given(_mask_pairs(), st.data())
def test_hausdorff_and_nsd_match_brute_force(pair, data):
    p, t, shape = pair
    spacing = tuple(data.draw(spacings) for _ in shape)
    if not p.any() or not t.any():
        return  # empty policy tested separately
    for q in (95.0, 100.0):
        got = hausdorff_distance(p, t, spacing=spacing, percentile=q)
        assert got == pytest.approx(_hd_ref(p, t, spacing, q), rel=1e-9, abs=1e-9)
    tol = data.draw(st.floats(0.0, 4.0))
    got = normalized_surface_dice(p, t, spacing=spacing, tolerance_mm=tol)
    # distances exactly at the tolerance may round either way: skip those ties
    dab, dba = _directed_ref(p, t, spacing)
    if not np.any(np.isclose(np.concatenate([dab, dba]), tol)):
        assert got == pytest.approx(_nsd_ref(p, t, spacing, tol))


def test_cropping_does_not_change_results():
    rng = np.random.default_rng(1)
    p = rng.random((6, 7, 5)) > 0.5
    t = rng.random((6, 7, 5)) > 0.6
    sp = (1.0, 0.8, 2.5)
    pad = [(3, 9), (0, 4), (7, 2)]
    pp, tp = np.pad(p, pad), np.pad(t, pad)
    assert hausdorff95(pp, tp, spacing=sp) == pytest.approx(hausdorff95(p, t, spacing=sp))
    assert normalized_surface_dice(pp, tp, spacing=sp) == pytest.approx(
        normalized_surface_dice(p, t, spacing=sp)
    )


def test_a_2d_slice_stored_with_a_length_1_axis_scores_as_2d():
    # Across a length-1 axis every voxel used to count as surface: a disc shifted by 3 px
    # scored HD95 1.0 and NSD 0.96 as X x Y x 1, against 3.0 and 0.31 as 2D.
    yy, xx = np.mgrid[:80, :80]
    a = (yy - 40) ** 2 + (xx - 40) ** 2 < 30 ** 2
    b = (yy - 40) ** 2 + (xx - 43) ** 2 < 30 ** 2
    hd2, nsd2 = hausdorff95(a, b, spacing=(1.0, 1.0)), normalized_surface_dice(
        a, b, spacing=(1.0, 1.0))
    assert hd2 == pytest.approx(3.0)
    for a3, b3, sp in ((a[..., None], b[..., None], (1.0, 1.0, 2.5)),
                       (a[None], b[None], (2.5, 1.0, 1.0))):
        assert hausdorff95(a3, b3, spacing=sp) == pytest.approx(hd2)
        assert normalized_surface_dice(a3, b3, spacing=sp) == pytest.approx(nsd2)
    rep2 = evaluate_segmentation(a.astype(np.uint8), b.astype(np.uint8), spacing=(1.0, 1.0))
    rep3 = evaluate_segmentation(a[..., None].astype(np.uint8), b[..., None].astype(np.uint8),
                                 spacing=(1.0, 1.0, 2.5))
    assert rep3["hd95_mm"] == pytest.approx(rep2["hd95_mm"])
    assert rep3["nsd"] == pytest.approx(rep2["nsd"])


@pytest.mark.parametrize("ratio", [0, 10**9])
def test_surface_distances_same_by_kd_tree_and_distance_transform(monkeypatch, ratio):
    # Sparse surfaces in a large box go through a KD-tree, compact ones through distance
    # transforms: both must give the brute-force distances. Stray voxels far apart stretch
    # the box, the case the KD-tree is for.
    from napari_medseg.core.metrics import surface

    monkeypatch.setattr(surface, "KD_TREE_RATIO", ratio)
    rng = np.random.default_rng(3)
    p = np.zeros((30, 26, 20), bool)
    t = np.zeros_like(p)
    p[8:16, 6:14, 5:12] = True
    t[9:17, 7:13, 5:13] = True
    p[tuple(rng.integers(0, 20, (3, 4)))] = True
    t[29, 25, 19] = True
    sp = (1.0, 0.7, 2.0)
    for q in (95.0, 100.0):
        assert hausdorff_distance(p, t, spacing=sp, percentile=q) == pytest.approx(
            _hd_ref(p, t, sp, q))
    assert normalized_surface_dice(p, t, spacing=sp, tolerance_mm=1.5) == pytest.approx(
        _nsd_ref(p, t, sp, 1.5))
    rep = evaluate_segmentation(p.astype(np.uint8), t.astype(np.uint8), spacing=sp)
    assert rep["hd95_mm"]["1"] == pytest.approx(_hd_ref(p, t, sp, 95.0))


def test_float_masks_must_be_zero_or_one():
    # "Nonzero is foreground" counted an all-NaN prediction (a diverged model) as foreground
    # (Dice 0.4 here) and binarised probability maps at > 0 without a word.
    t = np.zeros((6, 6), np.float32)
    t[1:4, 1:4] = 1
    with pytest.raises(ValueError, match="9 NaN/inf"):
        dice(np.where(t > 0, np.nan, 0), t)
    with pytest.raises(ValueError, match="threshold it first"):
        hausdorff95(t * 0.6 + 0.05, t, spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match="target .*NaN"):
        normalized_surface_dice(t, np.full_like(t, np.inf), spacing=(1.0, 1.0))
    assert dice(t, t) == 1.0  # 0.0/1.0 floats are masks


def test_hausdorff_max_matches_skimage_when_every_voxel_is_surface():
    from skimage.metrics import hausdorff_distance as sk_hd

    rng = np.random.default_rng(0)
    for shape in ((9, 11), (5, 6, 7)):
        # Voxels on one colour of a checkerboard have no face neighbour in the
        # mask, so every voxel is a surface voxel and surface HD == point-set HD.
        checker = np.indices(shape).sum(axis=0) % 2 == 0
        for _ in range(5):
            p = checker & (rng.random(shape) > 0.6)
            t = checker & (rng.random(shape) > 0.6)
            p.flat[0] = t.flat[0] = True
            got = hausdorff_distance(p, t, spacing=(1.0,) * len(shape), percentile=100)
            assert got == pytest.approx(sk_hd(p, t))


# --------------------------------------------------------------------------- NSD


def test_nsd_identical_is_one():
    m = np.zeros((8, 9, 6), bool)
    m[2:6, 3:7, 1:5] = True
    assert normalized_surface_dice(m, m, spacing=(1, 1, 3)) == 1.0
    assert normalized_surface_dice(m, m, spacing=(1, 1, 3), tolerance_mm=0.0) == 1.0


def test_nsd_shifted_square_hand_value():
    a = np.zeros((20, 20), bool)
    b = np.zeros_like(a)
    a[5:15, 5:15] = True
    b[5:15, 7:17] = True  # shifted by 2 px along columns
    # Each 10x10 square has 36 surface pixels. Of a's: top and bottom rows
    # within 1 mm of b's edge at columns 6..14 (9 + 9), plus the two corners
    # of its right column next to b's top/bottom rows (2) -> 20/36; symmetric
    # for b -> NSD = 40 / 72.
    assert normalized_surface_dice(a, b, spacing=(1, 1), tolerance_mm=1.0) == pytest.approx(5 / 9)
    assert normalized_surface_dice(a, b, spacing=(1, 1), tolerance_mm=2.0) == 1.0
    assert hausdorff95(a, b, spacing=(1, 1)) == pytest.approx(2.0)


# --------------------------------------------------------------------------- errors


def test_shape_mismatch_error_names_shapes_and_fix():
    a, b = np.zeros((240, 240, 155), bool), np.zeros((240, 240, 154), bool)
    for fn in (
        lambda: dice(a, b),
        lambda: hausdorff95(a, b, spacing=(1, 1, 1)),
        lambda: normalized_surface_dice(a, b, spacing=(1, 1, 1)),
        lambda: dice_per_class(a, b),
        lambda: evaluate_segmentation(a, b, spacing=(1, 1, 1)),
    ):
        with pytest.raises(ValueError) as exc:
            fn()
        msg = str(exc.value)
        assert "(240, 240, 155)" in msg and "(240, 240, 154)" in msg and "resample" in msg


def test_spacing_must_match_ndim():
    m = np.ones((3, 3, 3), bool)
    with pytest.raises(ValueError, match="3 values for 3D"):
        hausdorff95(m, m, spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        normalized_surface_dice(m, m, spacing=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="tolerance_mm"):
        normalized_surface_dice(m, m, spacing=(1, 1, 1), tolerance_mm=-1)


# --------------------------------------------------------------------------- report


def test_evaluate_segmentation_report_and_json():
    target = np.zeros((12, 12, 6), np.uint8)
    pred = np.zeros_like(target)
    target[2:6, 2:6, 1:4] = 1
    pred[2:6, 3:7, 1:4] = 1  # shifted one voxel
    target[8:10, 8:10, 2:4] = 2  # label 2 missed by pred
    pred[0, 11, 5] = 4  # label 4 hallucinated
    sp = (1.0, 0.5, 2.0)
    r = evaluate_segmentation(pred, target, spacing=sp, labels=[1, 2, 3, 4])
    assert set(r) == {"dice", "hd95_mm", "nsd", "absent", "volume_ml"}
    assert r["absent"] == [3]
    assert r["dice"]["3"] is None and r["hd95_mm"]["3"] is None and r["nsd"]["3"] is None
    assert r["dice"]["1"] == pytest.approx(dice(pred == 1, target == 1))
    assert r["hd95_mm"]["1"] == pytest.approx(hausdorff95(pred == 1, target == 1, spacing=sp))
    nsd1 = normalized_surface_dice(pred == 1, target == 1, spacing=sp)
    assert r["nsd"]["1"] == pytest.approx(nsd1)
    assert r["dice"]["2"] == 0.0 and r["hd95_mm"]["2"] == math.inf and r["nsd"]["2"] == 0.0
    assert r["dice"]["4"] == 0.0 and r["hd95_mm"]["4"] == math.inf
    # 48 voxels of 1 mm^3 = 0.048 ml; 8 voxels -> 0.008 ml
    assert r["volume_ml"]["1"] == {"pred": pytest.approx(0.048), "ref": pytest.approx(0.048)}
    assert r["volume_ml"]["2"] == {"pred": 0.0, "ref": pytest.approx(0.008)}

    text = json.dumps(to_jsonable(r), allow_nan=False)
    back = json.loads(text)
    assert back["hd95_mm"]["2"] == "inf" and back["dice"]["3"] is None
    with pytest.raises(ValueError):
        json.dumps(r, allow_nan=False)  # the raw dict needs to_jsonable


def test_evaluate_segmentation_2d_default_labels():
    target = np.zeros((10, 10), np.int16)
    target[2:5, 2:5] = 1
    target[6:9, 6:9] = 4
    r = evaluate_segmentation(target, target, spacing=(0.5, 0.5))
    assert list(r["dice"]) == ["1", "4"]
    assert r["dice"] == {"1": 1.0, "4": 1.0}
    assert r["hd95_mm"] == {"1": 0.0, "4": 0.0}
    assert r["nsd"] == {"1": 1.0, "4": 1.0}
    assert r["absent"] == []
    # A 2D image has no thickness: its classes' sizes are areas (they were reported as
    # "ml", taking a 1 mm thick slice). 9 px * 0.25 mm^2 = 2.25 mm^2
    assert "volume_ml" not in r
    assert r["area_mm2"]["1"]["ref"] == pytest.approx(2.25)
    vd = volume_difference(np.zeros_like(target), target, spacing=(0.5, 0.5))
    assert vd[1] == {"pred_mm2": 0.0, "ref_mm2": 2.25, "diff_mm2": -2.25, "abs_diff_mm2": 2.25,
                     "relative": -1.0}
    assert unit_of(vd) == "mm2" and segmentation_columns("mm2")[7:10] == (
        "pred_mm2", "ref_mm2", "diff_mm2")
    rows = segmentation_rows(r, volume_diff=vd)
    assert rows[0]["ref_mm2"] == 2.25 and set(rows[0]) == set(segmentation_columns("mm2"))


def test_to_jsonable_converts_numpy_and_nonfinite():
    out = to_jsonable({1: np.float32(0.5), "a": [np.int64(3), -math.inf, None, (1, 2)]})
    assert out == {"1": 0.5, "a": [3, "-inf", None, [1, 2]]}


def test_surface_metrics_of_empty_arrays_follow_the_empty_policy():
    # Dropping length-1 axes must not drop length-0 ones (a reshape then failed).
    for shape in ((0, 5), (3, 0, 4)):
        z = np.zeros(shape, bool)
        assert hausdorff95(z, z, spacing=(1.0,) * len(shape)) is None
        assert normalized_surface_dice(z, z, spacing=(1.0,) * len(shape)) is None
