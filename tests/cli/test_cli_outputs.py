"""What the commands write, and what they must never write over.

Each test reproduces a defect a review found: a model written over the label file it
was trained from, labels and probabilities written to one file, tracebacks for an
output that is a folder, a half-written output set, a damaged model file failing
deep inside torch, Ctrl-C losing the model, a model file whose history stopped at its
best epoch, and a rank-0 error hanging a ``torchrun`` job.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_medseg import cli
from napari_medseg.core import io
from napari_medseg.core.checkpoint import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["--dims", "2", "--epochs", "2", "--steps-per-epoch", "3", "--patch", "32",
        "--width", "4", "--depth", "2", "--device", "cpu"]


def _train_args(case, out):
    return ["train", "--image", str(case["t1"]), "--label", str(case["labels"]),
            "--out", str(out), *TINY]


@pytest.fixture
def model(tmp_path, nifti_case):
    path = tmp_path / "m.pt"
    assert cli.main(_train_args(nifti_case, path)) == 0
    return path


def test_an_output_naming_an_input_is_refused_and_the_input_kept(tmp_path, nifti_case,
                                                                   capsys):
    before = nifti_case["labels"].read_bytes()
    rc = cli.main(_train_args(nifti_case, nifti_case["labels"]))
    assert rc == 2
    assert "--out" in capsys.readouterr().err
    assert nifti_case["labels"].read_bytes() == before  # the user's labels survive
    rc = cli.main(["evaluate", "--pred", str(nifti_case["labels"]),
                   "--ref", str(nifti_case["t1"]), "--csv", str(nifti_case["labels"])])
    assert rc == 2 and "also an input" in capsys.readouterr().err


def test_outputs_that_cannot_be_written_fail_before_any_work(tmp_path, nifti_case, model,
                                                             capsys):
    folder = tmp_path / "dir.nii.gz"
    folder.mkdir()
    img = str(nifti_case["t1"])
    cases = [
        (["predict", "--model", str(model), "--image", img, "--out", str(folder)], "is a folder"),
        (["predict", "--model", str(model), "--image", img, "--out", str(tmp_path / "a.nii.gz"),
          "--probabilities", str(tmp_path / "a.nii.gz")], "same file"),
        (["predict", "--model", str(model), "--image", img,
          "--out", str(nifti_case["t1"] / "a.nii.gz")], "is a file, not a folder"),
        (_train_args(nifti_case, tmp_path / "dir.nii.gz"), "is a folder"),
    ]
    for argv, why in cases:
        t0 = time.perf_counter()
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert why in err and "Traceback" not in err, err
        assert time.perf_counter() - t0 < 5  # refused before training or predicting
    assert not (tmp_path / "a.nii.gz").exists()
    # a folder that does not exist yet is made, as batch scripts expect
    deep = tmp_path / "results" / "case1" / "seg.nii.gz"
    assert cli.main(["predict", "--model", str(model), "--image", img, "--out", str(deep),
                     "--no-tta"]) == 0 and deep.exists()


def test_a_failed_probabilities_write_leaves_no_labels_behind(tmp_path, nifti_case, model,
                                                              monkeypatch, capsys):
    out, prob = tmp_path / "out_lab.nii.gz", tmp_path / "out_prob.nii.gz"
    real = io.write_nifti

    def failing(path, data, *a, **k):
        if np.asarray(data).ndim == 4:
            raise OSError("No space left on device")
        return real(path, data, *a, **k)

    monkeypatch.setattr(io, "write_nifti", failing)
    rc = cli.main(["predict", "--model", str(model), "--image", str(nifti_case["t1"]),
                   "--out", str(out), "--probabilities", str(prob), "--no-tta"])
    assert rc == 2 and "No space left" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir() if "out_" in p.name] == []


def test_a_damaged_model_file_is_a_clear_error(tmp_path, nifti_case, model, capsys):
    payload = torch.load(model, weights_only=True)
    bad_weights = dict(payload, state_dict={k: torch.zeros(3) for k in payload["state_dict"]})
    bad_values = dict(payload, label_values=[0, 1])
    bad_config = dict(payload, model_config=[1, 2, 3])
    for i, bad in enumerate((bad_weights, bad_values, bad_config)):
        path = tmp_path / f"bad{i}.pt"
        torch.save(bad, path)
        rc = cli.main(["predict", "--model", str(path), "--image", str(nifti_case["t1"]),
                       "--out", str(tmp_path / "p.nii.gz")])
        err = capsys.readouterr().err
        assert rc == 2 and str(path) in err and "Traceback" not in err, err
    assert not (tmp_path / "p.nii.gz").exists()


@pytest.mark.parametrize("flags, why", [
    (["--spacing", "2", "2"], "--spacing 2 2"),
    (["--patch", "0"], "--patch"),
    (["--batch-size", "0"], "--batch-size"),
    (["--seed", "-5"], "--seed"),
    (["--val-fraction", "0.5"], "--val-fraction"),
    (["--val-fraction", "2"], "--val-fraction"),
])
def test_bad_training_flags_name_the_flag(tmp_path, nifti_case, capsys, flags, why):
    argv = ["train", "--image", str(nifti_case["t1"]), "--label", str(nifti_case["labels"]),
            "--out", str(tmp_path / "m.pt"), "--dims", "3", "--epochs", "1", *flags]
    try:
        rc = cli.main(argv)
    except SystemExit as exc:  # argparse's own refusal
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2 and why in err and "Traceback" not in err, err
    assert not (tmp_path / "m.pt").exists()


def test_the_model_file_keeps_the_whole_history_and_the_normalisation(tmp_path, nifti_case):
    out = tmp_path / "m.pt"
    argv = _train_args(nifti_case, out)
    argv[argv.index("--epochs") + 1] = "4"
    assert cli.main(argv) == 0
    ck = load_checkpoint(out)
    assert [h["epoch"] for h in ck.history] == [1, 2, 3, 4]
    assert len(ck.norms) == 1 and ck.norms[0].to_dict()


@pytest.mark.parametrize("where", ["in a step", "between steps"])
def test_ctrl_c_keeps_the_model_so_far(tmp_path, nifti_case, monkeypatch, capsys, where):
    out = tmp_path / "m.pt"
    calls = {"n": 0}
    if where == "in a step":
        real = torch.optim.AdamW.step

        def step(self, *a, **k):
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt
            return real(self, *a, **k)

        monkeypatch.setattr(torch.optim.AdamW, "step", step)
    else:
        from napari_medseg.cli import segment

        def printer(ev):
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt

        monkeypatch.setattr(segment, "_print_event", printer)
    assert cli.main(_train_args(nifti_case, out)) == 130
    assert "holds this run's best model so far" in capsys.readouterr().err
    ck = load_checkpoint(out)  # this run's weights, loadable
    assert ck.model_config.base_width == 4
    # again, over that file, interrupted before any validation: an earlier model is kept
    before = out.read_bytes()
    calls["n"] = 0
    assert cli.main(_train_args(nifti_case, out)) == 130
    assert "left as it was" in capsys.readouterr().err and out.read_bytes() == before


def test_an_error_on_rank_0_ends_a_torchrun_job(tmp_path, nifti_case):
    """Rank 0 failing to write its checkpoint used to leave both ranks waiting forever."""
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent("""
        import os, sys
        from napari_medseg.core import training_loop
        def fail(*args, **kwargs):
            raise OSError("disk full (test)")
        if os.environ.get("RANK") == "0":
            training_loop.save_checkpoint = fail
        from napari_medseg.cli.parser import main
        sys.exit(main(sys.argv[1:]))
    """))
    torchrun = Path(sys.executable).with_name("torchrun")
    argv = _train_args(nifti_case, tmp_path / "ddp.pt")
    argv[argv.index("--epochs") + 1] = "3"  # the reviewer's schedule, which hung
    argv[argv.index("--steps-per-epoch") + 1] = "2"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", str(driver), *argv]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # Output to a file, not a pipe: torchrun starts its workers in sessions of their own, and
    # a hung worker would hold a pipe open (and the test) after torchrun was killed.
    log = tmp_path / "torchrun.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            _kill_matching(str(driver))
            proc.kill()
            proc.wait()
            pytest.fail("the torchrun job hung after rank 0 failed")
    assert proc.returncode != 0
    assert "error: disk full (test)" in log.read_text()


def _kill_matching(text: str) -> None:
    """SIGKILL every process whose command line contains ``text`` (the hung workers)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue
