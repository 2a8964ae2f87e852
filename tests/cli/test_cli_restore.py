"""Restoration from the command line: train --task restore, restore, evaluate --task restore."""

import json

import numpy as np
import pytest

from napari_medseg import cli
from napari_medseg.core import io
from napari_medseg.core.degrade import degrade

pytestmark = pytest.mark.usefixtures("one_torch_thread")


AFF = np.array([[0.8, 0, 0, -10.0], [0, 0.8, 0, 5.0], [0, 0, 3.0, 2.0], [0, 0, 0, 1]])
FAST = ["--epochs", "1", "--steps-per-epoch", "3", "--patch", "32", "--width", "4", "--depth",
        "2", "--batch-size", "2"]


@pytest.fixture
def mri(tmp_path, phantom):
    """A clean magnitude phantom (T1 x 1000, anisotropic affine) and a Rician-noisy copy."""
    clean = (np.clip(phantom.t1, 0, None) * 1000).astype(np.float32)
    noisy = degrade(clean, "rician:0.08", seed=1)
    return {"clean": io.write_nifti(tmp_path / "clean.nii.gz", clean, AFF),
            "noisy": io.write_nifti(tmp_path / "noisy.nii.gz", noisy, AFF),
            "clean_arr": clean, "noisy_arr": noisy}


def test_synthetic_train_restore_evaluate(tmp_path, mri, capsys):
    model = tmp_path / "r.pt"
    rc = cli.main(["train", "--task", "restore", "--image", mri["clean"], "--degrade",
                   "rician:0.08", "--loss", "l1+ssim", "--out", str(model), *FAST])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "degraded on the fly" in out and "Rician noise" in out and "validation PSNR" in out
    # Anisotropic voxels (3 mm along z): 2D slices along the coarsest axis.
    assert "slices along axis 2" in out
    restored = tmp_path / "out.nii.gz"
    rc = cli.main(["restore", "--model", str(model), "--image", mri["noisy"], "--out",
                   str(restored), "--ref", mri["clean"]])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "PSNR" in out and "restored" in out
    vol = io.read_volume(restored)
    assert vol.data.shape == mri["noisy_arr"].shape and vol.data.dtype == np.float32
    np.testing.assert_allclose(vol.affine, AFF)
    # Output is in the input's units (not normalised): same order of magnitude.
    assert 0.5 < vol.data.mean() / mri["noisy_arr"].mean() < 2
    js = tmp_path / "m.json"
    rc = cli.main(["evaluate", "--task", "restore", "--pred", str(restored), "--ref",
                   mri["clean"], "--json", str(js)])
    out = capsys.readouterr().out
    assert rc == 0
    for key in ("MAE", "MSE", "NMSE", "PSNR", "SSIM"):
        assert key in out
    res = json.loads(js.read_text())
    assert set(res) >= {"mae", "mse", "nmse", "nmse_variance", "psnr", "ssim", "data_range"}
    span = float(mri["clean_arr"].max() - mri["clean_arr"].min())
    assert res["data_range"] == pytest.approx(span)


def test_pairs_and_noise2void_modes(tmp_path, mri, capsys):
    rc = cli.main(["train", "--task", "restore", "--image", mri["noisy"], "--target",
                   mri["clean"], "--out", str(tmp_path / "p.pt"), *FAST])
    out = capsys.readouterr().out
    assert rc == 0 and "noisy/clean pairs" in out
    rc = cli.main(["train", "--task", "restore", "--image", mri["noisy"], "--out",
                   str(tmp_path / "n.pt"), *FAST])
    out = capsys.readouterr().out
    assert rc == 0 and "Noise2Void" in out and "residual head: False" in out
    from napari_medseg.core.checkpoint import load_checkpoint

    ck = load_checkpoint(tmp_path / "n.pt")
    assert ck.task == "restore" and ck.extra["restore"]["mode"] == "noise2void"
    assert ck.extra["restore"]["loss"] == "mse"


def test_evaluate_restore_identical_is_inf_psnr(tmp_path, mri, capsys):
    js = tmp_path / "e.json"
    rc = cli.main(["evaluate", "--task", "restore", "--pred", mri["clean"], "--ref",
                   mri["clean"], "--json", str(js), "--data-range", "1000"])
    assert rc == 0
    res = json.loads(js.read_text())
    assert res["mse"] == 0 and res["ssim"] == pytest.approx(1.0)
    assert res["psnr"] in ("inf", "Infinity", None) or res["psnr"] > 1e9


def _err(capsys):
    return capsys.readouterr().err


def test_restore_errors(tmp_path, mri, capsys):
    # Targets must pair with images.
    rc = cli.main(["train", "--task", "restore", "--image", mri["noisy"], mri["noisy"],
                   "--target", mri["clean"], "--out", str(tmp_path / "m.pt")])
    assert rc == 2 and "--target" in _err(capsys)
    # --degrade and --target together is ambiguous in synthetic mode.
    rc = cli.main(["train", "--task", "restore", "--image", mri["clean"], "--target",
                   mri["clean"], "--degrade", "rician:0.05", "--mode", "synthetic", "--out",
                   str(tmp_path / "m.pt")])
    assert rc == 2 and "--target" in _err(capsys)
    rc = cli.main(["train", "--task", "restore", "--image", mri["clean"], "--degrade",
                   "speckle:0.1", "--out", str(tmp_path / "m.pt")])
    err = _err(capsys)
    assert rc == 2 and "speckle" in err and "rician" in err
    rc = cli.main(["train", "--task", "restore", "--image", mri["noisy"], "--loss", "l1+ssim",
                   "--out", str(tmp_path / "m.pt")])
    assert rc == 2 and "pixel-wise" in _err(capsys)
    # Restoration flags on a segmentation run, and restoration losses there.
    rc = cli.main(["train", "--image", mri["noisy"], "--label", mri["clean"], "--degrade",
                   "rician:0.1", "--out", str(tmp_path / "m.pt")])
    assert rc == 2 and "--task restore" in _err(capsys)
    rc = cli.main(["train", "--image", mri["noisy"], "--label", mri["clean"], "--loss", "l1",
                   "--out", str(tmp_path / "m.pt")])
    assert rc == 2 and "--task restore" in _err(capsys)
    small = io.write_nifti(tmp_path / "small.nii.gz", np.zeros((10, 10, 4), np.float32))
    rc = cli.main(["evaluate", "--task", "restore", "--pred", small, "--ref", mri["clean"]])
    assert rc == 2 and "shape" in _err(capsys)


def test_models_refuse_the_other_task(tmp_path, mri, nifti_case, capsys):
    seg = tmp_path / "seg.pt"
    assert cli.main(["train", "--image", str(nifti_case["t1"]), "--label",
                     str(nifti_case["labels"]), "--out", str(seg), "--dims", "2", *FAST]) == 0
    res = tmp_path / "res.pt"
    assert cli.main(["train", "--task", "restore", "--image", mri["noisy"], "--target",
                     mri["clean"], "--out", str(res), *FAST]) == 0
    capsys.readouterr()
    rc = cli.main(["restore", "--model", str(seg), "--image", mri["noisy"], "--out",
                   str(tmp_path / "o.nii.gz")])
    assert rc == 2 and "predict" in _err(capsys)
    rc = cli.main(["predict", "--model", str(res), "--image", mri["noisy"], "--out",
                   str(tmp_path / "o.nii.gz")])
    assert rc == 2 and "napari-medseg restore" in _err(capsys)


def test_restore_input_checks(tmp_path, mri, capsys):
    # one --target for two --image files: a clear error, in every mode
    rc = cli.main(["train", "--task", "restore", "--mode", "noise2void", "--image", mri["noisy"],
                   mri["noisy"], "--target", mri["clean"], "--out", str(tmp_path / "x.pt"),
                   *FAST])
    assert rc == 2 and "one --target per --image" in capsys.readouterr().err
    # a clean target placed elsewhere: trained on, with a warning naming both files
    moved = AFF.copy()
    moved[0, 3] += 40.0
    far = io.write_nifti(tmp_path / "clean_far.nii.gz", mri["clean_arr"], moved)
    model = tmp_path / "p.pt"
    rc = cli.main(["train", "--task", "restore", "--image", mri["noisy"], "--target", far,
                   "--out", str(model), *FAST])
    err = capsys.readouterr().err
    assert rc == 0 and "clean_far.nii.gz" in err and "different affines" in err
    # restore --ref on a thin volume (6 slices < the 7-voxel SSIM window): measured, exit 0
    thin = io.write_nifti(tmp_path / "thin.nii.gz", mri["noisy_arr"][..., :6], AFF)
    thin_ref = io.write_nifti(tmp_path / "thin_ref.nii.gz", mri["clean_arr"][..., :6], AFF)
    out = tmp_path / "r.nii.gz"
    rc = cli.main(["restore", "--model", str(model), "--image", thin, "--out", str(out),
                   "--ref", thin_ref])
    text = capsys.readouterr().out
    assert rc == 0 and "restored: PSNR" in text and "SSIM" in text
    # which SSIM: a 2D model scores slices; evaluate scores the volume, and says so
    assert "(2D, mean over slices along axis" in text and "measures SSIM in 3D" in text
    # a reference of the wrong shape fails before the restoration is written
    out2 = tmp_path / "r2.nii.gz"
    rc = cli.main(["restore", "--model", str(model), "--image", thin, "--out", str(out2),
                   "--ref", mri["clean"]])
    assert rc == 2 and not out2.exists()
    # NaN in a file to evaluate: refused, naming it (every metric would be NaN)
    bad = mri["noisy_arr"].copy()
    bad[3, 4, 5] = np.nan
    nan_file = io.write_nifti(tmp_path / "nan.nii.gz", bad, AFF)
    rc = cli.main(["evaluate", "--task", "restore", "--pred", nan_file, "--ref", mri["clean"]])
    assert rc == 2 and "nan.nii.gz holds 1 NaN/inf voxel" in capsys.readouterr().err
