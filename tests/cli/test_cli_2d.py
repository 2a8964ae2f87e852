"""2D images (microscopy: PNG, TIFF stacks) through the reader and the commands.

Each test reproduces a defect a review of the 2D workflows found: palette label maps and
colour images read as 3-slice volumes, predictions with values above 255 that PNG could
not hold, an instance mask trained as 126 classes, 2D multi-label probabilities written
with the classes on a spatial axis, and TIFF stacks (Z,Y,X) sliced along X.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from napari_medseg import cli
from napari_medseg.core import io

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _blobs(n=3, size=(40, 48)):
    """A 2D label map with ``n`` separate square objects (values 1..n) and an image of them."""
    lab = np.zeros(size, np.uint8)
    for k in range(n):
        y, x = 4 + (k % 4) * 9, 4 + (k // 4) * 9
        lab[y:y + 6, x:x + 6] = k + 1
    rng = np.random.default_rng(0)
    img = (60 + 120 * (lab > 0) + rng.normal(0, 8, size)).clip(0, 255).astype(np.uint8)
    return img, lab


def test_palette_png_labels_read_as_their_indices(tmp_path):
    _, lab = _blobs()
    im = Image.fromarray(lab, mode="P")
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 12))
    im.save(tmp_path / "mask.png")
    vol = io.read_spatial(tmp_path / "mask.png")
    assert vol.data.shape == lab.shape
    np.testing.assert_array_equal(vol.data, lab)


def test_colour_images_are_refused_and_alpha_dropped(tmp_path):
    img, _ = _blobs()
    rgb = np.stack([img, img // 2, 255 - img], axis=-1)
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="colour \\(RGB\\) image"):
        io.read_spatial(tmp_path / "rgb.png")
    grey_alpha = np.stack([img, np.full_like(img, 255)], axis=-1)
    Image.fromarray(grey_alpha, mode="LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(io.read_spatial(tmp_path / "la.png").data, img)
    rgba = np.stack([img, img, img, np.full_like(img, 255)], axis=-1)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(io.read_spatial(tmp_path / "rgba.png").data, img)


def test_png_holds_label_values_up_to_65535(tmp_path):
    lab = np.zeros((8, 9), np.int32)
    lab[2:5, 3:6] = 1000
    io.write_volume(tmp_path / "l.png", lab, np.eye(4))
    back = io.read_spatial(tmp_path / "l.png").data
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, lab)
    with pytest.raises(ValueError, match="0..65535"):
        io.write_volume(tmp_path / "big.png", lab * 100, np.eye(4))


def test_an_instance_mask_is_refused_for_training_naming_the_fix(tmp_path, capsys):
    img, lab = _blobs(n=70, size=(48, 170))
    Image.fromarray(img).save(tmp_path / "img.png")
    Image.fromarray(lab).save(tmp_path / "instances.png")
    rc = cli.main(["train", "--image", str(tmp_path / "img.png"), "--label",
                   str(tmp_path / "instances.png"), "--out", str(tmp_path / "m.pt"),
                   "--epochs", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "instances.png holds 70 foreground label values" in err
    assert "binarise" in err and not (tmp_path / "m.pt").exists()


def test_2d_multilabel_rater_probabilities_keep_the_classes_on_the_4th_axis(tmp_path):
    _, lab = _blobs(n=2)
    raters = [lab, np.roll(lab, 1, axis=0), np.roll(lab, 1, axis=1)]
    paths = []
    for j, r in enumerate(raters):  # PNG raters: 2D arrays (NIfTI ones are X x Y x 1)
        Image.fromarray(r.astype(np.uint8)).save(tmp_path / f"r{j}.png")
        paths.append(str(tmp_path / f"r{j}.png"))
    prob = tmp_path / "p.nii.gz"
    assert cli.main(["raters", "--label", *paths, "--out", str(tmp_path / "c.nii.gz"),
                     "--probabilities", str(prob)]) == 0
    assert io.read_volume(prob).data.shape == (*lab.shape, 1, 3)


def test_a_2d_model_slices_a_tiff_stack_along_the_axis_asked(tmp_path, capsys):
    import tifffile

    img, lab = _blobs(n=2)
    lab = (lab > 0).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "img.png")
    Image.fromarray(lab).save(tmp_path / "lab.png")
    model = tmp_path / "m.pt"
    assert cli.main(["train", "--image", str(tmp_path / "img.png"), "--label",
                     str(tmp_path / "lab.png"), "--out", str(model), "--epochs", "1",
                     "--steps-per-epoch", "2", "--width", "4", "--depth", "2",
                     "--device", "cpu"]) == 0
    stack = np.stack([img, img, img])  # Z, Y, X
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    out = tmp_path / "pred.tif"
    assert cli.main(["predict", "--model", str(model), "--image", str(tmp_path / "stack.tif"),
                     "--out", str(out), "--no-tta"]) == 0
    said = capsys.readouterr().out
    assert "slices along axis 2 (48 slices)" in said and "--slice-axis 0" in said
    assert cli.main(["predict", "--model", str(model), "--image", str(tmp_path / "stack.tif"),
                     "--out", str(out), "--no-tta", "--slice-axis", "0"]) == 0
    assert "slices along axis 0 (3 slices)" in capsys.readouterr().out
    pred = io.read_spatial(out).data
    assert pred.shape == stack.shape
    # along Z every plane is the same 2D image, so every plane gets the same labels
    np.testing.assert_array_equal(pred[0], pred[1])
    np.testing.assert_array_equal(pred[0], pred[2])


def test_grey_palette_pngs_and_3_slice_tiffs_keep_their_values(tmp_path):
    """Found by the review of the first fix: a grey image stored with a palette read as
    palette indices, and a (Y, X, 3) TIFF volume -- our own output -- refused as colour."""
    img, _ = _blobs()
    grey_pal = Image.fromarray(img).quantize(colors=64)
    grey_pal.putpalette([v for g in range(256) for v in (255 - g,) * 3])  # inverted grey
    grey_pal.save(tmp_path / "grey_pal.png")
    back = io.read_spatial(tmp_path / "grey_pal.png").data
    np.testing.assert_array_equal(back, np.asarray(Image.open(tmp_path / "grey_pal.png")
                                                   .convert("L")))
    vol = np.stack([img, img // 2, img // 3], axis=-1).astype(np.float32)
    io.write_volume(tmp_path / "v.tif", vol, np.eye(4))
    np.testing.assert_array_equal(io.read_spatial(tmp_path / "v.tif").data, vol)


def test_raters_foreground_view_accepts_unlabelled_values(tmp_path):
    _, lab = _blobs(n=2)
    raters = [lab.astype(np.int16), np.roll(lab, 1, axis=0).astype(np.int16)]
    raters[1][:3] = -1
    paths = [io.write_nifti(tmp_path / f"r{j}.nii.gz", r[..., None], np.eye(4))
             for j, r in enumerate(raters)]
    assert cli.main(["raters", "--label", *paths, "--foreground", "1",
                     "--out", str(tmp_path / "c.nii.gz")]) == 0
