"""Training with two processes through torchrun (DDP, gloo on the CPU)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from napari_medseg.core.checkpoint import load_checkpoint


@pytest.mark.parametrize("dims", ["2", "3"])
def test_torchrun_two_processes_train_one_model(dims, tmp_path, nifti_case):
    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "ddp.pt"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "napari_medseg.cli",
           "train", "--image", str(nifti_case["t1"]), "--label", str(nifti_case["labels"]),
           "--out", str(out), "--dims", dims, "--epochs", "2", "--steps-per-epoch", "4",
           "--patch", "32" if dims == "2" else "16", "--width", "4", "--depth", "2",
           "--device", "cpu"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    # 3D: 1x1x1 weights in channels_last_3d strides made DDP warn on every backward
    assert "Grad strides do not match" not in res.stderr
    assert "2 processes (DDP)" in res.stdout
    assert res.stdout.count("  validation dice") == 2  # rank 0 reports, once per epoch
    assert res.stdout.count("case(s), 1 channel(s)") == 1
    ck = load_checkpoint(out)
    assert len(ck.history) == 2
