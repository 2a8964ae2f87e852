"""Training settings from the data: the body's extent and the automatic 3D voxel size."""

import numpy as np
import pytest

from napari_medseg.core.plan import PATCH_SHARE, auto_spacing, body_extent_mm


def test_body_extent_is_the_bounding_box_of_the_non_background_voxels_in_mm():
    img = np.full((2, 40, 50, 60), -0.7, np.float32)  # BraTS-like negative outside constant
    img[0, 10:30, 5:45, 20:50] = 1.0
    img[1, 12:14, 5:6, 20:21] = 3.0  # inside channel 0's box: changes nothing
    assert body_extent_mm(img, (1.0, 2.0, 0.5)) == (20.0, 80.0, 15.0)
    # No constant background (a noisy image): the whole field of view.
    noisy = np.random.default_rng(0).normal(size=(1, 8, 9, 10))
    assert body_extent_mm(noisy, (1.0, 1.0, 3.0)) == (8.0, 9.0, 30.0)


def test_auto_spacing_lets_the_patch_span_half_the_longest_body_side():
    brain = [(140.0, 170.0, 140.0), (150.0, 165.0, 130.0), (135.0, 180.0, 140.0)]
    sp = auto_spacing(brain, [(1.0, 1.0, 1.0)] * 3, (48, 48, 48))
    # median longest side 170 mm * 0.5 / 48 = 1.77 mm, to two digits
    assert PATCH_SHARE == 0.5 and sp == (1.8, 1.8, 1.8)
    # a larger patch needs less coarsening
    assert auto_spacing(brain, [(1.0, 1.0, 1.0)] * 3, (64, 64, 64)) == (1.3, 1.3, 1.3)


def test_auto_spacing_never_refines_an_axis_and_leaves_small_images_alone():
    # 0.78 x 0.78 x 6.5 mm MRI: in-plane coarsened, the thick slices kept
    assert auto_spacing([(200.0, 200.0, 162.0)], [(0.78, 0.78, 6.5)], (48, 48, 48)) == \
        (2.1, 2.1, 6.5)
    # a small image already holds its body in about two patches: no resampling
    assert auto_spacing([(31.0, 61.0, 57.0)], [(1.0, 1.0, 1.0)], (48, 48, 48)) is None
    # within 5 % of the native size is not worth resampling
    assert auto_spacing([(100.0, 100.0, 100.0)], [(1.0, 1.0, 1.0)], (48, 48, 48)) is None
    # cases on different grids: the median native size per axis
    assert auto_spacing([(300.0,) * 3] * 3, [(1.0, 1.0, 3.0), (1.0, 1.0, 5.0), (1.0, 1.0, 4.0)],
                        (50, 50, 50)) == (3.0, 3.0, 4.0)


def test_auto_spacing_needs_one_extent_per_case():
    with pytest.raises(ValueError, match="one body extent and one spacing per case"):
        auto_spacing([], [], (48, 48, 48))
    with pytest.raises(ValueError, match="per case"):
        auto_spacing([(10.0, 10.0, 10.0)], [], (8, 8, 8))


@pytest.mark.parametrize(("shape", "dims", "axis", "cap", "multiple", "expected"), [
    ((100, 300), 2, None, 128, 8, (96, 128)),  # each side on its own axis, in order
    ((300, 100, 40), 2, 0, 128, 8, (96, 40)),  # slices along axis 0: axes 1 and 2
    ((300, 100, 40), 2, None, 128, 8, (128, 96)),  # default slice axis 2
    ((70, 60, 5), 3, None, 48, 8, (48, 48, 5)),  # a side below the step keeps its size
    ((70, 60, 50), 3, None, 64, 16, (64, 48, 48)),
])
def test_default_patch_fits_each_axis(shape, dims, axis, cap, multiple, expected):
    from napari_medseg.core.plan import default_patch

    assert default_patch(shape, dims, slice_axis=axis, cap=cap, multiple=multiple) == expected


@pytest.mark.parametrize(("patch", "depth"), [((8, 8), 2), ((16, 16, 16), 3), ((32, 64), 4),
                                              ((128, 128), 4), ((5, 64), 2)])
def test_default_depth_is_what_the_smallest_side_allows(patch, depth):
    from napari_medseg.core.plan import default_depth

    assert default_depth(patch) == depth
