"""What ``napari-medseg train`` fills in from the data when flags are left out."""

import numpy as np
import pytest

from napari_medseg import cli
from napari_medseg.core import io
from napari_medseg.core.checkpoint import load_checkpoint

FAST = ["--epochs", "1", "--steps-per-epoch", "1", "--width", "4", "--depth", "2"]


@pytest.fixture
def body_case(tmp_path):
    """A 40x40x20 volume at 1x1x2 mm whose body (a 32x32x16-voxel box) is 32 mm on each side."""
    rng = np.random.default_rng(0)
    img = np.zeros((40, 40, 20), np.float32)
    img[4:36, 4:36, 2:18] = 1.0 + 0.1 * rng.normal(size=(32, 32, 16))
    lab = np.zeros(img.shape, np.uint8)
    lab[14:26, 14:26, 6:14] = 1
    lab[18:22, 18:22, 8:12] = 2
    aff = np.diag([1.0, 1.0, 2.0, 1.0])
    img[lab > 0] += 1.0
    return {"image": io.write_nifti(tmp_path / "img.nii.gz", img, aff),
            "labels": io.write_nifti(tmp_path / "lab.nii.gz", lab, aff), "shape": img.shape}


def _train(tmp_path, case, *flags):
    model = tmp_path / "m.pt"
    rc = cli.main(["train", "--image", str(case["image"]), "--label", str(case["labels"]),
                   "--out", str(model), *FAST, *flags])
    return rc, model


def test_3d_defaults_to_the_auto_spacing_and_predicts_on_the_input_grid(tmp_path, body_case,
                                                                         capsys):
    rc, model = _train(tmp_path, body_case, "--dims", "3", "--patch", "8")
    out = capsys.readouterr().out
    assert rc == 0
    # 32 mm * 0.5 / 8 voxels = 2 mm; the 2 mm slices stay as they are
    assert "spacing 2x2x2 mm (auto: the body's longest side is 32 mm, a 8-voxel patch" in out
    ck = load_checkpoint(model)
    assert ck.spacing == (2.0, 2.0, 2.0)
    # two foreground values: learnt and decided as parts of one structure
    assert (ck.train_config.loss, ck.train_config.decision) == ("dice_ce_fg", "foreground")
    assert "2 foreground values" in out
    pred = tmp_path / "pred.nii.gz"
    assert cli.main(["predict", "--model", str(model), "--image", str(body_case["image"]),
                     "--out", str(pred)]) == 0
    assert io.read_volume(pred).data.shape == body_case["shape"]


def test_native_and_explicit_spacings_and_the_default_patch(tmp_path, body_case, capsys):
    rc, model = _train(tmp_path, body_case, "--dims", "3", "--spacing", "native")
    assert rc == 0
    ck = load_checkpoint(model)
    # the default patch fits the body (32 x 32 x 16 voxels), not the whole field of view
    assert ck.spacing is None and tuple(ck.train_config.patch_size) == (32, 32, 16)
    rc, model = _train(tmp_path, body_case, "--dims", "3", "--spacing", "2")
    out = capsys.readouterr().out
    assert rc == 0
    ck = load_checkpoint(model)
    # the default patch fits the body at 2 mm: 16 x 16 x 16 voxels
    assert ck.spacing == (2.0, 2.0, 2.0) and tuple(ck.train_config.patch_size) == (16, 16, 16)
    assert "patch 16x16x16" in out and "auto" not in out


def test_given_loss_and_decision_are_kept_and_one_class_keeps_plain_defaults(tmp_path, body_case,
                                                                            capsys):
    rc, model = _train(tmp_path, body_case, "--dims", "3", "--patch", "8", "--loss", "dice_ce",
                       "--decision", "argmax")
    assert rc == 0
    tc = load_checkpoint(model).train_config
    assert (tc.loss, tc.decision) == ("dice_ce", "argmax")
    one = io.read_volume(body_case["labels"])
    io.write_nifti(tmp_path / "one.nii.gz", (one.data > 0).astype(np.uint8), one.affine)
    rc, model = _train(tmp_path, {**body_case, "labels": tmp_path / "one.nii.gz"}, "--dims", "3",
                       "--patch", "8")
    assert rc == 0
    tc = load_checkpoint(model).train_config
    assert (tc.loss, tc.decision) == ("dice_ce", "argmax")


@pytest.mark.parametrize(("flags", "message"), [
    (["--dims", "2", "--spacing", "auto"], "--spacing auto is for 3D models"),
    (["--dims", "3", "--spacing", "fine"], "give sizes in mm"),
])
def test_bad_spacing_words_are_explained(tmp_path, body_case, capsys, flags, message):
    rc, model = _train(tmp_path, body_case, *flags)
    assert rc != 0 and message in capsys.readouterr().err
    assert not model.exists()
