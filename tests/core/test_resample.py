"""Resampling between voxel grids: images, class-index volumes, probabilities."""

import numpy as np
import pytest

from napari_medseg.core.data import UNLABELLED
from napari_medseg.core.resample import (
    resample_image,
    resample_labels,
    resample_to_shape,
    zoom_factors,
)


def _centroid_mm(mask: np.ndarray, voxel: float) -> np.ndarray:
    """Centre of mass in mm, voxel i's centre at (i + 0.5) * voxel (grid_mode geometry)."""
    return (np.argwhere(mask).mean(axis=0) + 0.5) * voxel


def test_resample_labels_keeps_boundaries_in_place():
    # A ball off the grid's symmetry, 1 mm -> 2 mm: its centre must not move.
    z, y, x = np.mgrid[:40, :40, :40]
    ball = ((z - 17.3) ** 2 + (y - 21.6) ** 2 + (x - 19.1) ** 2) < 9.5 ** 2
    labels = ball.astype(np.int16)
    down = resample_labels(labels, (0.5, 0.5, 0.5))
    assert down.shape == (20, 20, 20)
    shift = _centroid_mm(down == 1, 2.0) - _centroid_mm(labels == 1, 1.0)
    # Nearest-neighbour sampling moved it by +0.5 mm on every axis.
    assert np.abs(shift).max() < 0.15
    # ... nor grow or shrink it (ties all going one way changed its volume by 7 %).
    assert (down == 1).sum() * 8 == pytest.approx(ball.sum(), rel=0.03)


def test_resample_labels_votes_between_classes():
    labels = np.zeros((4, 4), np.int16)
    labels[:2, :2] = [[2, 2], [2, 1]]  # 3 of 4 voxels are class 2
    labels[2:, 2:] = [[1, 1], [0, 0]]  # a 2-2 tie at an even position: the lower class
    labels[:2, 2:] = [[3, 0], [0, 0]]
    labels[2:, :2] = [[3, 1], [1, 3]]  # a 2-2 tie at an odd position: the higher class
    assert resample_labels(labels, (0.5, 0.5)).tolist() == [[2, 0], [3, 0]]


def test_resample_labels_keeps_a_lone_labelled_slice():
    labels = np.full((8, 6, 6), UNLABELLED, np.int16)
    for z in (2, 5):  # one slice on either side of each 2 mm voxel's centre
        labels[z] = 0
        labels[z, 2:4, 2:4] = 1
    down = resample_labels(labels, (0.5, 0.5, 0.5))
    assert down.shape == (4, 3, 3)
    assert (down[1] >= 0).all() and (down[2] >= 0).all()
    assert (down[0] == UNLABELLED).all() and (down[3] == UNLABELLED).all()
    assert down[1, 1, 1] == 1 and down[1, 0, 0] == 0


def test_resample_labels_upsamples_and_keeps_dtype():
    labels = np.array([[0, 1], [2, -1]], np.int16)
    up = resample_labels(labels, (2.0, 2.0))
    assert up.dtype == np.int16
    assert up.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, -1, -1], [2, 2, -1, -1]]
    assert resample_labels(labels, (1.0, 1.0)) is labels


def test_zoom_factors():
    assert zoom_factors((1.0, 0.5, 3.0), (2.0, 2.0, 1.5)) == (0.5, 0.25, 2.0)
    assert zoom_factors((1.0, 0.5), None) == (1.0, 1.0)


def test_resample_image_keeps_a_ramp_in_register():
    # A linear ramp along x resampled 1 -> 2 mm: grid mode puts the new voxel centres half
    # way between old pairs, so each new value is the mean of the two it covers.
    ramp = np.broadcast_to(np.arange(8, dtype=np.float32), (1, 4, 8)).copy()
    down = resample_image(ramp, (1.0, 0.5))
    assert down.shape == (1, 4, 4) and down.dtype == np.float32
    np.testing.assert_allclose(down[0, 0], [0.5, 2.5, 4.5, 6.5], atol=1e-5)
    assert resample_image(ramp, (1.0, 1.0)) is ramp


def test_resample_to_shape_hits_the_exact_grid():
    rng = np.random.default_rng(0)
    arr = rng.random((2, 7, 5, 3)).astype(np.float32)
    out = resample_to_shape(arr, (15, 11, 6))
    assert out.shape == (2, 15, 11, 6) and out.dtype == np.float32
    # Linear interpolation never leaves the input's range.
    assert out.min() >= arr.min() - 1e-6 and out.max() <= arr.max() + 1e-6
    const = np.full((1, 5, 9), 0.25, np.float32)
    np.testing.assert_allclose(resample_to_shape(const, (13, 4)), 0.25)
    assert resample_to_shape(arr, (7, 5, 3)) is arr
