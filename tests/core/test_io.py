"""NIfTI/PNG/TIFF reading and writing, label detection, clear errors for bad files."""

import gzip

import numpy as np
import pytest

from napari_medseg.core import io


def test_nifti_round_trip_keeps_affine_and_data(tmp_path):
    aff = np.array([[0.8, 0, 0, -90.5], [0, 0.8, 0, 12.0], [0, 0, 6.5, -3.0], [0, 0, 0, 1]])
    data = np.random.default_rng(0).normal(size=(7, 5, 3)).astype(np.float32)
    io.write_nifti(tmp_path / "a.nii.gz", data, aff)
    vol = io.read_volume(tmp_path / "a.nii.gz")
    np.testing.assert_array_equal(vol.data, data)
    np.testing.assert_allclose(vol.affine, aff)
    assert vol.spacing == pytest.approx((0.8, 0.8, 6.5))
    assert vol.origin == pytest.approx((-90.5, 12.0, -3.0))


def test_spacing_from_rotated_affine():
    c, s = np.cos(0.3), np.sin(0.3)
    aff = np.eye(4)
    aff[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([2.0, 3.0, 4.0])
    assert io.spacing_from_affine(aff) == pytest.approx((2.0, 3.0, 4.0))


def test_write_is_atomic_no_temp_left(tmp_path):
    io.write_nifti(tmp_path / "x.nii.gz", np.zeros((3, 3, 3), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.nii.gz"]


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "labels.nii.gz"
    io.write_nifti(target, np.ones((3, 3, 3), np.uint8))
    before = target.read_bytes()
    with pytest.raises(RuntimeError, match="disk full"):
        with io.atomic_write(target) as tmp:
            assert tmp.endswith(".nii.gz")  # writers that pick the format by suffix still can
            with open(tmp, "wb") as f:
                f.write(b"half a fi")
            raise RuntimeError("disk full")
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.nii.gz"]


@pytest.mark.parametrize("data,expected", [
    (np.array([[0, 1], [2, 4]], np.float32), True),       # BraTS stores labels as float32
    (np.arange(1000).reshape(10, 100).astype(np.int16), False),  # too many values
    (np.array([[0.5, 1.0], [2.0, 3.0]]), False),           # not integer-valued
    (np.array([[-3, 1], [2, 4]], np.int16), False),        # below -1: intensities (CT)
    (np.array([[-1, 1], [0, 0]], np.int16), True),         # -1: unlabelled (sparse labels)
    (np.zeros((4, 4), bool), True),
])
def test_looks_like_labels(data, expected):
    assert io.looks_like_labels(data) is expected


def test_png_and_tiff_round_trip(tmp_path):
    a = (np.arange(64).reshape(8, 8) % 3).astype(np.uint8)
    io.write_volume(tmp_path / "a.png", a)
    io.write_volume(tmp_path / "a.tif", a)
    np.testing.assert_array_equal(io.read_spatial(tmp_path / "a.png").data, a)
    np.testing.assert_array_equal(io.read_spatial(tmp_path / "a.tif").data, a)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        io.read_volume(tmp_path / "nope.nii.gz")


def test_corrupt_file_names_the_file(tmp_path):
    p = tmp_path / "broken.nii.gz"
    p.write_bytes(gzip.compress(b"not a nifti header at all" * 3))
    with pytest.raises(ValueError, match="broken.nii.gz.*cannot be read"):
        io.read_volume(p)


def test_truncated_file(tmp_path):
    good = tmp_path / "good.nii.gz"
    io.write_nifti(good, np.random.default_rng(0).normal(size=(20, 20, 20)).astype(np.float32))
    bad = tmp_path / "trunc.nii.gz"
    bad.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match="trunc.nii.gz"):
        io.read_spatial(bad)


def test_4d_file_is_refused_with_a_fix(tmp_path):
    io.write_nifti(tmp_path / "four.nii.gz", np.zeros((4, 4, 4, 2), np.float32))
    with pytest.raises(ValueError, match="four.nii.gz.*4D.*one file per channel"):
        io.read_spatial(tmp_path / "four.nii.gz")


def test_trailing_singleton_axis_is_dropped(tmp_path):
    io.write_nifti(tmp_path / "s.nii.gz", np.ones((4, 4, 4, 1), np.float32))
    assert io.read_spatial(tmp_path / "s.nii.gz").data.shape == (4, 4, 4)


def test_scaled_integers_stay_integers_and_other_scaling_is_float32(tmp_path):
    """nibabel scales to float64: a CT with intercept -1024 would take 4x its size."""
    import nibabel as nib

    raw = np.arange(-50, 50, dtype=np.int16).reshape(10, 10, 1) * 20
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_slope_inter(1.0, -1024.0)
    nib.save(img, tmp_path / "ct.nii.gz")
    vol = io.read_volume(tmp_path / "ct.nii.gz")
    assert vol.data.dtype == np.int16
    np.testing.assert_array_equal(vol.data, raw.astype(np.int32) - 1024)

    img.header.set_slope_inter(0.5, 0.25)
    nib.save(img, tmp_path / "scaled.nii.gz")
    vol = io.read_volume(tmp_path / "scaled.nii.gz")
    assert vol.data.dtype == np.float32
    np.testing.assert_allclose(vol.data, raw * 0.5 + 0.25)


def test_zero_voxel_size_in_the_affine_falls_back_to_the_header(tmp_path):
    import nibabel as nib

    img = nib.Nifti1Image(np.ones((4, 4, 1), np.float32), None)
    img.header.set_sform(np.diag([0.5, 0.5, 0.0, 1.0]), code=1)  # as some converters write it
    img.header.set_zooms((0.5, 0.5, 3.0))
    nib.save(img, tmp_path / "single.nii.gz")
    with pytest.warns(UserWarning, match=r"single\.nii\.gz.*no size.*3 mm"):
        vol = io.read_volume(tmp_path / "single.nii.gz")
    assert vol.spacing == pytest.approx((0.5, 0.5, 3.0))


def test_writing_with_the_source_header_keeps_its_spaces(tmp_path):
    """A registered (MNI, code 4) image's prediction stays MNI; the scanner qform is kept."""
    import nibabel as nib

    mni = np.array([[-2.0, 0, 0, 90], [0, 2.0, 0, -126], [0, 0, 2.0, -72], [0, 0, 0, 1]])
    scanner = np.array([[-2.0, 0, 0, 80], [0, 2.0, 0, -100], [0, 0, 2.0, -50], [0, 0, 0, 1]])
    img = nib.Nifti1Image(np.ones((5, 6, 7), np.float32), None)
    img.header.set_sform(mni, code=4)
    img.header.set_qform(scanner, code=1)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, tmp_path / "t1_mni.nii.gz")
    src = io.read_volume(tmp_path / "t1_mni.nii.gz")
    np.testing.assert_allclose(src.affine, mni)

    io.write_nifti(tmp_path / "pred.nii.gz", np.zeros((5, 6, 7), np.int16), src.affine,
                   header=src.header)
    out = nib.load(tmp_path / "pred.nii.gz").header
    s, sc = out.get_sform(coded=True)
    q, qc = out.get_qform(coded=True)
    assert int(sc) == 4 and int(qc) == 1
    np.testing.assert_allclose(s, mni)
    np.testing.assert_allclose(q, scanner)
    assert out.get_xyzt_units()[0] == "mm"

    moved = mni.copy()
    moved[0, 3] += 5.0  # not the header's affine any more: scanner space, code 1, both forms
    io.write_nifti(tmp_path / "moved.nii.gz", np.zeros((5, 6, 7), np.int16), moved,
                   header=src.header)
    out = nib.load(tmp_path / "moved.nii.gz").header
    assert int(out["sform_code"]) == 1 and int(out["qform_code"]) == 1
    np.testing.assert_allclose(out.get_best_affine(), moved)


def test_scaled_integers_whose_intercept_exceeds_the_result_type(tmp_path):
    """uint16 in [30000, 32000], slope 2, intercept -60000: values 0-4000, intercept not int16."""
    import nibabel as nib

    raw = np.array([30000, 32000, 31000, 30500], np.uint16).reshape(2, 2, 1)
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_slope_inter(2.0, -60000.0)
    nib.save(img, tmp_path / "u16.nii.gz")
    vol = io.read_volume(tmp_path / "u16.nii.gz")
    assert np.issubdtype(vol.data.dtype, np.integer)
    np.testing.assert_array_equal(vol.data.ravel(), [0, 4000, 2000, 1000])


@pytest.mark.parametrize("name, expected", [
    ("t1_masked.nii.gz", False),                  # a skull-stripped image, not a mask
    ("liver_segmentation.nii.gz", True),          # word beginnings: the whole-word match
    ("Schaefer2018_400Parcels_7Networks.nii.gz", True),  # missed these at first
    ("sub-01_parcellation.nii.gz", True),
    ("labeled_atlases.nii.gz", True),
    ("unlabelled_t2.nii.gz", False),
    ("t1_mask.nii.gz", True),
    ("sub-01_desc-brain_mask.nii.gz", True),      # BIDS
    ("sub-01_dseg.nii.gz", True),
    ("aparc.a2009s+aseg.nii.gz", True),           # FreeSurfer
    ("wmparc.nii", True),
    ("brainmask.nii.gz", True),                   # BraTS
    ("mask2d.tif", True),                         # stardist's nuclei masks
    ("/data/seg/t1.nii.gz", False),               # a folder's name says nothing of the file
])
def test_label_names_match_whole_words_of_the_file_name(name, expected):
    assert io.named_like_labels(name) is expected
    vol = io.Volume(np.zeros((2, 2, 2), np.int16), path=name)
    limit = io.MAX_NAMED_LABEL_VALUES if expected else io.MAX_LABEL_VALUES
    assert io.label_value_limit(vol) == limit


def test_masked_image_with_a_few_hundred_values_is_not_a_label_map(tmp_path):
    """An 8-bit skull-stripped MRI of 238 grey values opened as 238 'classes'."""
    data = (np.arange(20 * 20 * 6) % 238).reshape(20, 20, 6).astype(np.int16)
    io.write_nifti(tmp_path / "breast1_image_masked.nii.gz", data)
    vol = io.read_volume(tmp_path / "breast1_image_masked.nii.gz")
    assert not io.looks_like_labels(vol.data, max_values=io.label_value_limit(vol))


def test_label_ids_past_int32_keep_their_values():
    ids = np.array([0, 7, 3_000_000_000], np.uint32)  # instance / connectomics ids
    out = io.as_label_array(ids)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, [0, 7, 3_000_000_000])
    small = io.as_label_array(np.array([0.0, 4.0, 2.0], np.float32))
    assert small.dtype == np.int32 and small.tolist() == [0, 4, 2]
    assert io.as_label_array(np.array([0, 65535], np.uint16)).dtype == np.int32
    with pytest.raises(ValueError, match=r"ids\.nii\.gz.*18446744073709551615.*renumber"):
        io.as_label_array(np.array([0, 2**64 - 1], np.uint64), path="ids.nii.gz")


@pytest.mark.parametrize("values, stored", [
    ((0, 5), np.int32),                  # other viewers read 64-bit NIfTI poorly
    ((0, 3_000_000_000), np.uint32),
    ((-1, 2**33), np.int64),             # wrapped to 0 before
])
def test_write_nifti_narrows_int64_only_when_the_values_fit(tmp_path, values, stored):
    import nibabel as nib

    data = np.array(values, np.int64).reshape(1, 1, 2)
    io.write_nifti(tmp_path / "big.nii.gz", data)
    img = nib.load(tmp_path / "big.nii.gz")
    assert img.get_data_dtype() == stored
    np.testing.assert_array_equal(np.asarray(img.dataobj).ravel(), values)


def test_colour_tagged_tiff(tmp_path):
    import tifffile

    rgb = np.zeros((8, 8, 3), np.uint8)
    tifffile.imwrite(tmp_path / "photo.tif", rgb, photometric="rgb")
    tifffile.imwrite(tmp_path / "stack.tif", rgb, photometric="minisblack")
    assert io.colour_tagged_tiff(tmp_path / "photo.tif")
    assert not io.colour_tagged_tiff(tmp_path / "stack.tif")
    assert not io.colour_tagged_tiff(tmp_path / "missing.tif")
    assert not io.colour_tagged_tiff(tmp_path / "photo.png")
