"""``napari-medseg predict``: the decision options, ``--slice-axis`` and thin volumes.

Each test reproduces a defect a review of prediction found: a binary model's threshold
dropped under argmax, a new slice axis resampled to the old slice thickness, a thin volume
resampled to no voxels, and options that did nothing without a word.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_medseg import cli
from napari_medseg.core import io

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(path, *, dims=3, classes=2, spacing=None, slice_axis=2, decision="argmax",
           threshold=0.5):
    """An untrained small UNet saved as a checkpoint (its probabilities vary over the image)."""
    from napari_medseg.core.checkpoint import Checkpoint, save_checkpoint
    from napari_medseg.core.config import ModelConfig, TrainConfig
    from napari_medseg.core.data import LabelMapping
    from napari_medseg.core.models import build_model

    torch.manual_seed(0)
    mc = ModelConfig(spatial_dims=dims, in_channels=1, out_channels=classes, base_width=4,
                     depth=2)
    tc = TrainConfig(patch_size=(16,) * dims, slice_axis=slice_axis, spacing=spacing,
                     decision=decision, threshold=threshold)
    save_checkpoint(path, Checkpoint(mc, tc, LabelMapping(tuple(range(classes))), (), spacing,
                                     build_model(mc).state_dict()))
    return str(path)


def _image(path, shape=(16, 16, 12), spacing=(1.0, 1.0, 1.0), seed=0):
    data = np.random.default_rng(seed).random(shape).astype(np.float32)
    io.write_nifti(path, data, np.diag([*spacing, 1.0]))
    return str(path)


def _predict(*args):
    return cli.main(["predict", "--no-tta", *map(str, args)])


def test_a_binary_models_threshold_holds_under_argmax(tmp_path, capsys):
    model = _model(tmp_path / "bin.pt", threshold=0.3)
    img = _image(tmp_path / "img.nii.gz")
    counts = []
    for thr in (0.3, 0.45, 0.55):
        out, prob = tmp_path / f"l{thr}.nii.gz", tmp_path / f"p{thr}.nii.gz"
        assert _predict("--model", model, "--image", img, "--out", out, "--probabilities", prob,
                        "--threshold", thr) == 0
        lab = io.read_volume(out).data
        p_fg = io.read_volume(prob).data[..., 1]
        np.testing.assert_array_equal(lab, (p_fg > thr).astype(lab.dtype))
        counts.append(int(lab.sum()))
    assert counts[0] >= counts[1] >= counts[2] and counts[0] > counts[2]
    assert "warning" not in capsys.readouterr().err


def test_slice_axis_keeps_the_in_plane_training_spacing(tmp_path, monkeypatch):
    import napari_medseg.core.inference as inference

    grids = []
    real = inference.predict_volume

    def spy(model, image, **kw):
        grids.append((tuple(image.shape[1:]), kw["slice_axis"]))
        return (yield from real(model, image, **kw))

    monkeypatch.setattr(inference, "predict_volume", spy)
    # trained on X,Y,Z volumes: 0.5 x 0.7 mm in plane, 3 mm slices along axis 2
    model = _model(tmp_path / "m2d.pt", dims=2, spacing=(0.5, 0.7, 3.0), slice_axis=2)
    # a Z,Y,X stack: 2.5 mm slices along axis 0, 0.5 x 0.35 mm in plane
    img = _image(tmp_path / "zyx.nii.gz", shape=(6, 40, 40), spacing=(2.5, 0.5, 0.35))
    out = tmp_path / "o.nii.gz"
    assert _predict("--model", model, "--image", img, "--out", out, "--slice-axis", 0) == 0
    # in plane 40 x 40 at 0.5 x 0.35 mm -> 40 x 20 at 0.5 x 0.7; the 6 slices as they are
    assert grids == [((6, 40, 20), 0)]
    assert io.read_volume(out).data.shape == (6, 40, 40)


def test_a_volume_thinner_than_the_models_voxels_is_segmented(tmp_path):
    model = _model(tmp_path / "m3d.pt", spacing=(1.0, 1.0, 1.0))
    img = _image(tmp_path / "thin.nii.gz", shape=(20, 18, 1), spacing=(0.3, 0.3, 0.3))
    out = tmp_path / "o.nii.gz"
    assert _predict("--model", model, "--image", img, "--out", out) == 0
    assert io.read_volume(out).data.shape == (20, 18, 1)


def test_slice_axis_with_a_3d_model_is_refused(tmp_path, capsys):
    model = _model(tmp_path / "m3d.pt")
    img = _image(tmp_path / "img.nii.gz")
    assert _predict("--model", model, "--image", img, "--out", tmp_path / "o.nii.gz",
                    "--slice-axis", 0) == 2
    assert "--slice-axis applies to 2D models on 3D volumes" in capsys.readouterr().err
    assert not (tmp_path / "o.nii.gz").exists()


@pytest.mark.parametrize("classes, options, expected", [
    (2, ["--decision", "foreground"], "--decision foreground changes nothing"),
    (1, ["--decision", "argmax"], "--decision argmax changes nothing"),
    (3, ["--threshold", "0.3"], "--threshold 0.3 is ignored"),
    (3, ["--decision", "argmax", "--threshold", "0.3"], "--threshold 0.3 is ignored"),
])
def test_options_that_change_nothing_are_warned_about(tmp_path, capsys, classes, options,
                                                      expected):
    model = _model(tmp_path / "m.pt", dims=2, classes=classes)
    img = _image(tmp_path / "img.nii.gz")
    assert _predict("--model", model, "--image", img, "--out", tmp_path / "o.nii.gz",
                    *options) == 0
    err = capsys.readouterr().err
    assert f"warning: {expected}" in err


def test_options_that_count_are_not_warned_about(tmp_path, capsys):
    model = _model(tmp_path / "m.pt", dims=2, classes=3)
    img = _image(tmp_path / "img.nii.gz")
    for options in (["--decision", "foreground", "--threshold", "0.3"],
                    ["--decision", "argmax"], ["--slice-axis", "1"]):
        assert _predict("--model", model, "--image", img, "--out", tmp_path / "o.nii.gz",
                        *options) == 0
        assert "warning" not in capsys.readouterr().err


def test_slice_axis_on_a_2d_image_is_warned_about(tmp_path, capsys):
    model = _model(tmp_path / "m.pt", dims=2)
    img = tmp_path / "img.png"
    io.write_volume(img, (np.random.default_rng(0).random((20, 24)) * 255).astype(np.uint8),
                    np.eye(4))
    assert _predict("--model", model, "--image", img, "--out", tmp_path / "o.png",
                    "--slice-axis", 0) == 0
    assert "warning: --slice-axis 0 is ignored: the image is 2D" in capsys.readouterr().err


def test_largest_component_leaves_one_region_and_only_with_the_option(tmp_path, capsys):
    from scipy import ndimage as ndi

    model = _model(tmp_path / "m.pt", threshold=0.3)
    # two bright cubes apart on a zero background (outside the body: background), which
    # this untrained model marks foreground at threshold 0.3
    data = np.zeros((24, 24, 16), np.float32)
    data[2:7, 2:7, 2:7] = 1
    data[15:22, 15:22, 8:14] = 1
    img = tmp_path / "img.nii.gz"
    io.write_nifti(img, data, np.eye(4))
    plain, pruned = tmp_path / "plain.nii.gz", tmp_path / "pruned.nii.gz"
    assert _predict("--model", model, "--image", img, "--out", plain) == 0
    assert _predict("--model", model, "--image", img, "--out", pruned,
                    "--largest-component") == 0
    out = capsys.readouterr().out
    a, b = io.read_volume(plain).data, io.read_volume(pruned).data
    full = np.ones((3, 3, 3))
    n_plain = ndi.label(a > 0, structure=full)[1]
    assert n_plain > 1, "the fixture must predict several regions for this test to mean much"
    regions, n = ndi.label(b > 0, structure=full)
    assert n == 1
    # the kept region is the plain prediction's largest, untouched; nothing else survives
    lab_a = ndi.label(a > 0, structure=full)[0]
    largest = np.argmax(np.bincount(lab_a.ravel())[1:]) + 1
    np.testing.assert_array_equal(b, np.where(lab_a == largest, a, 0))
    assert f"largest component kept: {n_plain - 1} other region(s)" in out


def test_several_models_decide_on_their_mean_probability(tmp_path, capsys):
    a = _model(tmp_path / "a.pt")
    torch.manual_seed(1)
    b_path = tmp_path / "b.pt"
    from napari_medseg.core.checkpoint import load_checkpoint, save_checkpoint
    from napari_medseg.core.models import build_model

    ck = load_checkpoint(a)
    save_checkpoint(b_path, replace(ck, state_dict=build_model(ck.model_config).state_dict()))
    img = _image(tmp_path / "img.nii.gz")
    probs = []
    for m in (a, b_path):
        assert _predict("--model", m, "--image", img, "--out", tmp_path / "o.nii.gz",
                        "--probabilities", tmp_path / "p.nii.gz") == 0
        probs.append(io.read_volume(tmp_path / "p.nii.gz").data)
    assert not np.allclose(probs[0], probs[1])  # two different models
    assert _predict("--model", a, b_path, "--image", img, "--out", tmp_path / "e.nii.gz",
                    "--probabilities", tmp_path / "pe.nii.gz") == 0
    out = capsys.readouterr().out
    assert "ensemble of 2 models" in out and "model 2:" in out
    mean = (probs[0] + probs[1]) / 2
    np.testing.assert_allclose(io.read_volume(tmp_path / "pe.nii.gz").data, mean, atol=1e-5)
    lab = io.read_volume(tmp_path / "e.nii.gz").data
    np.testing.assert_array_equal(lab, (mean[..., 1] > 0.5).astype(lab.dtype))


def test_models_of_different_labels_are_not_averaged(tmp_path, capsys):
    a = _model(tmp_path / "a.pt", classes=2)
    b = _model(tmp_path / "b.pt", classes=3)
    img = _image(tmp_path / "img.nii.gz")
    assert _predict("--model", a, b, "--image", img, "--out", tmp_path / "e.nii.gz") == 2
    err = capsys.readouterr().err
    assert "Model 2 predicts label values [0, 1, 2], model 1 [0, 1]" in err
    assert not (tmp_path / "e.nii.gz").exists()
