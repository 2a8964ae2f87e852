"""npe2 reader/writer/sample data, used through a real napari viewer."""

import numpy as np
import pytest

from napari_medseg.core import io
from napari_medseg.gui.io_plugin import get_reader, read_nifti, write_labels


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
