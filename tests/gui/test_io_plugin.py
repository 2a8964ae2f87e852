"""npe2 reader/writer/sample data, used through a real napari viewer."""

import numpy as np
import pytest

from napari_medseg.core import io
from napari_medseg.gui.io_plugin import get_reader, read_nifti, write_image, write_labels


def test_reader_decides_image_vs_labels(nifti_case):
    assert get_reader(str(nifti_case["t1"])) is read_nifti
    assert get_reader("x.png") is None
    (img_data, img_kw, img_type), = read_nifti(str(nifti_case["t1"]))
    (lab_data, lab_kw, lab_type), = read_nifti(str(nifti_case["labels"]))
    assert img_type == "image" and lab_type == "labels"
    assert lab_data.dtype == np.int32 and set(np.unique(lab_data)) <= {0, 1, 2, 3, 4}
    assert img_kw["scale"] == pytest.approx((1.0, 1.0, 1.5))
    assert img_kw["translate"] == pytest.approx((-20.0, 10.0, 5.0))
    np.testing.assert_allclose(img_kw["metadata"]["affine"], nifti_case["affine"])


def test_viewer_opens_nifti_with_spacing_and_saves_back(make_napari_viewer, nifti_case, tmp_path):
    viewer = make_napari_viewer()
    viewer.open(str(nifti_case["labels"]), plugin="napari-medseg")
    layer = viewer.layers["labels"]
    assert layer.__class__.__name__ == "Labels"
    np.testing.assert_allclose(layer.scale, (1.0, 1.0, 1.5))
    np.testing.assert_allclose(layer.translate, (-20.0, 10.0, 5.0))
    out = tmp_path / "saved.nii.gz"
    viewer.layers.save(str(out), selected=False, plugin="napari-medseg")
    vol = io.read_volume(out)
    np.testing.assert_allclose(vol.affine, nifti_case["affine"])
    np.testing.assert_array_equal(vol.data, layer.data)


def test_writer_builds_affine_from_scale_when_metadata_is_gone(tmp_path):
    data = np.zeros((4, 5, 6), np.int32)
    data[1, 2, 3] = 7
    write_labels(str(tmp_path / "l.nii.gz"), data, {"scale": (2.0, 3.0, 4.0),
                                                   "translate": (1.0, 0.0, -1.0), "metadata": {}})
    vol = io.read_volume(tmp_path / "l.nii.gz")
    assert vol.spacing == pytest.approx((2.0, 3.0, 4.0))
    assert vol.origin == pytest.approx((1.0, 0.0, -1.0))
    assert vol.data[1, 2, 3] == 7


def test_sample_data_opens_in_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-medseg", "brain_phantom")
    names = [layer.name for layer in viewer.layers]
    assert names[:3] == ["phantom T1", "phantom FLAIR", "phantom tissue"]
    assert sum(n.startswith("rater") for n in names) == 3
    tissue = viewer.layers["phantom tissue"]
    assert set(np.unique(tissue.data)) == {0, 1, 2, 3, 4}
    np.testing.assert_allclose(tissue.scale, (1.0, 1.0, 1.5))


def test_demo_viewer_opens_with_sample_layers(qtbot):
    from napari_medseg.gui.launch import open_demo_viewer

    viewer = open_demo_viewer(run=False)
    try:
        assert "phantom T1" in viewer.layers and "phantom tissue" in viewer.layers
        docks = set(viewer.window._dock_widgets)
        assert {"Train segmentation", "Predict segmentation", "Compare raters", "Restoration",
                "Metrics"} <= docks
    finally:
        viewer.close()


FLIP = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 39.0], [0, 0, 2.0, -4.0], [0, 0, 0, 1]])
_C, _S = np.cos(np.radians(10)), np.sin(np.radians(10))
OBLIQUE = np.eye(4)  # tilted 10 degrees about z, and flipped in x
OBLIQUE[:3, :3] = np.array([[_C, -_S, 0], [_S, _C, 0], [0, 0, 1]]) @ np.diag([-0.9, 0.9, 3.0])
OBLIQUE[:3, 3] = (-80.0, -90.0, -40.0)


def _world(aff, ijk):
    return (np.asarray(aff) @ np.r_[ijk, 1.0])[:3]


@pytest.mark.parametrize("affine", [FLIP, OBLIQUE], ids=["flipped", "oblique"])
def test_flipped_file_new_labels_layer_saves_in_the_image_place(make_napari_viewer, tmp_path,
                                                                affine):
    """BraTS' diag(-1, -1, 1) or a tilted acquisition survives napari's New labels and a save."""
    img = np.random.default_rng(0).normal(size=(40, 40, 6)).astype(np.float32)
    path = io.write_nifti(tmp_path / "flair.nii.gz", img, affine)
    (_, kw, kind), = read_nifti(path)
    assert kind == "image" and kw["scale"] == pytest.approx(io.spacing_from_affine(affine))
    np.testing.assert_allclose(kw["rotate"], affine[:3, :3] / kw["scale"], atol=1e-6)
    viewer = make_napari_viewer()
    viewer.open(path, plugin="napari-medseg")
    image = viewer.layers["flair"]
    np.testing.assert_allclose(image.data_to_world((3, 4, 5)), _world(affine, (3, 4, 5)),
                               atol=1e-4)
    viewer.layers.selection.active = image
    viewer._new_labels()  # what the layer list's "New labels" button does
    painted = viewer.layers[-1]
    assert "affine" not in painted.metadata  # napari copies the transform, not our metadata
    painted.data[3, 4, 5] = 2
    out = tmp_path / "painted.nii.gz"
    viewer.layers.selection.active = painted
    viewer.layers.save(str(out), selected=True, plugin="napari-medseg")
    vol = io.read_volume(out)
    np.testing.assert_allclose(vol.affine, affine, atol=1e-5)
    assert vol.data[3, 4, 5] == 2

    # moved by the user: the flip stays, the move is saved
    image.translate = (image.translate[0], image.translate[1], image.translate[2] + 2.0)
    moved = tmp_path / "moved.nii.gz"
    viewer.layers.selection.active = image
    viewer.layers.save(str(moved), selected=True, plugin="napari-medseg")
    aff = io.read_volume(moved).affine
    np.testing.assert_allclose(_world(aff, (3, 4, 5)), _world(affine, (3, 4, 5)) + [0, 0, 2.0],
                               atol=1e-4)


def test_axis_permuting_file_is_shown_on_its_voxel_grid(tmp_path):
    """A sagittal acquisition stored i -> z: napari's slider would cut across its slices."""
    perm = np.array([[0, 0, 1.0, 0], [1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 1]])
    (_, kw, _), = read_nifti(io.write_nifti(tmp_path / "sag.nii.gz",
                                            np.ones((4, 5, 6), np.float32), perm))
    assert "rotate" not in kw and kw["scale"] == pytest.approx((1.0, 1.0, 1.0))
    np.testing.assert_allclose(kw["metadata"]["affine"], perm)


def test_files_of_one_place_in_other_orientations_overlay(tmp_path):
    """The same mask stored RAS and LAS lands on the same world voxel."""
    from napari.layers import Labels

    ras = np.diag([1.0, 1.0, 1.0, 1.0])
    las = np.array([[-1.0, 0, 0, 9.0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1]])
    m = np.zeros((10, 6, 4), np.uint8)
    m[2, 3, 1] = 1
    worlds = []
    for name, aff, data in (("ras", ras, m), ("las", las, m[::-1])):
        (d, kw, _), = read_nifti(io.write_nifti(tmp_path / f"{name}_mask.nii.gz", data, aff))
        layer = Labels(d, **{k: v for k, v in kw.items() if k != "name"})
        worlds.append(layer.data_to_world(np.argwhere(d)[0]))
    np.testing.assert_allclose(worlds[0], worlds[1])


def test_four_d_files_open_as_channels_or_as_a_time_series(tmp_path):
    rng = np.random.default_rng(1)
    aff = np.diag([0.8, 0.8, 2.0, 1.0])
    probs = rng.random((8, 8, 5, 3)).astype(np.float32)
    layers = read_nifti(io.write_nifti(tmp_path / "probs.nii.gz", probs, aff))
    assert [kw["name"] for _, kw, _ in layers] == ["probs [0]", "probs [1]", "probs [2]"]
    np.testing.assert_array_equal(layers[2][0], probs[..., 2])
    assert layers[0][1]["scale"] == pytest.approx((0.8, 0.8, 2.0))

    series = rng.random((8, 8, 5, 12)).astype(np.float32)
    (data, kw, kind), = read_nifti(io.write_nifti(tmp_path / "fmri.nii.gz", series, aff))
    assert kind == "image" and data.shape == (12, 8, 8, 5)
    assert kw["scale"] == pytest.approx((1.0, 0.8, 0.8, 2.0))
    out = write_image(str(tmp_path / "back.nii.gz"), data, {**kw, "metadata": kw["metadata"]})
    back = io.read_volume(out[0])
    np.testing.assert_array_equal(back.data, series)
    np.testing.assert_allclose(back.affine, aff)


@pytest.mark.parametrize("name, intent, n_values, expected", [
    ("totalseg.nii.gz", "label", 118, "labels"),   # intent says label map: hundreds allowed
    ("aparc+aseg.nii.gz", None, 112, "labels"),    # named like a parcellation
    ("scan.nii.gz", None, 112, "image"),           # nothing says label map: an image
    ("scan.nii.gz", None, 40, "labels"),
])
def test_label_maps_with_many_values(tmp_path, name, intent, n_values, expected):
    import nibabel as nib

    data = (np.arange(20 * 20 * 6) % n_values).reshape(20, 20, 6).astype(np.uint8)
    img = nib.Nifti1Image(data, np.eye(4))
    if intent:
        img.header.set_intent(intent)
    nib.save(img, tmp_path / name)
    (_, _, kind), = read_nifti(str(tmp_path / name))
    assert kind == expected


def test_scaled_mask_opens_as_labels(tmp_path):
    """BraTS brainmask.nii.gz: int32, slope 2.3e-10, intercept 0.5: 1 is stored as 0.99999997."""
    import nibabel as nib

    raw = np.full((6, 6, 4), -2147483648, np.int32)
    raw[2:4, 2:4, 1:3] = 2147483647
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_slope_inter(2.3283064e-10, 0.5)
    nib.save(img, tmp_path / "brainmask.nii.gz")
    (data, _, kind), = read_nifti(str(tmp_path / "brainmask.nii.gz"))
    assert kind == "labels" and data.dtype == np.int32
    assert set(np.unique(data)) == {0, 1} and data[2, 2, 1] == 1


def test_rgb_layer_is_not_written_as_nifti(tmp_path):
    with pytest.raises(ValueError, match="RGB layer.*png"):
        write_image(str(tmp_path / "rgb.nii.gz"), np.zeros((4, 4, 3), np.uint8),
                    {"rgb": True, "name": "photo", "scale": (1, 1), "translate": (0, 0)})


def test_saving_an_opened_file_keeps_its_header_spaces(make_napari_viewer, tmp_path):
    import nibabel as nib

    mni = np.array([[-2.0, 0, 0, 90], [0, 2.0, 0, -126], [0, 0, 2.0, -72], [0, 0, 0, 1]])
    img = nib.Nifti1Image(np.arange(210, dtype=np.float32).reshape(5, 6, 7), None)
    img.header.set_sform(mni, code=4)
    img.header.set_qform(mni, code=1)
    nib.save(img, tmp_path / "t1_mni.nii.gz")
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "t1_mni.nii.gz"), plugin="napari-medseg")
    viewer.layers.save(str(tmp_path / "saved.nii.gz"), selected=False, plugin="napari-medseg")
    out = nib.load(tmp_path / "saved.nii.gz").header
    assert int(out["sform_code"]) == 4 and out.get_xyzt_units()[0] == "mm"
    np.testing.assert_allclose(out.get_best_affine(), mni)


@pytest.mark.parametrize("values, dtype", [((0, 1), np.uint8), ((-1, 0, 4), np.int16),
                                           ((0, 300), np.int16), ((0, 40000), np.int32)])
def test_labels_are_saved_in_the_smallest_type(tmp_path, values, dtype):
    data = np.zeros((4, 4, 3), np.int32)
    data.flat[: len(values)] = values
    out = write_labels(str(tmp_path / "l.nii.gz"), data, {"scale": (1, 1, 1),
                                                        "translate": (0, 0, 0), "metadata": {}})
    vol = io.read_volume(out[0])
    assert vol.data.dtype == dtype
    np.testing.assert_array_equal(vol.data, data)
