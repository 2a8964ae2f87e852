"""Every CLI command end to end on small generated data, and its errors."""

import json

import numpy as np
import pytest

from napari_medseg import cli
from napari_medseg.core import io


def test_train_predict_evaluate_end_to_end(tmp_path, nifti_case, capsys):
    model = tmp_path / "m.pt"
    rc = cli.main(["train", "--image", str(nifti_case["t1"]), str(nifti_case["flair"]),
                   "--label", str(nifti_case["labels"]), "--out", str(model), "--dims", "2",
                   "--epochs", "2", "--steps-per-epoch", "10", "--patch", "32", "--width", "8",
                   "--depth", "3"])
    assert rc == 0, capsys.readouterr().err
    assert model.exists()
    pred = tmp_path / "pred.nii.gz"
    prob = tmp_path / "prob.nii.gz"
    rc = cli.main(["predict", "--model", str(model), "--image", str(nifti_case["t1"]),
                   str(nifti_case["flair"]), "--out", str(pred), "--probabilities", str(prob)])
    assert rc == 0, capsys.readouterr().err
    out = io.read_volume(pred)
    np.testing.assert_allclose(out.affine, nifti_case["affine"])
    assert out.data.shape == (48, 48, 24)
    assert set(np.unique(out.data)) <= {0, 1, 2, 3, 4}
    probs = io.read_volume(prob).data
    assert probs.shape == (48, 48, 24, 5)
    np.testing.assert_allclose(probs.sum(-1), 1, atol=1e-4)
    js = tmp_path / "e.json"
    rc = cli.main(["evaluate", "--pred", str(pred), "--ref", str(nifti_case["labels"]),
                   "--json", str(js)])
    assert rc == 0
    res = json.loads(js.read_text())
    assert set(res["dice"]) == {"1", "2", "3", "4"}
    assert all(isinstance(res["hd95_mm"][k], (float, str, type(None))) for k in res["hd95_mm"])
    printed = capsys.readouterr().out
    assert "dice" in printed and "hd95_mm" in printed


def test_evaluate_reports_absent_classes(tmp_path, capsys):
    a = np.zeros((10, 10, 4), np.uint8)
    a[2:5, 2:5, 1:3] = 1
    io.write_nifti(tmp_path / "p.nii.gz", a)
    io.write_nifti(tmp_path / "r.nii.gz", a)
    assert cli.main(["evaluate", "--pred", str(tmp_path / "p.nii.gz"),
                     "--ref", str(tmp_path / "r.nii.gz"), "--json", str(tmp_path / "o.json")]) == 0
    res = json.loads((tmp_path / "o.json").read_text())
    assert res["dice"]["1"] == pytest.approx(1.0)
    assert res["hd95_mm"]["1"] == pytest.approx(0.0)


def _err(capsys):
    return capsys.readouterr().err


def test_train_shape_mismatch_names_files(tmp_path, nifti_case, capsys):
    io.write_nifti(tmp_path / "small.nii.gz", np.zeros((48, 48, 23), np.float32))
    rc = cli.main(["train", "--image", str(nifti_case["t1"]), str(tmp_path / "small.nii.gz"),
                   "--label", str(nifti_case["labels"]), "--out", str(tmp_path / "m.pt")])
    assert rc == 2
    err = _err(capsys)
    assert "small.nii.gz" in err and "resample" in err


def test_train_label_grid_mismatch(tmp_path, nifti_case, capsys):
    io.write_nifti(tmp_path / "lab.nii.gz", np.zeros((48, 48, 20), np.uint8))
    rc = cli.main(["train", "--image", str(nifti_case["t1"]), "--label",
                   str(tmp_path / "lab.nii.gz"), "--out", str(tmp_path / "m.pt")])
    assert rc == 2 and "lab.nii.gz" in _err(capsys)


def test_train_nan_image(tmp_path, nifti_case, capsys):
    bad = io.read_volume(nifti_case["t1"]).data.copy()
    bad[3, 3, 3] = np.nan
    io.write_nifti(tmp_path / "nan.nii.gz", bad)
    rc = cli.main(["train", "--image", str(tmp_path / "nan.nii.gz"), "--label",
                   str(nifti_case["labels"]), "--out", str(tmp_path / "m.pt"), "--epochs", "1"])
    assert rc == 2 and "NaN" in _err(capsys)


def test_train_empty_labels(tmp_path, nifti_case, capsys):
    io.write_nifti(tmp_path / "empty.nii.gz", np.zeros((48, 48, 24), np.uint8))
    rc = cli.main(["train", "--image", str(nifti_case["t1"]), "--label",
                   str(tmp_path / "empty.nii.gz"), "--out", str(tmp_path / "m.pt")])
    err = _err(capsys)
    assert rc == 2 and "empty.nii.gz" in err and "empty" in err


def test_train_4d_and_corrupt_files(tmp_path, nifti_case, capsys):
    io.write_nifti(tmp_path / "four.nii.gz", np.zeros((4, 4, 4, 2), np.float32))
    rc = cli.main(["train", "--image", str(tmp_path / "four.nii.gz"), "--label",
                   str(nifti_case["labels"]), "--out", str(tmp_path / "m.pt")])
    assert rc == 2 and "four.nii.gz" in _err(capsys)
    (tmp_path / "bad.nii.gz").write_bytes(b"garbage")
    rc = cli.main(["train", "--image", str(tmp_path / "bad.nii.gz"), "--label",
                   str(nifti_case["labels"]), "--out", str(tmp_path / "m.pt")])
    assert rc == 2 and "bad.nii.gz" in _err(capsys)


def test_train_unpaired_arguments(tmp_path, nifti_case, capsys):
    rc = cli.main(["train", "--image", str(nifti_case["t1"]), "--out", str(tmp_path / "m.pt")])
    assert rc == 2 and "--label" in _err(capsys)


def test_predict_with_non_checkpoint(tmp_path, nifti_case, capsys):
    import torch

    torch.save({"a": torch.ones(2)}, tmp_path / "foreign.pt")
    rc = cli.main(["predict", "--model", str(tmp_path / "foreign.pt"), "--image",
                   str(nifti_case["t1"]), "--out", str(tmp_path / "o.nii.gz")])
    err = _err(capsys)
    assert rc == 2 and "foreign.pt" in err and "not a napari-medseg model" in err


def test_headless_demo_beats_chance(monkeypatch, capsys):
    dice = cli.run_headless_demo(seconds=None, epochs=4)
    assert capsys.readouterr().out.count("Dice") >= 1
    # Grey and white matter are most of the brain: chance-level Dice would be far below this.
    assert dice[2] > 0.6 and dice[3] > 0.6


def test_headless_demo_explains_a_class_it_did_not_learn_yet():
    """A slow machine's 20 s demo printed 'csf: 0.000' without a word: it reads as a bug."""
    from napari_medseg.cli.demo import weak_classes_hint

    hint = weak_classes_hint({1: 0.0, 2: 0.83, 3: 0.86, 4: None}, 20.0)
    assert hint is not None and hint.startswith("csf:") and "--seconds 60" in hint
    assert "grey" not in hint
    assert weak_classes_hint({1: 0.7, 2: 0.9, 3: 0.9, 4: 0.8}, 20.0) is None


def test_train_with_sparse_label_mask(tmp_path, nifti_case, capsys):
    mask = np.zeros((48, 48, 24), np.uint8)
    mask[:, :, 10:13] = 1  # three annotated slices
    io.write_nifti(tmp_path / "mask.nii.gz", mask)
    rc = cli.main(["train", "--image", str(nifti_case["t1"]), "--label", str(nifti_case["labels"]),
                   "--label-mask", str(tmp_path / "mask.nii.gz"), "--out", str(tmp_path / "m.pt"),
                   "--dims", "2", "--epochs", "1", "--steps-per-epoch", "3", "--patch", "32",
                   "--width", "4", "--depth", "2"])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "m.pt").exists()


def test_foreground_loss_and_decision_travel_with_the_model(tmp_path, nifti_case, capsys):
    from napari_medseg.core.checkpoint import load_checkpoint

    model = tmp_path / "m.pt"
    rc = cli.main(["train", "--image", str(nifti_case["t1"]), str(nifti_case["flair"]),
                   "--label", str(nifti_case["labels"]), "--out", str(model), "--dims", "2",
                   "--epochs", "1", "--steps-per-epoch", "5", "--patch", "32", "--width", "8",
                   "--depth", "3", "--loss", "dice_ce_fg", "--decision", "foreground"])
    assert rc == 0, capsys.readouterr().err
    tc = load_checkpoint(model).train_config
    assert (tc.loss, tc.decision) == ("dice_ce_fg", "foreground")
    outs = {}
    for rule in ("foreground", "argmax"):
        outs[rule] = tmp_path / f"{rule}.nii.gz"
        rc = cli.main(["predict", "--model", str(model), "--image", str(nifti_case["t1"]),
                       str(nifti_case["flair"]), "--out", str(outs[rule]), "--decision", rule])
        assert rc == 0, capsys.readouterr().err
    low = tmp_path / "low.nii.gz"
    rc = cli.main(["predict", "--model", str(model), "--image", str(nifti_case["t1"]),
                   str(nifti_case["flair"]), "--out", str(low), "--threshold", "0.2"])
    assert rc == 0, capsys.readouterr().err
    fg = io.read_volume(outs["foreground"]).data
    am = io.read_volume(outs["argmax"]).data
    # a lower threshold outlines at least as much as the model's 0.5
    assert ((io.read_volume(low).data > 0) >= (fg > 0)).all()
    # foreground first never labels fewer voxels as foreground than argmax
    assert (fg > 0).sum() >= (am > 0).sum()
    assert ((am > 0) & (fg == 0)).sum() == 0


@pytest.mark.parametrize("norm", ["none", "median_iqr"])
def test_norm_travels_with_the_model(norm, tmp_path, nifti_case, capsys):
    """--norm: the model records it, so predict prepares images the same way."""
    from napari_medseg.core.checkpoint import load_checkpoint

    model = tmp_path / "m.pt"
    rc = cli.main(["train", "--image", str(nifti_case["t1"]), "--label",
                   str(nifti_case["labels"]), "--out", str(model), "--dims", "2", "--epochs", "1",
                   "--steps-per-epoch", "3", "--patch", "32", "--width", "8", "--depth", "3",
                   "--norm", norm])
    assert rc == 0, capsys.readouterr().err
    assert load_checkpoint(model).train_config.intensity_norm == norm
    out = tmp_path / "pred.nii.gz"
    assert cli.main(["predict", "--model", str(model), "--image", str(nifti_case["t1"]),
                     "--out", str(out)]) == 0
    assert io.read_volume(out).data.shape == io.read_volume(nifti_case["t1"]).data.shape


def test_augmentation_jitters_reach_the_model_and_are_checked(tmp_path, nifti_case, capsys):
    from napari_medseg.core.checkpoint import load_checkpoint

    model = tmp_path / "m.pt"
    base = ["train", "--image", str(nifti_case["t1"]), "--label", str(nifti_case["labels"]),
            "--out", str(model), "--dims", "2", "--epochs", "1", "--steps-per-epoch", "2",
            "--patch", "32", "--width", "4", "--depth", "2"]
    assert cli.main(base + ["--intensity-jitter", "0.3", "--scale-jitter", "0.2"]) == 0, \
        capsys.readouterr().err
    tc = load_checkpoint(model).train_config
    assert (tc.intensity_jitter, tc.scale_jitter) == (0.3, 0.2)
    for flag in ("--intensity-jitter", "--scale-jitter"):
        with pytest.raises(SystemExit):
            cli.main(base + [flag, "1.5"])
        assert f"{flag}: expected a fraction" in capsys.readouterr().err


def test_unknown_norm_is_refused(tmp_path, nifti_case, capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--image", str(nifti_case["t1"]), "--label",
                  str(nifti_case["labels"]), "--out", str(tmp_path / "m.pt"), "--norm", "minmax"])
    assert "invalid choice: 'minmax'" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-3", "nan", "inf"])
def test_demo_refuses_a_time_limit_that_is_not_a_positive_number(value, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo", "--seconds", value])
    assert exc.value.code == 2 and "--seconds: expected a finite number above 0" in \
        capsys.readouterr().err


def test_demo_falls_back_to_headless_when_the_display_cannot_be_reached(monkeypatch, capsys):
    """Qt aborts the whole process on an unreachable display; the demo asks a child first."""
    from napari_medseg.cli import demo

    ran = []
    monkeypatch.setattr(demo, "run_headless_demo", lambda seconds, seed: ran.append(seconds))
    monkeypatch.setenv("DISPLAY", ":97")  # no X server answers there
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    assert cli.main(["demo", "--seconds", "3"]) == 0
    out = capsys.readouterr().out
    assert ran == [3.0] and "Qt cannot open a window" in out and ":97" in out


def test_demo_falls_back_to_headless_without_a_qt_binding(monkeypatch, capsys):
    """The qt extra not installed: napari's import of Qt fails inside open_demo_viewer."""
    import types

    from napari_medseg.cli import demo

    def no_qt() -> int:
        raise ImportError("No Qt bindings could be found")

    ran = []
    monkeypatch.setattr(demo, "run_headless_demo", lambda seconds, seed: ran.append(seconds))
    monkeypatch.setattr(demo, "_display_problem", lambda: None)
    monkeypatch.setattr(demo, "importlib", types.SimpleNamespace(
        import_module=lambda name: types.SimpleNamespace(open_demo_viewer=no_qt)))
    assert cli.main(["demo"]) == 0
    assert ran == [20.0] and "No Qt bindings" in capsys.readouterr().out
