"""``napari-medseg evaluate --per-slice [--axis N] --csv OUT.csv`` end to end on small NIfTI files."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from napari_medseg import cli
from napari_medseg.core import io
from napari_medseg.core.metrics import (
    evaluate_restoration,
    evaluate_segmentation,
    per_slice_dice,
    per_slice_errors,
    volume_difference,
)

AFFINE = np.diag([2.0, 1.0, 0.5, 1.0])
SPACING = (2.0, 1.0, 0.5)


@pytest.fixture
def seg_files(tmp_path):
    ref = np.zeros((8, 10, 6), np.uint8)
    ref[2:6, 2:8, 1:5] = 1
    ref[5:7, 1:3, 0:2] = 2
    pred = ref.copy()
    pred[:, 2:8, 4] = 0  # label 1 missed on the last slice of axis 2
    pred[2, 2:4, 1:3] = 2
    p = io.write_nifti(tmp_path / "pred.nii.gz", pred, AFFINE)
    r = io.write_nifti(tmp_path / "ref.nii.gz", ref, AFFINE)
    return p, r, pred.astype(np.int64), ref.astype(np.int64)


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_per_slice_and_csv_segmentation(seg_files, tmp_path, capsys):
    p, r, pred, ref = seg_files
    out = tmp_path / "m.csv"
    js = tmp_path / "m.json"
    assert cli.main(["evaluate", "--pred", str(p), "--ref", str(r), "--per-slice", "--csv",
                     str(out), "--json", str(js)]) == 0
    printed = capsys.readouterr().out
    sd = per_slice_dice(pred, ref, axis=2)  # default: the last axis
    rep = evaluate_segmentation(pred, ref, spacing=SPACING)
    vd = volume_difference(pred, ref, spacing=SPACING)
    assert "per-slice Dice along axis 2" in printed
    assert f"worst slice for label 1: 4 (Dice {sd.dice[0, 4]:.3f})" in printed
    rows = _rows(out)
    vol = [x for x in rows if x["scope"] == "volume"]
    per = [x for x in rows if x["scope"] == "slice"]
    assert [int(x["label"]) for x in vol] == [1, 2]
    for x in vol:
        k = x["label"]
        assert float(x["dice"]) == rep["dice"][k]
        assert float(x["hd95_mm"]) == rep["hd95_mm"][k]
        assert float(x["nsd"]) == rep["nsd"][k]
        assert float(x["diff_ml"]) == vd[int(k)]["diff_ml"]
        assert float(x["relative_diff"]) == vd[int(k)]["relative"]
    assert len(per) == 2 * 6 and all(x["axis"] == "2" for x in per)
    for x in per:
        k, s = sd.labels.index(int(x["label"])), int(x["slice"])
        want = sd.dice[k, s]
        assert (x["dice"] == "") if math.isnan(want) else float(x["dice"]) == want
        assert int(x["pred_voxels"]) == sd.npred[k, s]
    # the same numbers in the JSON and on screen
    res = json.loads(js.read_text())
    assert res["per_slice"]["axis"] == 2
    assert res["per_slice"]["dice"]["1"][4] == sd.dice[0, 4]
    assert f"{rep['dice']['1']:7.3f}" in printed


def test_per_slice_other_axis_and_csv_without_per_slice(seg_files, tmp_path, capsys):
    p, r, pred, ref = seg_files
    out = tmp_path / "a0.csv"
    assert cli.main(["evaluate", "--pred", str(p), "--ref", str(r), "--per-slice", "--axis",
                     "0", "--csv", str(out)]) == 0
    per = [x for x in _rows(out) if x["scope"] == "slice"]
    sd = per_slice_dice(pred, ref, axis=0)
    assert len(per) == 2 * 8 and per[0]["axis"] == "0"
    assert [x["dice"] for x in per[:3]] == ["", "", repr(float(sd.dice[0, 2]))]
    assert "along axis 0" in capsys.readouterr().out
    vol_only = tmp_path / "v.csv"
    assert cli.main(["evaluate", "--pred", str(p), "--ref", str(r), "--csv", str(vol_only)]) == 0
    assert {x["scope"] for x in _rows(vol_only)} == {"volume"}


def test_per_slice_errors_are_reported(seg_files, capsys):
    p, r, *_ = seg_files
    assert cli.main(["evaluate", "--pred", str(p), "--ref", str(r), "--axis", "1"]) == 2
    assert "add --per-slice" in capsys.readouterr().err
    assert cli.main(["evaluate", "--pred", str(p), "--ref", str(r), "--per-slice",
                     "--axis", "5"]) == 2
    assert "out of range for 3D images; pass 0..2" in capsys.readouterr().err


def test_restore_per_slice_and_csv(tmp_path, capsys):
    rng = np.random.default_rng(0)
    clean = rng.random((12, 10, 9)).astype(np.float32)
    noisy = (clean + rng.normal(0, 0.05, clean.shape)).astype(np.float32)
    p = io.write_nifti(tmp_path / "noisy.nii.gz", noisy, AFFINE)
    r = io.write_nifti(tmp_path / "clean.nii.gz", clean, AFFINE)
    out = tmp_path / "r.csv"
    assert cli.main(["evaluate", "--task", "restore", "--pred", str(p), "--ref", str(r),
                     "--per-slice", "--axis", "0", "--csv", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "per-slice errors along axis 0" in printed
    pf, rf = io.read_spatial(p).data.astype(np.float64), io.read_spatial(r).data.astype(np.float64)
    res = evaluate_restoration(pf, rf, win_size=7)
    per = per_slice_errors(pf, rf, axis=0, data_range=res["data_range"])
    rows = _rows(out)
    assert rows[0]["scope"] == "volume"
    for key, col in (("psnr", "psnr_db"), ("ssim", "ssim"), ("mae", "mae"), ("nmse", "nmse")):
        assert float(rows[0][col]) == res[key]
    assert len(rows) == 1 + 12
    assert [float(x["psnr_db"]) for x in rows[1:]] == per["psnr"].tolist()
    assert [float(x["mae"]) for x in rows[1:]] == per["mae"].tolist()


def test_per_slice_default_axis_follows_the_file_format(seg_files, tmp_path, capsys):
    """The default was always the last axis: a TIFF stack (Z, Y, X) was scored column by
    column along X, hiding a Z plane the prediction missed entirely, and a 2D image was cut
    into columns."""
    _, _, pred, ref = seg_files
    stack_p, stack_r = ref.copy(), ref.copy()
    stack_p[3] = 0  # Z plane 3 missed
    pt, rt = tmp_path / "pred.tif", tmp_path / "ref.tif"
    io.write_volume(pt, stack_p.astype(np.uint8))
    io.write_volume(rt, stack_r.astype(np.uint8))
    out = tmp_path / "stack.json"
    assert cli.main(["evaluate", "--pred", str(pt), "--ref", str(rt), "--per-slice",
                     "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["per_slice"]["axis"] == 0
    assert res["per_slice"]["dice"]["1"][3] == 0.0
    assert "per-slice Dice along axis 0" in capsys.readouterr().out
    p2, r2 = tmp_path / "pred.png", tmp_path / "ref.png"
    io.write_volume(p2, stack_p[4].astype(np.uint8))
    io.write_volume(r2, stack_r[4].astype(np.uint8))
    assert cli.main(["evaluate", "--pred", str(p2), "--ref", str(r2), "--per-slice"]) == 2
    assert "2D image, a single slice: --per-slice needs --axis 0" in capsys.readouterr().err
    assert cli.main(["evaluate", "--pred", str(p2), "--ref", str(r2), "--per-slice",
                     "--axis", "0"]) == 0
    assert "per-slice Dice along axis 0" in capsys.readouterr().out


def test_2d_images_report_areas_and_say_pixels_are_taken_as_mm(tmp_path, capsys):
    """800 pixels were printed as "0.800 ml": a 2D image has areas, and PNG carries no
    pixel size."""
    ref = np.zeros((40, 50), np.uint8)
    ref[5:25, 10:50] = 1  # 800 px
    pred = np.zeros_like(ref)
    pred[5:25, 10:40] = 1  # 600 px
    p, r = tmp_path / "pred.png", tmp_path / "ref.png"
    io.write_volume(p, pred)
    io.write_volume(r, ref)
    out, table = tmp_path / "m.json", tmp_path / "m.csv"
    assert cli.main(["evaluate", "--pred", str(p), "--ref", str(r), "--json", str(out),
                     "--csv", str(table)]) == 0
    cap = capsys.readouterr()
    assert "pred_mm2" in cap.out and "800.000" in cap.out and "ml" not in cap.out
    assert "carry no pixel size" in cap.err
    res = json.loads(out.read_text())
    assert res["area_mm2"]["1"] == {"pred": 600.0, "ref": 800.0}
    assert res["volume_difference"]["1"]["diff_mm2"] == -200.0
    assert float(_rows(table)[0]["diff_mm2"]) == -200.0


def test_spacing_gives_rasters_a_pixel_size(tmp_path, capsys):
    """PNG/TIFF carry no pixel size: --spacing gives distances and areas in mm."""
    ref = np.zeros((40, 50), np.uint8)
    ref[5:25, 10:50] = 1
    pred = np.zeros_like(ref)
    pred[5:25, 13:50] = 1  # 3 px short on one side
    p, r = tmp_path / "pred.png", tmp_path / "ref.png"
    io.write_volume(p, pred)
    io.write_volume(r, ref)
    out = tmp_path / "m.json"
    assert cli.main(["evaluate", "--pred", str(p), "--ref", str(r), "--spacing", "0.5",
                     "--json", str(out)]) == 0
    cap = capsys.readouterr()
    assert "carry no pixel size" not in cap.err
    res = json.loads(out.read_text())
    assert res["spacing_mm"] == [0.5, 0.5]
    assert res["area_mm2"]["1"]["ref"] == 800 * 0.25
    assert res["hd95_mm"]["1"] == pytest.approx(
        evaluate_segmentation(pred, ref, spacing=(0.5, 0.5))["hd95_mm"]["1"])
    assert res["hd95_mm"]["1"] == pytest.approx(1.5)  # 3 px at 0.5 mm
    assert cli.main(["evaluate", "--pred", str(p), "--ref", str(r), "--spacing", "1", "2",
                     "3"]) == 2
    assert "--spacing takes one value or 2" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["evaluate", "--pred", str(p), "--ref", str(r), "--spacing", "0"])
    assert exc.value.code == 2
    assert cli.main(["evaluate", "--task", "restore", "--pred", str(p), "--ref", str(r),
                     "--spacing", "1"]) == 2
    assert "restoration metrics" in capsys.readouterr().err
