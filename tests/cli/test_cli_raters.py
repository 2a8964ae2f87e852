"""``napari-medseg raters`` end to end (NIfTI, PNG, the shared BU-BIL cells) and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_medseg import cli
from napari_medseg.core import io
from napari_medseg.core.raters import majority_vote, staple
from tests.conftest import shared_data

AFFINE = np.array([[0.8, 0, 0, -10.0], [0, 0.8, 0, 4.0], [0, 0, 2.0, 7.0], [0, 0, 0, 1]])


def _masks_3d(n: int = 4, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[:16, :20, :12]
    out = []
    for j in range(n):
        m = (z - 8) ** 2 + (y - 10) ** 2 + (x - 6) ** 2 < (16 + 4 * j)
        m ^= rng.random(m.shape) < 0.03
        out.append(m.astype(np.uint8))
    return out


def test_raters_nifti_end_to_end(tmp_path, capsys):
    masks = _masks_3d()
    paths = [io.write_nifti(tmp_path / f"r{j}.nii.gz", m, AFFINE) for j, m in enumerate(masks)]
    out, prob, js = tmp_path / "cons.nii.gz", tmp_path / "p.nii.gz", tmp_path / "s.json"
    rc = cli.main(["raters", "--label", *paths, "--out", str(out), "--probabilities", str(prob),
                   "--json", str(js)])
    assert rc == 0, capsys.readouterr().err
    cons = io.read_volume(out)
    np.testing.assert_allclose(cons.affine, AFFINE)
    ref = staple(masks)
    np.testing.assert_array_equal(cons.data, ref.consensus)
    np.testing.assert_allclose(io.read_volume(prob).data, ref.probability, atol=1e-6)
    res = json.loads(js.read_text())
    assert np.array(res["pairwise_dice"]).shape == (4, 4)
    assert res["raters"] == [f"r{j}.nii.gz" for j in range(4)]
    np.testing.assert_allclose(res["staple"]["sensitivity"], ref.sensitivity, atol=1e-9)
    np.testing.assert_allclose(res["staple"]["specificity"], ref.specificity, atol=1e-9)
    assert res["n_voxels"] == 16 * 20 * 12 and res["iterations"] == ref.iterations
    assert isinstance(res["fleiss_kappa"], float) and res["inputs"] == paths
    printed = capsys.readouterr().out
    assert "Fleiss' kappa" in printed and "sens" in printed and "wrote" in printed


def test_raters_png_majority(tmp_path, capsys):
    masks = [m[8] for m in _masks_3d(4, seed=1)]  # 2D slices, 4 raters: ties possible
    paths = []
    for j, m in enumerate(masks):
        paths.append(io.write_raster(tmp_path / f"r{j}.png", m))
    out = tmp_path / "mv.png"
    rc = cli.main(["raters", "--label", *paths, "--method", "majority", "--tie", "high",
                   "--out", str(out), "--probabilities", str(tmp_path / "frac.tif")])
    assert rc == 0, capsys.readouterr().err
    np.testing.assert_array_equal(io.read_volume(out).data, majority_vote(masks, tie="high"))
    frac = io.read_volume(tmp_path / "frac.tif").data
    np.testing.assert_allclose(frac, np.mean(masks, axis=0), atol=1e-6)


def test_raters_multilabel_nifti(tmp_path, capsys):
    base = np.zeros((10, 12, 6), np.uint8)
    base[2:6, 2:8] = 1
    base[6:9, 3:10] = 2
    raters = [base.copy() for _ in range(3)]
    raters[1][2, 2:8] = 2
    raters[2][8, 3:10] = 0
    paths = [io.write_nifti(tmp_path / f"m{j}.nii.gz", r.astype(np.float32), AFFINE)
             for j, r in enumerate(raters)]
    rc = cli.main(["raters", "--label", *paths, "--out", str(tmp_path / "c.nii.gz"),
                   "--probabilities", str(tmp_path / "p.nii.gz"), "--json",
                   str(tmp_path / "s.json")])
    assert rc == 0, capsys.readouterr().err
    np.testing.assert_array_equal(io.read_volume(tmp_path / "c.nii.gz").data, base)
    assert io.read_volume(tmp_path / "p.nii.gz").data.shape == (10, 12, 6, 3)
    res = json.loads((tmp_path / "s.json").read_text())
    assert res["labels"] == [0, 1, 2] and not res["binary"]
    assert np.array(res["staple"]["sensitivity"]).shape == (3, 3)
    assert set(res["pairwise_dice_per_class"]) == {"1", "2"}
    assert "multi-label" in capsys.readouterr().out


def test_raters_on_bubil_reports_identical_experts(tmp_path, capsys):
    root = shared_data("bubil_cells") / "B03"
    paths = [str(root / "raters" / f"expert{k}_{t}.png") for k in (1, 2, 3)
             for t in ("amira", "imagej")] + [str(root / "gold_standard.png")]
    js = tmp_path / "s.json"
    rc = cli.main(["raters", "--label", *paths, "--out", str(tmp_path / "c.png"),
                   "--json", str(js)])
    assert rc == 0, capsys.readouterr().err
    res = json.loads(js.read_text())
    assert res["identical_raters"] == [["expert2_amira.png", "expert2_imagej.png",
                                        "gold_standard.png"]]
    assert any("one person" in n for n in res["notes"])
    assert len(res["staple"]["sensitivity"]) == 7
    assert "identical raters" in capsys.readouterr().out


def test_raters_single_rater(tmp_path, capsys):
    m = _masks_3d(1)[0]
    p = io.write_nifti(tmp_path / "only.nii.gz", m, AFFINE)
    js = tmp_path / "s.json"
    assert cli.main(["raters", "--label", p, "--out", str(tmp_path / "c.nii.gz"),
                     "--json", str(js)]) == 0
    np.testing.assert_array_equal(io.read_volume(tmp_path / "c.nii.gz").data, m)
    res = json.loads(js.read_text())
    assert res["fleiss_kappa"] is None and res["staple"]["sensitivity"] == [1.0]


def _err(capsys) -> str:
    return capsys.readouterr().err


def test_raters_shape_mismatch_names_files(tmp_path, capsys):
    a = io.write_nifti(tmp_path / "a.nii.gz", np.zeros((8, 8, 4), np.uint8))
    b = io.write_nifti(tmp_path / "b_small.nii.gz", np.zeros((8, 8, 3), np.uint8))
    assert cli.main(["raters", "--label", a, b, "--out", str(tmp_path / "c.nii.gz")]) == 2
    err = _err(capsys)
    assert "b_small.nii.gz" in err and "a.nii.gz" in err and "grid" in err


def test_raters_input_errors(tmp_path, capsys):
    assert cli.main(["raters", "--out", str(tmp_path / "c.nii.gz")]) == 2
    assert "at least one rater" in _err(capsys)
    soft = io.write_nifti(tmp_path / "soft.nii.gz", np.full((4, 4, 2), 0.3, np.float32))
    hard = io.write_nifti(tmp_path / "hard.nii.gz", np.zeros((4, 4, 2), np.uint8))
    assert cli.main(["raters", "--label", hard, soft, "--out", str(tmp_path / "c.nii.gz")]) == 2
    assert "soft.nii.gz" in _err(capsys)
    assert cli.main(["raters", "--label", hard, hard, "--out", str(tmp_path / "c.nii.gz"),
                     "--probabilities", str(tmp_path / "p.png")]) == 2
    assert ".tif or .nii.gz" in _err(capsys)
    assert cli.main(["raters", "--label", hard, hard, "--out", str(tmp_path / "c.png")]) == 2
    assert "2D" in _err(capsys)
    with pytest.raises(SystemExit):
        cli.main(["raters", "--label", hard, "--out", "x.nii.gz", "--method", "vote"])


def test_raters_on_other_grids_are_refused(tmp_path, capsys):
    """Same shape, 50 mm apart: voxels pair by index, so they would seem to agree."""
    m = np.zeros((8, 8, 4), np.uint8)
    m[2:5, 2:5, 1:3] = 1
    a = io.write_nifti(tmp_path / "a.nii.gz", m)
    moved = np.eye(4)
    moved[0, 3] = 50.0
    b = io.write_nifti(tmp_path / "b_shift50.nii.gz", m, moved)
    assert cli.main(["raters", "--label", a, b, "--out", str(tmp_path / "c.nii.gz")]) == 2
    err = _err(capsys)
    assert "b_shift50.nii.gz" in err and "a.nii.gz" in err and "different affines" in err
    assert not (tmp_path / "c.nii.gz").exists()


def test_multi_label_scores_match_the_widget_and_unlabelled_voxels_are_refused(tmp_path,
                                                                              capsys):
    """The CLI averaged sensitivity/specificity over all labels (background too), the widget
    over the nonzero ones: one rater showed 0.705 / 0.9448 in one and 0.631 / 1.000 in the
    other. And -1 (unlabelled) was counted as a label of its own."""
    from napari_medseg.core.raters import rater_scores
    from napari_medseg.gui.raters_compare import compare_raters

    base = _masks_3d(3)
    raters = [m + (np.roll(m, j, axis=0) & m) for j, m in enumerate(base)]  # values 0, 1, 2
    paths = [io.write_nifti(tmp_path / f"r{j}.nii.gz", r, AFFINE) for j, r in enumerate(raters)]
    rc = cli.main(["raters", "--label", *paths, "--out", str(tmp_path / "c.nii.gz")])
    assert rc == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    st = staple(raters)
    sens, spec = rater_scores(st.sensitivity, st.specificity, [int(v) for v in st.labels])
    gen = compare_raters(raters, ["r0.nii.gz", "r1.nii.gz", "r2.nii.gz"])
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        res = stop.value
    np.testing.assert_allclose(res.sensitivity, sens)
    for j in range(3):
        assert f"r{j}.nii.gz  {sens[j]:6.3f} {spec[j]:7.4f}" in printed
    assert not np.allclose(sens, np.asarray(st.sensitivity).mean(axis=1))  # not over all labels

    sparse = raters[2].astype(np.int16)
    sparse[:4] = -1
    io.write_nifti(tmp_path / "sparse.nii.gz", sparse, AFFINE)
    rc = cli.main(["raters", "--label", paths[0], paths[1], str(tmp_path / "sparse.nii.gz"),
                   "--out", str(tmp_path / "c2.nii.gz")])
    err = capsys.readouterr().err
    assert rc == 2 and "negative values" in err and "Rater 2" in err


def test_an_empty_rater_is_named_in_the_notes(tmp_path, capsys):
    masks = _masks_3d(3)
    masks[2] = np.zeros_like(masks[2])
    paths = [io.write_nifti(tmp_path / f"r{j}.nii.gz", m, AFFINE) for j, m in enumerate(masks)]
    assert cli.main(["raters", "--label", *paths, "--out", str(tmp_path / "c.nii.gz")]) == 0
    out = capsys.readouterr().out
    assert "note: r2.nii.gz marks no foreground: its sensitivity is 0" in out
