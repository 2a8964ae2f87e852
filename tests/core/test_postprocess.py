"""Largest-component clean-up of label maps, checked by hand on tiny arrays."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.core.postprocess import fill_holes, keep_largest_component


def test_keeps_the_largest_region_with_its_sub_labels():
    lab = np.zeros((6, 6, 6), np.int16)
    lab[0:3, 0:3, 0:3] = 2   # 27 voxels ...
    lab[1, 1, 1] = 4         # ... one of them another sub-region
    lab[5, 5, 5] = 1         # a stray voxel
    lab[5, 0:2, 4] = 3       # a stray pair
    before = lab.copy()
    out, voxels, regions = keep_largest_component(lab)
    np.testing.assert_array_equal(lab, before)  # the input is not modified
    expected = np.zeros_like(lab)
    expected[0:3, 0:3, 0:3] = 2
    expected[1, 1, 1] = 4
    np.testing.assert_array_equal(out, expected)
    assert (voxels, regions) == (3, 2)
    assert out.dtype == lab.dtype


def test_corner_neighbours_are_one_region():
    lab = np.zeros((4, 4, 4), np.uint8)
    lab[0, 0, 0] = lab[1, 1, 1] = lab[2, 2, 2] = 1  # a diagonal line: 26-connected
    lab[3, 3, 0] = 1
    out, voxels, regions = keep_largest_component(lab)
    assert out.sum() == 3 and out[3, 3, 0] == 0 and (voxels, regions) == (1, 1)


def test_2d_uses_8_connectivity_and_a_custom_background():
    lab = np.full((5, 5), 9)
    lab[0, 0] = lab[1, 1] = 1  # diagonal pair: one region in 2D
    lab[4, 4] = 2
    out, voxels, regions = keep_largest_component(lab, background=9)
    assert out[0, 0] == 1 and out[1, 1] == 1 and out[4, 4] == 9
    assert (voxels, regions) == (1, 1)


@pytest.mark.parametrize("lab", [np.zeros((3, 3, 3), int), np.ones((3, 3, 3), int)])
def test_nothing_or_one_region_is_unchanged(lab):
    out, voxels, regions = keep_largest_component(lab)
    np.testing.assert_array_equal(out, lab)
    assert out is not lab and (voxels, regions) == (0, 0)


def test_equal_regions_keep_the_first():
    lab = np.zeros((1, 7), int)
    lab[0, :2] = 1
    lab[0, 5:] = 1
    out = keep_largest_component(lab).labels
    assert out.tolist() == [[1, 1, 0, 0, 0, 0, 0]]


def test_probabilities_are_refused():
    with pytest.raises(ValueError, match="fractional values"):
        keep_largest_component(np.array([[0.2, 0.9]]))


def test_fill_holes_takes_the_nearest_label_and_leaves_open_cavities():
    lab = np.zeros((9, 9, 9), np.int16)
    lab[1:8, 1:8, 1:8] = 2
    lab[1:4, 1:8, 1:8] = 1          # the shell's lower part is another sub-region
    lab[3, 3:6, 3:6] = 0            # a hole next to label 1 ...
    lab[6, 4, 4] = 0                # ... and one inside label 2
    lab[5, 0:3, 2] = 0              # a tunnel to the border: not a hole
    out, voxels, holes = keep_largest_component(lab)[0], *fill_holes(lab)[1:]
    filled = fill_holes(lab).labels
    assert (voxels, holes) == (10, 2)
    assert (filled[3, 3:6, 3:6] == 1).all() and filled[6, 4, 4] == 2
    assert (filled[5, 0:3, 2] == 0).all()
    np.testing.assert_array_equal(np.delete(filled, 3, axis=0)[np.delete(lab, 3, axis=0) != 0],
                                  np.delete(lab, 3, axis=0)[np.delete(lab, 3, axis=0) != 0])
    np.testing.assert_array_equal(out, lab)  # one region: nothing for the other clean-up


def test_fill_holes_in_2d_and_without_foreground():
    ring = np.zeros((5, 5), np.uint8)
    ring[1:4, 1:4] = 3
    ring[2, 2] = 0
    assert fill_holes(ring).labels[2, 2] == 3 and fill_holes(ring)[1:] == (1, 1)
    empty = np.zeros((4, 4), int)
    assert fill_holes(empty)[1:] == (0, 0)
    with pytest.raises(ValueError, match="fractional values"):
        fill_holes(np.array([[0.5, 1.0]]))
