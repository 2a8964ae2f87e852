"""Per-slice Dice, TP/FP/FN map, worst slice, volume difference, error maps, CSV rows."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from napari_medseg.core.metrics import (
    FN,
    FP,
    NONE,
    SEGMENTATION_COLUMNS,
    TP,
    WRONG_CLASS,
    absolute_error_map,
    dice,
    dice_per_class,
    evaluate_restoration,
    evaluate_segmentation,
    mae,
    overlap_map,
    per_slice_dice,
    per_slice_errors,
    psnr,
    restoration_rows,
    segmentation_rows,
    volume_difference,
    worst_slice,
    write_csv,
)
from napari_medseg.core.metrics import slices as S

FAST = settings(max_examples=40, deadline=None)


def _constructed():
    """4 slices of 4x4 along axis 0, values by hand:

    slice 0: both empty                      -> undefined (NaN)
    slice 1: ref 4 voxels, pred the same 4   -> 1
    slice 2: ref 4 voxels, pred 2 of them    -> 2*2/(2+4) = 2/3
    slice 3: ref empty, pred 3 voxels        -> 0
    """
    ref = np.zeros((4, 4, 4), np.uint8)
    pred = np.zeros_like(ref)
    ref[1, :2, :2] = 1
    pred[1, :2, :2] = 1
    ref[2, :2, :2] = 1
    pred[2, 0, :2] = 1
    pred[3, 3, :3] = 1
    return pred, ref


def test_per_slice_dice_by_hand():
    pred, ref = _constructed()
    sd = per_slice_dice(pred, ref, axis=0)
    assert sd.labels == (1,) and sd.axis == 0 and sd.n_slices == 4
    d = sd.dice[0]
    assert math.isnan(d[0])
    assert d[1:].tolist() == pytest.approx([1.0, 2 / 3, 0.0])
    assert sd.defined[0].tolist() == [False, True, True, True]
    assert sd.inter[0].tolist() == [0, 4, 2, 0]
    assert sd.npred[0].tolist() == [0, 4, 2, 3] and sd.nref[0].tolist() == [0, 4, 4, 0]
    # the volume Dice is the sum of the slices' counts: 2*6/(9+8)
    assert sd.volume_dice() == {1: pytest.approx(12 / 17)} == dice_per_class(pred, ref)
    # worst slice: slice 3 (Dice 0); slice 0 (both empty) is never chosen
    assert worst_slice(sd) == 3 == worst_slice(sd, label=1)
    # along axis 2: columns 0,1 hold everything
    sd2 = per_slice_dice(pred, ref, axis=-1)
    assert sd2.axis == 2
    assert sd2.dice[0].tolist()[:3] == pytest.approx([2 * 3 / (4 + 4), 2 * 3 / (4 + 4), 0.0])


def test_worst_slice_policies():
    pred, ref = _constructed()
    ref2, pred2 = ref.copy(), pred.copy()
    ref2[2, 3, 3] = 2  # label 2 only in the reference on slice 2: Dice 0 there
    sd = per_slice_dice(pred2, ref2)
    # mean over the labels defined on each slice: slice 2 = (2/3 + 0) / 2, slice 3 = 0
    np.testing.assert_allclose(sd.mean_dice(), [np.nan, 1.0, 1 / 3, 0.0])
    assert worst_slice(sd) == 3 and worst_slice(sd, label=2) == 2
    # ties: the lowest slice
    sd3 = per_slice_dice(np.zeros((3, 2, 2), int), np.ones((3, 2, 2), int))
    assert worst_slice(sd3, label=1) == 0
    # a class that no slice holds: None
    empty = per_slice_dice(np.zeros((3, 2, 2), int), np.zeros((3, 2, 2), int), labels=[1])
    assert worst_slice(empty, label=1) is None and np.isnan(empty.dice).all()
    with pytest.raises(ValueError, match="scored labels are"):
        worst_slice(sd, label=7)


def _naive(pred, ref, axis, labels):
    out = np.full((len(labels), pred.shape[axis]), np.nan)
    for s in range(pred.shape[axis]):
        for k, v in enumerate(labels):
            d = dice(np.take(pred, s, axis) == v, np.take(ref, s, axis) == v)
            out[k, s] = np.nan if d is None else d
    return out


pairs = hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=6).flatmap(
    lambda s: st.tuples(hnp.arrays(np.int16, s, elements=st.integers(-2, 4)),
                        hnp.arrays(np.int16, s, elements=st.integers(-2, 4)),
                        st.integers(0, len(s) - 1)))


@FAST
@given(pairs)
def test_per_slice_dice_matches_a_loop_over_dice(case):
    pred, ref, axis = case
    sd = per_slice_dice(pred, ref, axis=axis)
    labels = list(dice_per_class(pred, ref))
    assert list(sd.labels) == labels
    np.testing.assert_allclose(sd.dice, _naive(pred, ref, axis, labels), rtol=1e-12)
    assert sd.volume_dice() == dice_per_class(pred, ref)


def test_compact_and_many_label_paths(monkeypatch):
    rng = np.random.default_rng(0)
    pred = rng.choice([0, 3, 500, 70000], size=(5, 6, 7))  # wide value span: compact indices
    ref = rng.choice([0, 3, 500, 70000], size=(5, 6, 7))
    labels = list(dice_per_class(pred, ref))
    for axis in range(3):
        np.testing.assert_allclose(per_slice_dice(pred, ref, axis=axis).dice,
                                   _naive(pred, ref, axis, labels))
    monkeypatch.setattr(S, "_MAX_CONFUSION_BINS", 1)  # the linear-size histograms
    for axis in range(3):
        np.testing.assert_allclose(per_slice_dice(pred, ref, axis=axis).dice,
                                   _naive(pred, ref, axis, labels))
    monkeypatch.setattr(S, "_CHUNK_VOXELS", 50)  # many chunks
    np.testing.assert_allclose(per_slice_dice(pred, ref, axis=1).dice,
                               _naive(pred, ref, 1, labels))


def test_per_slice_dice_errors():
    with pytest.raises(ValueError, match="2 or more dimensions"):
        per_slice_dice(np.zeros(4, int), np.zeros(4, int))
    with pytest.raises(ValueError, match=r"axis 3 is out of range.*\[0, 2\]"):
        per_slice_dice(np.zeros((2, 2, 2), int), np.zeros((2, 2, 2), int), axis=3)
    with pytest.raises(ValueError, match="differ in shape"):
        per_slice_dice(np.zeros((2, 2), int), np.zeros((2, 3), int))


def test_overlap_map_codes():
    pred = np.array([[1, 2, 0, 0, 3], [0, 1, 2, 0, 0]])
    ref = np.array([[1, 1, 0, 2, 0], [0, 0, 2, 0, 1]])
    np.testing.assert_array_equal(overlap_map(pred, ref), [[TP, WRONG_CLASS, NONE, FN, FP],
                                                           [NONE, FP, TP, NONE, FN]])
    np.testing.assert_array_equal(overlap_map(pred, ref, label=1), [[TP, FN, NONE, NONE, NONE],
                                                                    [NONE, FP, NONE, NONE, FN]])
    assert overlap_map(pred, ref).dtype == np.uint8
    pred3, ref3 = _constructed()
    m = overlap_map(pred3, ref3)
    assert (m == TP).sum() == 6 and (m == FN).sum() == 2 and (m == FP).sum() == 3


@FAST
@given(pairs)
def test_overlap_map_counts_match_dice(case):
    pred, ref, _ = case
    for v, d in dice_per_class(pred, ref).items():
        m = overlap_map(pred, ref, label=v)
        tp, fp, fn = (int((m == c).sum()) for c in (TP, FP, FN))
        assert (None if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)) == \
            pytest.approx(d)


def test_volume_difference_ml_and_relative():
    pred, ref = _constructed()  # pred 9 voxels, ref 8 voxels of label 1
    vd = volume_difference(pred, ref, spacing=(2.0, 1.0, 0.5))  # 1 mm^3 a voxel
    assert vd[1] == pytest.approx({"pred_ml": 0.009, "ref_ml": 0.008, "diff_ml": 0.001,
                                   "abs_diff_ml": 0.001, "relative": 1 / 8})
    assert per_slice_dice(pred, ref).volume_difference((2.0, 1.0, 0.5)) == vd
    only_pred = volume_difference(pred, np.zeros_like(ref), spacing=(1, 1, 1))
    assert only_pred[1]["relative"] == math.inf
    absent = volume_difference(pred * 0, ref * 0, spacing=(1, 1, 1), labels=[1])
    assert absent[1]["relative"] is None and absent[1]["diff_ml"] == 0.0


def test_absolute_error_map_and_per_slice_errors():
    rng = np.random.default_rng(1)
    ref = rng.random((5, 8, 9))
    pred = ref + rng.normal(0, 0.1, ref.shape)
    pred[2] = ref[2]  # one slice restored exactly
    err = absolute_error_map(pred, ref)
    assert err.dtype == np.float32
    np.testing.assert_allclose(err, np.abs(pred - ref), rtol=1e-6)
    assert float(err.mean(dtype=np.float64)) == pytest.approx(mae(pred, ref), rel=1e-6)
    per = per_slice_errors(pred, ref, axis=0)
    dr = float(ref.max() - ref.min())
    for s in (0, 4):
        assert per["mae"][s] == pytest.approx(mae(pred[s], ref[s]))
        assert per["psnr"][s] == pytest.approx(psnr(pred[s], ref[s], data_range=dr))
    assert per["psnr"][2] == math.inf and per["mse"][2] == 0
    assert per_slice_errors(pred, ref, axis=2)["mae"].shape == (9,)
    with pytest.raises(ValueError, match="differ in shape"):
        absolute_error_map(pred, ref[:2])


def test_csv_rows_round_trip(tmp_path):
    pred, ref = _constructed()
    rep = evaluate_segmentation(pred, ref, spacing=(1, 1, 1))
    sd = per_slice_dice(pred, ref)
    rows = segmentation_rows(rep, volume_diff=sd.volume_difference((1, 1, 1)), slices=sd)
    path = write_csv(tmp_path / "s.csv", rows, SEGMENTATION_COLUMNS)
    back = list(csv.DictReader(path.open()))
    assert list(back[0]) == list(SEGMENTATION_COLUMNS)
    assert back[0]["scope"] == "volume" and float(back[0]["dice"]) == rep["dice"]["1"]
    assert float(back[0]["hd95_mm"]) == rep["hd95_mm"]["1"]
    assert [r["dice"] for r in back[1:]] == ["", "1.0", repr(2 / 3), "0.0"]
    assert [r["pred_voxels"] for r in back[1:]] == ["0", "4", "2", "3"]
    # inf is written as 'inf'
    one = evaluate_segmentation(pred, np.zeros_like(ref), spacing=(1, 1, 1))
    p2 = write_csv(tmp_path / "i.csv", segmentation_rows(one), SEGMENTATION_COLUMNS)
    assert list(csv.DictReader(p2.open()))[0]["hd95_mm"] == "inf"
    res = evaluate_restoration(pred.astype(float), ref.astype(float), win_size=3)
    rr = restoration_rows(res, slices=per_slice_errors(pred, ref, axis=0), axis=0)
    assert rr[0]["psnr_db"] == res["psnr"] and len(rr) == 5 and rr[1]["slice"] == 0
    with pytest.raises(ValueError, match="axis"):
        restoration_rows(res, slices=per_slice_errors(pred, ref))
