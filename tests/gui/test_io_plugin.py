"""npe2 reader/writer/sample data, used through a real napari viewer."""

import numpy as np
import pytest

from napari_medseg.core import io
from napari_medseg.gui.io_plugin import get_reader, read_nifti, write_image, write_labels


def test_reader_decides_image_vs_labels(nifti_case):
    assert get_reader(str(nifti_case["t1"])) is read_nifti
    assert get_reader("x.png") is None  # cannot be read: napari's own reader reports it
    assert get_reader("notes.txt") is None
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
    ("scan_masked.nii.gz", None, 112, "image"),    # skull-stripped: "mask" is not a word of it
    ("scan_mask.nii.gz", None, 112, "labels"),
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


def _oblique(angles_deg, spacing, origin):
    """A voxel-to-world affine tilted about x, y and z in turn."""
    from scipy.spatial.transform import Rotation

    aff = np.eye(4)
    aff[:3, :3] = (Rotation.from_euler("xyz", angles_deg, degrees=True).as_matrix()
                   @ np.diag(spacing))
    aff[:3, 3] = origin
    return aff


def test_oblique_time_series_is_placed_and_saved_with_its_whole_rotation(make_napari_viewer,
                                                                        tmp_path):
    """A tilted fMRI of 12 volumes kept only the rotation's diagonal: wrong place, bad save."""
    aff = _oblique([20, -15, 10], [0.8, 1.2, 3.0], [10.0, -20.0, 5.0])
    series = np.random.default_rng(0).normal(size=(6, 7, 5, 12)).astype(np.float32)
    path = io.write_nifti(tmp_path / "bold.nii.gz", series, aff)
    viewer = make_napari_viewer()
    layer, = viewer.open(path, plugin="napari-medseg")
    assert layer.data.shape == (12, 6, 7, 5)
    for ijk in ((3, 4, 2), (0, 0, 0), (5, 6, 4)):
        np.testing.assert_allclose(layer.data_to_world((7, *ijk))[1:], _world(aff, ijk),
                                   atol=1e-4)
    out = tmp_path / "bold_saved.nii.gz"
    viewer.layers.selection.active = layer
    viewer.layers.save(str(out), selected=True, plugin="napari-medseg")
    back = io.read_volume(out)
    np.testing.assert_allclose(back.affine, aff, atol=1e-5)
    np.testing.assert_array_equal(back.data, series)

    viewer._new_labels()  # a mask painted over the series lands in its place too
    painted = viewer.layers[-1]
    painted.data[2, 3, 4, 1] = 1
    viewer.layers.selection.active = painted
    viewer.layers.save(str(tmp_path / "painted.nii.gz"), selected=True, plugin="napari-medseg")
    np.testing.assert_allclose(io.read_volume(tmp_path / "painted.nii.gz").affine, aff,
                               atol=1e-5)


def test_four_d_label_maps_open_as_labels(tmp_path):
    """Three raters' masks stacked in one file: Labels the raters widget can use."""
    masks = np.zeros((10, 10, 6, 3), np.uint8)
    masks[2:6, 2:6, 1:4, :] = 1
    masks[2, 2, 1, 2] = 0
    layers = read_nifti(io.write_nifti(tmp_path / "raters.nii.gz", masks, np.eye(4)))
    assert [(kw["name"], kind) for _, kw, kind in layers] == [
        ("raters [0]", "labels"), ("raters [1]", "labels"), ("raters [2]", "labels")]
    np.testing.assert_array_equal(layers[2][0], masks[..., 2])
    assert layers[0][0].dtype == np.int32

    # more volumes than channel layers: one 4D Labels layer, saved back in the file's order
    many = np.repeat(masks[..., :1], 12, axis=3)
    (data, kw, kind), = read_nifti(io.write_nifti(tmp_path / "many.nii.gz", many, np.eye(4)))
    assert kind == "labels" and data.shape == (12, 10, 10, 6)
    out = write_labels(str(tmp_path / "back.nii.gz"), data, kw)
    np.testing.assert_array_equal(io.read_volume(out[0]).data, many)


def _rgb_png(path, rgb):
    import imageio.v3 as iio

    iio.imwrite(path, rgb, extension=".png")


def test_png_and_tiff_masks_open_as_labels(make_napari_viewer, tmp_path):
    """Through napari's own reader every mask was an Image no widget would take."""
    import tifffile
    from PIL import Image

    mask = np.zeros((12, 10), np.uint8)
    mask[3:7, 2:5] = 1
    pal = Image.fromarray(mask * 2, mode="P")  # a palette label map: indices 0 and 2
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    pal.save(tmp_path / "rater_pal.png")
    Image.fromarray(mask).save(tmp_path / "rater1.png")
    tifffile.imwrite(tmp_path / "nuclei.tif", np.stack([mask * k for k in (1, 2, 3)]),
                     photometric="minisblack")  # Z, Y, X slices, as io.write_raster stores them
    grey = np.random.default_rng(0).integers(0, 255, (12, 10)).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "cells.png")

    for name, values in (("rater_pal.png", {0, 2}), ("rater1.png", {0, 1}),
                         ("nuclei.tif", {0, 1, 2, 3})):
        reader = get_reader(str(tmp_path / name))
        (data, kw, kind), = reader(str(tmp_path / name))
        assert kind == "labels" and set(np.unique(data)) == values, name
        assert kw["name"] == name.rsplit(".", 1)[0]
    (data, _, kind), = get_reader(str(tmp_path / "cells.png"))(str(tmp_path / "cells.png"))
    assert kind == "image"
    np.testing.assert_array_equal(data, grey)

    viewer = make_napari_viewer()
    layer, = viewer.open(str(tmp_path / "rater1.png"), plugin="napari-medseg")
    assert layer.__class__.__name__ == "Labels"
    np.testing.assert_array_equal(layer.data, mask)


def test_colour_images_are_left_to_napari(make_napari_viewer, tmp_path):
    import tifffile

    rgb = np.zeros((40, 36, 3), np.uint8)  # napari guesses RGB from sides over 30 pixels
    rgb[..., 0] = 200
    _rgb_png(tmp_path / "photo.png", rgb)
    tifffile.imwrite(tmp_path / "photo.tif", rgb, photometric="rgb")
    assert get_reader(str(tmp_path / "photo.png")) is None
    assert get_reader(str(tmp_path / "photo.tif")) is None
    _rgb_png(tmp_path / "grey_as_rgb.png", np.repeat(rgb[..., :1], 3, axis=2))
    (_, _, kind), = get_reader(str(tmp_path / "grey_as_rgb.png"))("grey_as_rgb.png")
    assert kind == "labels"  # one value: a (blank) mask, read as grey
    viewer = make_napari_viewer()
    layer, = viewer.open(str(tmp_path / "photo.png"), plugin="napari")
    assert layer.rgb


def test_real_rater_and_nuclei_masks_open_as_labels():
    from tests.conftest import shared_data

    cells, nuclei = shared_data("bubil_cells") / "B01", shared_data("nuclei")
    expect = {cells / "raters" / "expert1_amira.png": "labels",
              cells / "gold_standard.png": "labels", cells / "crowd" / "crowd1.png": "labels",
              cells / "image.png": "image", nuclei / "mask2d.tif": "labels",
              nuclei / "mask3d.tif": "labels", nuclei / "img2d.tif": "image",
              nuclei / "img3d.tif": "image"}
    for path, want in expect.items():
        reader = get_reader(str(path))
        assert reader is not None, path
        (data, kw, kind), = reader(str(path))
        assert kind == want, path
        assert data.shape == io.read_spatial(path).data.shape


def test_sample_raters_name_their_own_classes(make_napari_viewer):
    """The raters' value 1 is the lesion; with the tissue names it showed as "csf"."""
    from napari_medseg.core.sample import PHANTOM_CLASSES
    from napari_medseg.gui.train_widget import TrainWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-medseg", "brain_phantom")
    rater = viewer.layers["rater 1"]
    assert set(np.unique(rater.data)) == {0, 1}
    assert rater.metadata["classes"] == {0: "background", 1: "lesion"}
    assert viewer.layers["phantom tissue"].metadata["classes"] == PHANTOM_CLASSES
    widget = TrainWidget(viewer)
    widget.labels_combo.setCurrentIndex(widget.labels_combo.findText("rater 1"))
    assert widget._class_names()[1] == "lesion"


def test_label_ids_past_int32_survive_reading_and_writing(tmp_path):
    import nibabel as nib

    ids = np.zeros((4, 4, 2), np.uint32)
    ids[0, 0, 0], ids[1, 1, 1] = 3_000_000_000, 7
    nib.save(nib.Nifti1Image(ids, np.eye(4)), tmp_path / "ids_seg.nii.gz")
    (data, kw, kind), = read_nifti(str(tmp_path / "ids_seg.nii.gz"))
    assert kind == "labels" and data[0, 0, 0] == 3_000_000_000 and data[1, 1, 1] == 7
    out = write_labels(str(tmp_path / "w.nii.gz"), data, kw)
    np.testing.assert_array_equal(io.read_volume(out[0]).data, ids)

    huge = np.zeros((2, 2, 2), np.int64)
    huge[0, 0, 0], huge[1, 1, 1] = -1, 2**40
    meta = {"scale": (1, 1, 1), "translate": (0, 0, 0), "metadata": {}}
    out = write_labels(str(tmp_path / "huge.nii.gz"), huge, meta)
    np.testing.assert_array_equal(io.read_volume(out[0]).data, huge)
    big = np.array([[[0, 2**33]]], np.int64)
    out = write_image(str(tmp_path / "big.nii.gz"), big, meta)
    np.testing.assert_array_equal(io.read_volume(out[0]).data, big)
    with pytest.raises(ValueError, match=r"frac\.nii\.gz.*whole numbers"):
        write_labels(str(tmp_path / "frac.nii.gz"), np.full((2, 2, 2), 0.5), meta)
