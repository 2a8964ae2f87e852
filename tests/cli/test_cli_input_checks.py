"""What the commands refuse, warn about or fill in before any work: label files that are not
label maps, grids placed apart, missing limits, bad output names, sparse references."""

from __future__ import annotations

import dataclasses
import json
import os
import stat

import numpy as np
import pytest

from napari_medseg import cli
from napari_medseg.core import io


def _err(capsys):
    return capsys.readouterr().err


def _train_args(image, label, out, *extra):
    return ["train", "--image", str(image), "--label", str(label), "--out", str(out), *extra]


@pytest.mark.parametrize(("value", "said"), [
    (np.nan, "holds NaN or infinite values"),
    (np.inf, "holds NaN or infinite values"),
    (2.6, "not whole numbers (e.g. 2.6)"),
    (-3.0, "holds the value -3"),
])
def test_a_label_file_that_is_not_a_label_map_is_named(tmp_path, nifti_case, capsys, value,
                                                        said):
    lab = io.read_volume(nifti_case["labels"]).data.copy()
    lab[3, 3, 3] = value
    bad = io.write_nifti(tmp_path / "bad_labels.nii.gz", lab.astype(np.float32),
                         nifti_case["affine"])
    model = tmp_path / "m.pt"
    assert cli.main(_train_args(nifti_case["t1"], bad, model, "--epochs", "1")) == 2
    err = _err(capsys)
    assert "bad_labels.nii.gz" in err and said in err and "-1 unlabelled" in err, err
    assert not model.exists()


def test_an_image_given_as_labels_is_refused(tmp_path, nifti_case, capsys):
    model = tmp_path / "m.pt"
    # intensities of an MRI: fractions
    assert cli.main(_train_args(nifti_case["t1"], nifti_case["flair"], model)) == 2
    err = _err(capsys)
    assert "flair.nii.gz" in err and "is it an image rather than a label map?" in err, err
    # whole numbers, but thousands of them (e.g. CT in Hounsfield units)
    ct = np.arange(48 * 48 * 24, dtype=np.int16).reshape(48, 48, 24) % 3000
    io.write_nifti(tmp_path / "ct.nii.gz", ct, nifti_case["affine"])
    assert cli.main(_train_args(nifti_case["t1"], tmp_path / "ct.nii.gz", model)) == 2
    err = _err(capsys)
    assert "ct.nii.gz holds 3000 distinct values (at most 255 classes)" in err, err
    assert not model.exists()


def test_labels_placed_apart_from_their_image_are_warned_about(tmp_path, nifti_case, capsys):
    flipped = nifti_case["affine"].copy()
    flipped[0, 0] = -1.0  # same shape and voxel size, mirrored along x
    io.write_nifti(tmp_path / "elsewhere.nii.gz", np.zeros((48, 48, 24), np.uint8), flipped)
    assert cli.main(_train_args(nifti_case["t1"], tmp_path / "elsewhere.nii.gz",
                                tmp_path / "m.pt")) == 2
    err = _err(capsys)
    assert ("warning: elsewhere.nii.gz" in err.replace(str(tmp_path) + os.sep, "")
            and "different affines" in err and "t1.nii.gz" in err), err
    assert "label volume is empty" in err  # and then the error it came to


def test_channels_placed_apart_are_warned_about(tmp_path, nifti_case, capsys):
    moved = nifti_case["affine"].copy()
    moved[2, 3] += 7.5  # 5 slices further
    io.write_nifti(tmp_path / "moved.nii.gz", io.read_volume(nifti_case["flair"]).data, moved)
    io.write_nifti(tmp_path / "empty.nii.gz", np.zeros((48, 48, 24), np.uint8),
                   nifti_case["affine"])
    assert cli.main(["train", "--image", str(nifti_case["t1"]), str(tmp_path / "moved.nii.gz"),
                     "--label", str(tmp_path / "empty.nii.gz"), "--out",
                     str(tmp_path / "m.pt")]) == 2
    err = _err(capsys)
    assert "moved.nii.gz and" in err and "different affines" in err, err


def test_rounding_in_an_affine_is_not_warned_about(tmp_path, nifti_case, capsys):
    near = nifti_case["affine"] + 1e-4
    near[3] = (0, 0, 0, 1)
    io.write_nifti(tmp_path / "near.nii.gz", np.zeros((48, 48, 24), np.uint8), near)
    cli.main(_train_args(nifti_case["t1"], tmp_path / "near.nii.gz", tmp_path / "m.pt"))
    assert "different affines" not in _err(capsys)


def _case_2d(tmp_path, phantom):
    img = io.write_nifti(tmp_path / "img2d.nii.gz", phantom.t1[:, :, 12])
    lab = io.write_nifti(tmp_path / "lab2d.nii.gz", phantom.labels[:, :, 12].astype(np.uint8))
    return img, lab


def test_dims_3_on_2d_images_is_refused_early(tmp_path, phantom, capsys):
    img, lab = _case_2d(tmp_path, phantom)
    assert cli.main(_train_args(img, lab, tmp_path / "m.pt", "--dims", "3")) == 2
    err = _err(capsys)
    assert "--dims 3 needs 3D images" in err and "img2d.nii.gz is 2D" in err and \
        "--dims 2" in err, err


def test_without_epochs_or_minutes_train_takes_the_default_epochs(tmp_path, phantom, capsys):
    img, lab = _case_2d(tmp_path, phantom)
    model = tmp_path / "m.pt"
    rc = cli.main(_train_args(img, lab, model, "--steps-per-epoch", "1", "--patch", "16",
                              "--width", "4", "--depth", "2", "--batch-size", "2"))
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "10 epochs of 1 steps (no --epochs or --minutes)" in out, out
    assert "(10 steps," in out, out
    from napari_medseg.core.checkpoint import load_checkpoint

    ck = load_checkpoint(model)
    assert (ck.train_config.epochs, ck.train_config.minutes) == (10, None)


def test_2d_predict_checks_names_first_mirrors_and_puts_classes_on_4th_axis(tmp_path, phantom,
                                                                           capsys):
    img, lab = _case_2d(tmp_path, phantom)
    model = tmp_path / "m.pt"
    assert cli.main(_train_args(img, lab, model, "--epochs", "1", "--steps-per-epoch", "2",
                                "--patch", "16", "--width", "4", "--depth", "2",
                                "--device", "cpu")) == 0
    capsys.readouterr()
    out, prob = tmp_path / "pred.nii.gz", tmp_path / "prob.nii.gz"
    for bad in (["--out", str(tmp_path / "pred.jpg")],
                ["--out", str(out), "--probabilities", str(tmp_path / "prob.png")]):
        rc = cli.main(["predict", "--model", str(model), "--image", str(img), *bad])
        captured = capsys.readouterr()
        assert rc == 2 and "model:" not in captured.out, captured  # refused before any work
        assert (".jpg" in captured.err) if "--probabilities" not in bad else \
            "write probabilities as NIfTI" in captured.err
        assert not out.exists()
    # The model was trained with --device cpu; predict takes this machine's best by default.
    from napari_medseg.core.checkpoint import load_checkpoint, save_checkpoint

    ck = load_checkpoint(model)
    gpu = tmp_path / "gpu.pt"
    save_checkpoint(gpu, dataclasses.replace(
        ck, train_config=dataclasses.replace(ck.train_config, device="cuda")))
    rc = cli.main(["predict", "--model", str(gpu), "--image", str(img), "--out", str(out),
                   "--probabilities", str(prob)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "test-time augmentation: the mean of 4 mirrorings" in captured.out  # the default
    p = io.read_volume(prob).data
    n_classes = len(ck.mapping.values)
    assert p.shape == (48, 48, 1, n_classes), p.shape
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-4)
    assert io.read_volume(out).data.shape == (48, 48)
    once = tmp_path / "once.nii.gz"
    assert cli.main(["predict", "--model", str(model), "--image", str(img), "--out", str(out),
                     "--probabilities", str(once), "--no-tta"]) == 0
    assert "test-time augmentation" not in capsys.readouterr().out
    # one pass of a barely trained net is not the mean over its mirrorings
    assert np.abs(io.read_volume(once).data - p).max() > 1e-3


# ------------------------------------------------------------------------------- evaluate


def _pair(tmp_path, pred, ref):
    io.write_nifti(tmp_path / "p.nii.gz", pred)
    io.write_nifti(tmp_path / "r.nii.gz", ref)
    return ["evaluate", "--pred", str(tmp_path / "p.nii.gz"), "--ref", str(tmp_path / "r.nii.gz"),
            "--json", str(tmp_path / "o.json")]


def test_evaluate_reports_classes_asked_for_and_absent_in_both(tmp_path, capsys):
    a = np.zeros((10, 10, 4), np.uint8)
    a[2:5, 2:5, 1:3] = 1
    args = _pair(tmp_path, a, a)
    assert cli.main([*args, "--labels", "1", "2", "4"]) == 0
    printed = capsys.readouterr().out
    res = json.loads((tmp_path / "o.json").read_text())
    assert set(res["dice"]) == {"1", "2", "4"}
    assert res["dice"]["1"] == pytest.approx(1.0)
    assert res["dice"]["2"] is None and res["dice"]["4"] is None
    assert res["absent"] == [2, 4]
    assert printed.count("absent in both prediction and reference") == 2, printed


def test_evaluate_takes_the_label_values_of_a_model(tmp_path, capsys):
    from napari_medseg.core.checkpoint import Checkpoint, save_checkpoint
    from napari_medseg.core.config import ModelConfig, TrainConfig
    from napari_medseg.core.data import LabelMapping
    from napari_medseg.core.models import build_model

    mc = ModelConfig(spatial_dims=2, in_channels=1, out_channels=4, base_width=4, depth=2)
    save_checkpoint(tmp_path / "m.pt", Checkpoint(mc, TrainConfig(patch_size=(16, 16)),
                                                  LabelMapping((0, 1, 2, 7)), (), None,
                                                  build_model(mc).state_dict()))
    a = np.zeros((10, 10, 4), np.uint8)
    a[2:5, 2:5, 1:3] = 2
    assert cli.main([*_pair(tmp_path, a, a), "--model", str(tmp_path / "m.pt")]) == 0
    res = json.loads((tmp_path / "o.json").read_text())
    assert set(res["dice"]) == {"1", "2", "7"} and res["absent"] == [1, 7]


def test_evaluate_does_not_score_what_the_reference_leaves_unlabelled(tmp_path, capsys):
    ref = np.full((10, 10, 4), -1, np.int16)
    ref[:, :, 1:3] = 0  # two slices labelled
    ref[2:6, 2:6, 1:3] = 1  # 32 voxels
    pred = np.zeros((10, 10, 4), np.uint8)
    pred[2:6, 2:6, :] = 1  # right on the labelled slices, and 32 voxels on unlabelled ones
    assert cli.main(_pair(tmp_path, pred, ref)) == 0
    err = capsys.readouterr().err
    assert "200 voxels of" in err and "unlabelled (-1) and not scored" in err, err
    res = json.loads((tmp_path / "o.json").read_text())
    assert set(res["dice"]) == {"1"} and res["dice"]["1"] == pytest.approx(1.0)


@pytest.mark.parametrize(("which", "array", "said"), [
    ("pred", np.array([0, np.nan]), "holds NaN or infinite values"),
    ("pred", np.array([0, -1.0]), "holds the value -1"),
    ("ref", np.array([0, 0.37]), "holds values that are not whole numbers"),
    ("ref", np.array([0, -2.0]), "holds the value -2"),
])
def test_evaluate_refuses_what_is_not_a_label_map(tmp_path, capsys, which, array, said):
    good = np.zeros((10, 10, 4), np.float32)
    good[2:5, 2:5, 1:3] = 1
    bad = good.copy()
    bad[0, 0, :2] = array
    args = _pair(tmp_path, bad if which == "pred" else good, bad if which == "ref" else good)
    assert cli.main(args) == 2
    err = _err(capsys)
    assert f"{'p' if which == 'pred' else 'r'}.nii.gz {said}" in err and "--task restore" in err
    assert not (tmp_path / "o.json").exists()


def test_evaluate_restore_refuses_label_options(tmp_path, capsys):
    a = np.zeros((10, 10, 4), np.float32)
    assert cli.main([*_pair(tmp_path, a, a), "--task", "restore", "--labels", "1"]) == 2
    assert "leave them out with --task restore" in _err(capsys)


# ------------------------------------------------------------------------------- files


def test_outputs_get_the_usual_file_mode(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    new = io.write_nifti(tmp_path / "new.nii.gz", np.zeros((4, 4, 4), np.uint8))
    assert stat.S_IMODE(os.stat(new).st_mode) == 0o666 & ~umask
    os.chmod(new, 0o640)  # an existing file keeps the mode its owner gave it
    io.write_nifti(new, np.ones((4, 4, 4), np.uint8))
    assert stat.S_IMODE(os.stat(new).st_mode) == 0o640
    assert io.read_volume(new).data.max() == 1
