"""Shared fixtures: small generated volumes and the location of the shared real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Two CPU cores in CI: torch's own threads are enough, never more.
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on two cores shared with other jobs: one torch thread measured 4-13x faster
    than two. Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def shared_data(sub: str) -> Path:
    """Path to ``../shared/data/<sub>``, or skip the test with the reason."""
    p = DATA / sub
    if not p.exists():
        pytest.skip(f"real data {p} is absent (a fresh clone has no ../shared/data)")
    return p


@pytest.fixture
def phantom():
    from napari_medseg.core.sample import brain_phantom

    return brain_phantom(shape=(48, 48, 24), seed=0)


@pytest.fixture
def nifti_case(tmp_path, phantom):
    """Two channel files and a label file of a small phantom, with a non-trivial affine."""
    from napari_medseg.core import io

    aff = np.array([[1.0, 0, 0, -20.0], [0, 1.0, 0, 10.0], [0, 0, 1.5, 5.0], [0, 0, 0, 1]])
    paths = {
        "t1": io.write_nifti(tmp_path / "t1.nii.gz", phantom.t1, aff),
        "flair": io.write_nifti(tmp_path / "flair.nii.gz", phantom.flair, aff),
        "labels": io.write_nifti(tmp_path / "labels.nii.gz", phantom.labels.astype(np.float32), aff),
    }
    return {k: Path(v) for k, v in paths.items()} | {"affine": aff}
