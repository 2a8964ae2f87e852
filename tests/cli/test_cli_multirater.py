"""``napari-medseg train`` with several raters per image: --label R1 R2 R3 and --raters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_medseg import cli
from napari_medseg.core import io
from napari_medseg.core.checkpoint import load_checkpoint
from napari_medseg.core.sample import brain_phantom

pytestmark = pytest.mark.usefixtures("one_torch_thread")


AFF = np.array([[1.0, 0, 0, -20.0], [0, 1.0, 0, 10.0], [0, 0, 1.5, 5.0], [0, 0, 0, 1]])
SHAPE = (32, 32, 12)
FAST = ["--dims", "2", "--epochs", "1", "--steps-per-epoch", "3", "--patch", "32", "--width",
        "4", "--depth", "2", "--batch-size", "2"]


def _write_case(tmp_path: Path, seed: int) -> dict[str, Path]:
    """A small phantom: its T1, tissue labels and three raters' lesion outlines, as NIfTI."""
    ph = brain_phantom(shape=SHAPE, n_raters=3, seed=seed)
    out = {"t1": tmp_path / f"t1_{seed}.nii.gz", "labels": tmp_path / f"labels_{seed}.nii.gz"}
    io.write_nifti(out["t1"], ph.t1, AFF)
    io.write_nifti(out["labels"], ph.labels, AFF)
    for j, r in enumerate(ph.raters):
        assert r.any()  # each simulated rater outlines a lesion
        out[f"r{j}"] = tmp_path / f"r{j}_{seed}.nii.gz"
        io.write_nifti(out[f"r{j}"], r, AFF)
    return out


@pytest.fixture
def case(tmp_path):
    return _write_case(tmp_path, 0)


def _raters(c: dict[str, Path]) -> list[str]:
    return [str(c["r0"]), str(c["r1"]), str(c["r2"])]


def _train(argv: list[str], capsys) -> str:
    rc = cli.main(["train", *argv, *FAST])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out


def _fail(argv: list[str], capsys) -> str:
    rc = cli.main(["train", *argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    return err


@pytest.mark.parametrize("mode", ["soft", "sample", "majority"])
def test_three_raters_train_in_every_mode(tmp_path, case, capsys, mode):
    model = tmp_path / f"{mode}.pt"
    out = _train(["--image", str(case["t1"]), "--label", *_raters(case), "--raters", mode,
                  "--out", str(model)], capsys)
    assert "case 1: 3 raters" in out and f"'{mode}'" in out
    ck = load_checkpoint(model)
    assert ck.train_config.raters == mode
    assert ck.extra["raters"] == {"mode": mode, "max_raters": 3, "n_raters": [3]}
    assert ck.mapping.values == (0, 1)
    if mode != "soft":
        return
    pred = tmp_path / "pred.nii.gz"
    prob = tmp_path / "prob.nii.gz"
    rc = cli.main(["predict", "--model", str(model), "--image", str(case["t1"]), "--out",
                   str(pred), "--probabilities", str(prob)])
    assert rc == 0, capsys.readouterr().err
    p = io.read_volume(pred)
    assert p.data.shape == SHAPE and set(np.unique(p.data)) <= {0, 1}
    np.testing.assert_allclose(p.affine, AFF)
    np.testing.assert_allclose(io.read_volume(prob).data.sum(-1), 1, atol=1e-4)


def test_mixed_groups_one_label_and_three_raters(tmp_path, case, capsys):
    other = _write_case(tmp_path, 1)
    model = tmp_path / "m.pt"
    out = _train(["--image", str(other["t1"]), "--label", str(other["r1"]),
                  "--image", str(case["t1"]), "--label", *_raters(case),
                  "--raters", "sample", "--out", str(model)], capsys)
    assert "2 case(s)" in out and "case 1: 1 label, case 2: 3 raters" in out
    ck = load_checkpoint(model)
    assert ck.extra["raters"] == {"mode": "sample", "max_raters": 3, "n_raters": [1, 3]}


def test_raters_flag_with_single_label_groups_changes_nothing(tmp_path, case, capsys):
    model = tmp_path / "m.pt"
    out = _train(["--image", str(case["t1"]), "--label", str(case["labels"]), "--raters",
                  "majority", "--out", str(model)], capsys)
    assert "raters (" not in out  # no rater summary line
    ck = load_checkpoint(model)
    assert ck.extra["raters"]["mode"] == "single" and ck.extra["raters"]["n_raters"] == [1]
    assert ck.mapping.values == (0, 1, 2, 3, 4)


def test_label_mask_applies_to_every_rater(tmp_path, case, capsys):
    """Three raters label different tissues (values 1, 2, 3); the mask keeps only the first's.

    Masked voxels become -1 for every rater, so values 2 and 3 vanish from the label
    mapping: were the mask applied to the first rater only, the model would have 4 classes.
    """
    lab = io.read_volume(case["labels"]).data
    files = []
    for value, tissue in ((1, 4), (2, 3), (3, 1)):  # lesion, white matter, CSF
        files.append(str(tmp_path / f"tissue{value}.nii.gz"))
        io.write_nifti(files[-1], np.where(lab == tissue, value, 0).astype(np.uint8), AFF)
    io.write_nifti(tmp_path / "mask.nii.gz", ((lab == 4) | (lab == 0)).astype(np.uint8), AFF)
    model = tmp_path / "m.pt"
    out = _train(["--image", str(case["t1"]), "--label", *files, "--label-mask",
                  str(tmp_path / "mask.nii.gz"), "--out", str(model)], capsys)
    assert "label values [0, 1]" in out
    ck = load_checkpoint(model)
    assert ck.mapping.values == (0, 1) and ck.model_config.out_channels == 2
    assert ck.extra["raters"]["n_raters"] == [3]


def test_one_empty_rater_trains_but_all_empty_is_an_error(tmp_path, case, capsys):
    empty = [tmp_path / f"empty{j}.nii.gz" for j in range(3)]
    for p in empty:
        io.write_nifti(p, np.zeros(SHAPE, np.uint8), AFF)
    err = _fail(["--image", str(case["t1"]), "--label", *map(str, empty), "--out",
                 str(tmp_path / "m.pt")], capsys)
    assert "empty" in err and all(p.name in err for p in empty)
    # All empty after the mask, too: the rater files label only where the mask is 0.
    io.write_nifti(tmp_path / "nowhere.nii.gz", np.zeros(SHAPE, np.uint8), AFF)
    err = _fail(["--image", str(case["t1"]), "--label", *_raters(case), "--label-mask",
                 str(tmp_path / "nowhere.nii.gz"), "--out", str(tmp_path / "m.pt")], capsys)
    assert "empty" in err and "r0_0.nii.gz" in err
    assert not (tmp_path / "m.pt").exists()
    _train(["--image", str(case["t1"]), "--label", str(case["r0"]), str(empty[0]),
            str(case["r2"]), "--out", str(tmp_path / "m.pt")], capsys)
    assert load_checkpoint(tmp_path / "m.pt").extra["raters"]["n_raters"] == [3]


def test_rater_file_off_the_image_grid_is_named(tmp_path, case, capsys):
    io.write_nifti(tmp_path / "r_small.nii.gz", np.zeros((32, 32, 11), np.uint8), AFF)
    err = _fail(["--image", str(case["t1"]), "--label", str(case["r0"]),
                 str(tmp_path / "r_small.nii.gz"), str(case["r2"]), "--out",
                 str(tmp_path / "m.pt")], capsys)
    assert "r_small.nii.gz" in err and "(32, 32, 11)" in err and "resample" in err


def test_argument_errors(tmp_path, case, capsys):
    # Two --label groups for one --image group: the pairing check says how to give raters.
    err = _fail(["--image", str(case["t1"]), "--label", str(case["r0"]), "--label",
                 str(case["r1"]), "--out", str(tmp_path / "m.pt")], capsys)
    assert "got 1 --image and 2 --label" in err and "one group" in err
    other = _write_case(tmp_path, 1)
    err = _fail(["--image", str(case["t1"]), "--label", *_raters(case), "--image",
                 str(other["t1"]), "--label", str(other["r0"]), "--label-mask",
                 str(case["labels"]), "--out", str(tmp_path / "m.pt")], capsys)
    assert "one --label-mask per --label group (got 1 and 2)" in err
    err = _fail(["--task", "restore", "--image", str(case["t1"]), "--label", *_raters(case),
                 "--out", str(tmp_path / "m.pt")], capsys)
    assert "--label is for segmentation" in err
    with pytest.raises(SystemExit):
        cli.main(["train", "--image", str(case["t1"]), "--label", str(case["r0"]), "--raters",
                  "vote", "--out", str(tmp_path / "m.pt")])
    assert "invalid choice: 'vote'" in capsys.readouterr().err
