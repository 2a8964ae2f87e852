"""The Metrics widget in a real viewer: numbers equal the core's, overlays, plot clicks, edits."""

from __future__ import annotations

import csv
import time

import numpy as np
import pytest
from qtpy.QtCore import QPoint, Qt
from qtpy.QtGui import QImage

from napari_medseg.core import metrics as M
from napari_medseg.gui import layers as L
from napari_medseg.gui import metrics_compute as C
from napari_medseg.gui import metrics_table as T
from napari_medseg.gui.metrics_widget import OVERLAP_COLORS, MetricsWidget

LEFT = Qt.MouseButton.LeftButton
SCALE = (2.0, 1.0, 0.5)


def _labels_pair():
    """Reference: a box of label 1 on slices 2..9 and label 2 on slices 4..6; the prediction
    misses part of label 1 on slice 7 (the worst slice) and adds label 2 on slice 3."""
    ref = np.zeros((12, 20, 20), np.int32)
    ref[2:10, 4:14, 4:14] = 1
    ref[4:7, 15:19, 15:19] = 2
    pred = ref.copy()
    pred[7, 4:14, 4:10] = 0
    pred[5, 4:14, 4:6] = 0
    pred[3, 15:19, 15:19] = 2
    return pred, ref


def _viewer(make_napari_viewer, pred, ref):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros(ref.shape, np.float32), name="image", scale=SCALE)
    viewer.add_labels(ref.copy(), name="reference", scale=SCALE)  # napari keeps the array
    viewer.add_labels(pred.copy(), name="prediction", scale=SCALE)
    return viewer


def _widget(viewer, qtbot):
    w = MetricsWidget(viewer)
    viewer.window.add_dock_widget(w, name="metrics")
    n = len(viewer.layers)
    qtbot.wait(300)  # longer than the debounce: nothing happens before Compare
    assert len(viewer.layers) == n and w.seg is None and w.restore is None and w.plot_dock is None
    qtbot.mouseClick(w.compare_btn, LEFT)
    _settle(qtbot, w)
    return w


def _settle(qtbot, w, timeout=20000):
    qtbot.waitUntil(lambda: not w.busy and (w.seg is not None or w.restore is not None),
                    timeout=timeout)


def _col(w, name):
    return [T.cell_value(w.table, i, T.COL[name]) for i in range(w.table.rowCount())]


def test_segmentation_numbers_overlay_plot_and_slices(make_napari_viewer, qtbot):
    pred, ref = _labels_pair()
    viewer = _viewer(make_napari_viewer, pred, ref)
    w = _widget(viewer, qtbot)
    assert (w.pred_combo.currentText(), w.ref_combo.currentText()) == ("prediction", "reference")
    # the table: the core's numbers, distances in mm from the layer scale
    rep = M.evaluate_segmentation(pred, ref, spacing=SCALE)
    vd = M.volume_difference(pred, ref, spacing=SCALE)
    assert _col(w, "Label") == [1, 2]
    assert _col(w, "Dice") == [M.dice_per_class(pred, ref)[1], M.dice_per_class(pred, ref)[2]]
    assert _col(w, "Dice") == [rep["dice"]["1"], rep["dice"]["2"]]
    assert _col(w, "HD95 mm") == [rep["hd95_mm"]["1"], rep["hd95_mm"]["2"]]
    assert _col(w, "NSD") == [rep["nsd"]["1"], rep["nsd"]["2"]]
    assert _col(w, "ΔV ml") == [vd[1]["diff_ml"], vd[2]["diff_ml"]]
    assert _col(w, "ΔV %") == [vd[1]["relative"], vd[2]["relative"]]
    assert w.table.item(0, T.COL["Dice"]).text() == f"{rep['dice']['1']:.3f}"
    # the TP/FP/FN overlay, on the reference's grid, fixed colours
    ov = w.overlay_layer
    assert ov is not None and ov.name == "TP/FP/FN" and type(ov).__name__ == "Labels"
    np.testing.assert_array_equal(ov.data, M.overlap_map(pred, ref))
    assert (ov.data[7, 4:14, 4:10] == M.FN).all() and (ov.data[3, 15:19, 15:19] == M.FP).all()
    assert (ov.data[2] == M.TP).sum() == 100
    np.testing.assert_allclose(ov.scale, SCALE)
    for code in (M.TP, M.FP, M.FN):
        np.testing.assert_allclose(ov.colormap.map(np.array([code]))[0],
                                   ov.colormap.color_dict[code])
    assert ov.colormap.color_dict[M.FP][0] == pytest.approx(1.0)  # FP red
    # the plot: docked, one curve per class along the slider axis (0)
    assert w.plot_dock is not None and w.plot.n_slices == 12
    sd = M.per_slice_dice(pred, ref, axis=0)
    np.testing.assert_array_equal(w.plot.series[0][1], sd.dice[0])
    # clicking slice 5 on the plot shows slice 5
    qtbot.mouseClick(w.plot, LEFT, pos=QPoint(int(w.plot.x_of(5)), w.plot.height() // 2))
    assert L.displayed_index(viewer, viewer.layers["reference"], 0) == 5
    assert w.plot.current == 5
    here = sd.dice[:, 5]
    assert T.cell_value(w.table, 0, T.COL["Dice here"]) == pytest.approx(here[0])
    assert T.cell_value(w.table, 1, T.COL["Dice here"]) == pytest.approx(here[1])
    # worst slice: label 1 is worst on slice 7; all labels (mean): slice 3 (label 2 Dice 0)
    qtbot.mouseClick(w.worst_btn, LEFT)
    assert L.displayed_index(viewer, viewer.layers["reference"], 0) == 3 == M.worst_slice(sd)
    w.class_combo.setCurrentIndex(1)  # label 1
    _settle(qtbot, w)
    qtbot.mouseClick(w.worst_btn, LEFT)
    assert L.displayed_index(viewer, viewer.layers["reference"], 0) == 7
    np.testing.assert_array_equal(w.overlay_layer.data, M.overlap_map(pred, ref, label=1))
    assert w.overlay_layer is ov  # updated in place, not a new layer
    # transposing the view slices along another axis: new curves
    viewer.dims.order = (2, 0, 1)
    qtbot.waitUntil(lambda: w.seg is not None and w.seg.axis == 2 and not w.busy, timeout=10000)
    assert w.plot.n_slices == 20
    np.testing.assert_array_equal(w.plot.series[0][1], M.per_slice_dice(pred, ref, axis=2).dice[0])


def test_painting_a_correction_updates_dice(make_napari_viewer, qtbot):
    pred, ref = _labels_pair()
    viewer = _viewer(make_napari_viewer, pred, ref)
    w = _widget(viewer, qtbot)
    layer = viewer.layers["prediction"]
    before = T.cell_value(w.table, 0, T.COL["Dice"])
    layer.brush_size = 3
    layer.selected_label = 1
    t0 = time.perf_counter()
    layer.paint((7, 5, 5), 1)  # napari emits `paint` (and `labels_update`)
    qtbot.waitUntil(lambda: T.cell_value(w.table, 0, T.COL["Dice"]) != before, timeout=5000)
    latency = time.perf_counter() - t0
    assert latency < 2.0
    fixed = np.asarray(layer.data)
    assert fixed[7, 5, 5] == 1 and pred[7, 5, 5] == 0
    assert T.cell_value(w.table, 0, T.COL["Dice"]) == M.dice_per_class(fixed, ref)[1]
    _settle(qtbot, w)
    np.testing.assert_array_equal(w.overlay_layer.data, M.overlap_map(fixed, ref))
    rep = M.evaluate_segmentation(fixed, ref, spacing=SCALE)
    assert _col(w, "HD95 mm") == [rep["hd95_mm"]["1"], rep["hd95_mm"]["2"]]
    # new data for the whole layer: the `data` event
    layer.data = ref.copy()
    qtbot.waitUntil(lambda: _col(w, "Dice") == [1.0, 1.0], timeout=5000)
    _settle(qtbot, w)
    assert (w.overlay_layer.data != M.FN).all()


def test_restoration_readout_and_maps(make_napari_viewer, qtbot, tmp_path):
    rng = np.random.default_rng(0)
    clean = np.zeros((10, 32, 32), np.float32)
    clean[:, 8:24, 8:24] = 1.0
    noisy = (clean + rng.normal(0, 0.1, clean.shape)).astype(np.float32)
    viewer = make_napari_viewer()
    viewer.add_image(noisy, name="restored")
    viewer.add_image(clean, name="clean")
    w = _widget(viewer, qtbot)
    w.set_layers("restored", "clean")
    _settle(qtbot, w)
    ref = M.evaluate_restoration(noisy, clean, win_size=7)
    got = {key: T.cell_value(w.restore_table, i, 1) for i, (_, key, _) in enumerate(T.RESTORE_ROWS)}
    for key in ("psnr", "ssim", "nmse", "mae"):
        assert got[key] == pytest.approx(ref[key], rel=1e-12), key
    assert w.restore_table.isVisible() or not w.isVisible()
    _, smap = M.ssim(noisy, clean, data_range=ref["data_range"], win_size=7, full=True)
    np.testing.assert_allclose(w.ssim_layer.data, smap)
    np.testing.assert_allclose(w.error_layer.data, np.abs(noisy.astype(float) - clean), atol=1e-6)
    assert w.ssim_layer.colormap.name == "magma"
    assert tuple(w.ssim_layer.contrast_limits) == (0.0, 1.0)
    assert w.error_layer.colormap.name == "inferno"
    assert 0 < w.error_layer.contrast_limits[1] <= float(w.error_layer.data.max())
    # per-slice PSNR plot and the CSV with the CLI's columns
    assert w.plot.n_slices == 10
    rows = list(csv.DictReader(w.export_csv(tmp_path / "r.csv").open()))
    assert rows[0]["scope"] == "volume" and float(rows[0]["psnr_db"]) == ref["psnr"]
    assert len(rows) == 11 and rows[1]["scope"] == "slice"


def test_exports_and_layer_rules(make_napari_viewer, qtbot, tmp_path):
    pred, ref = _labels_pair()
    viewer = _viewer(make_napari_viewer, pred, ref)
    viewer.add_labels(np.zeros(ref.shape, np.uint8), name="TP/FP/FN")  # the user's own layer
    w = _widget(viewer, qtbot)
    assert w.overlay_layer.name == "TP/FP/FN [2]"
    assert not viewer.layers["TP/FP/FN"].data.any()  # never overwritten
    names = [w.pred_combo.itemText(i) for i in range(w.pred_combo.count())]
    assert "TP/FP/FN [2]" not in names and "TP/FP/FN" in names  # outputs are not inputs
    # CSV: the same rows as the CLI's, read back
    rows = list(csv.DictReader(w.export_csv(tmp_path / "m.csv").open()))
    vol = [r for r in rows if r["scope"] == "volume"]
    rep = M.evaluate_segmentation(pred, ref, spacing=SCALE)
    assert [float(r["dice"]) for r in vol] == [rep["dice"]["1"], rep["dice"]["2"]]
    assert [float(r["hd95_mm"]) for r in vol] == [rep["hd95_mm"]["1"], rep["hd95_mm"]["2"]]
    per = [r for r in rows if r["scope"] == "slice"]
    assert len(per) == 2 * 12
    sd = M.per_slice_dice(pred, ref, axis=0)
    assert float(per[7]["dice"]) == sd.dice[0, 7] and per[0]["dice"] == ""
    # PNG of the plot
    png = w.export_png(tmp_path / "p.png")
    img = QImage(str(png))
    assert (img.width(), img.height()) == (900, 320)
    colours = {img.pixel(x, y) for x in range(0, 900, 3) for y in range(0, 320, 3)}
    assert len(colours) > 8  # curves, axes and text were drawn on the background
    # a Labels and an Image layer: said in the widget
    w.set_layers("prediction", "image")
    qtbot.waitUntil(lambda: not w.busy, timeout=5000)
    assert "two Labels layers" in w.status.text()
    assert not w.table.isVisibleTo(w)
    w.set_layers("prediction", "reference")
    _settle(qtbot, w)
    assert w.table.isVisibleTo(w)


def test_overlap_colors_are_fixed():
    assert set(OVERLAP_COLORS) >= {None, M.NONE, M.TP, M.FP, M.FN, M.WRONG_CLASS}


def test_big_volume_path_runs_in_the_worker(make_napari_viewer, qtbot, monkeypatch):
    from napari_medseg.gui import metrics_compute as C

    monkeypatch.setattr(C, "SYNC_MAX_VOXELS", 0)  # every volume counts as big
    pred, ref = _labels_pair()
    viewer = _viewer(make_napari_viewer, pred, ref)
    w = _widget(viewer, qtbot)
    assert _col(w, "Dice") == list(M.dice_per_class(pred, ref).values())
    layer = viewer.layers["prediction"]
    # two quick edits: the first job's result is stale and dropped, the second one shows
    layer.paint((7, 5, 5), 1)
    w.recompute()
    layer.paint((7, 8, 5), 1)
    w.recompute()
    fixed = np.asarray(layer.data).copy()
    qtbot.waitUntil(lambda: not w.busy and _col(w, "Dice")[0] == M.dice_per_class(fixed, ref)[1],
                    timeout=10000)
    np.testing.assert_array_equal(w.overlay_layer.data, M.overlap_map(fixed, ref))
    rep = M.evaluate_segmentation(fixed, ref, spacing=SCALE)
    qtbot.waitUntil(lambda: not w.busy and _col(w, "HD95 mm") == [rep["hd95_mm"]["1"],
                                                                  rep["hd95_mm"]["2"]],
                    timeout=10000)


def test_widget_is_contributed_by_the_plugin(make_napari_viewer):
    from napari_medseg.gui.metrics_widget import MetricsWidget

    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-medseg", "Metrics")
    assert isinstance(widget, MetricsWidget)


def test_nsd_tolerance_is_the_users(make_napari_viewer, qtbot):
    """Changing the tolerance recomputes NSD with it (the default is 1 mm)."""
    pred, ref = _labels_pair()
    viewer = _viewer(make_napari_viewer, pred, ref)
    w = _widget(viewer, qtbot)
    tight = M.evaluate_segmentation(pred, ref, spacing=SCALE, tolerance_mm=1.0)["nsd"]
    assert _col(w, "NSD") == [tight["1"], tight["2"]]
    w.nsd_spin.setValue(4.0)
    qtbot.waitUntil(lambda: not w.busy and w.dist is not None and w.dist.tolerance_mm == 4.0,
                    timeout=20000)
    loose = M.evaluate_segmentation(pred, ref, spacing=SCALE, tolerance_mm=4.0)["nsd"]
    assert _col(w, "NSD") == [loose["1"], loose["2"]]
    assert loose["1"] > tight["1"]  # a wider tolerance forgives the missed strip
    assert "tolerance 4 mm" in w.status.text()


def test_closing_the_plot_panel_docks_a_new_one(make_napari_viewer, qtbot):
    """napari deletes a closed panel (deleteLater): the next recompute docks a new one."""
    from qtpy.QtCore import QCoreApplication, QEvent

    pred, ref = _labels_pair()
    viewer = _viewer(make_napari_viewer, pred, ref)
    w = _widget(viewer, qtbot)
    old = w.plot_dock
    old.title.close_button.click()  # the user closes the 'per-slice metrics' panel
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete.value)
    layer = viewer.layers["prediction"]
    layer.paint((7, 5, 5), 1)
    w.compare()  # raised RuntimeError (deleted C++ object) before the fix
    _settle(qtbot, w)
    assert w.plot_dock is not old
    assert w.plot_dock.isVisibleTo(viewer.window._qt_window)
    assert w.plot.parentWidget() is not None
    assert _col(w, "Dice")[0] == M.dice_per_class(np.asarray(layer.data), ref)[1]


def test_reused_outputs_follow_the_new_pairs_grid(make_napari_viewer, qtbot):
    """Another pair of the same shape elsewhere: the overlay moves onto its grid."""
    pred, ref = _labels_pair()
    viewer = _viewer(make_napari_viewer, pred, ref)
    w = _widget(viewer, qtbot)
    ov = w.overlay_layer
    viewer.add_labels(pred.copy(), name="pred B", scale=(3.0, 0.5, 0.5), translate=(100, 50, 50))
    viewer.add_labels(ref.copy(), name="ref B", scale=(3.0, 0.5, 0.5), translate=(100, 50, 50))
    w.set_layers("pred B", "ref B")
    qtbot.waitUntil(lambda: not w.busy and w.seg is not None, timeout=20000)
    assert w.overlay_layer is ov  # reused, not a new layer
    np.testing.assert_allclose(ov.scale, (3.0, 0.5, 0.5))
    np.testing.assert_allclose(ov.translate, (100, 50, 50))
    assert ov.metadata["spacing"] == (3.0, 0.5, 0.5)
    np.testing.assert_allclose(ov.metadata["affine"], L.layer_to_array(viewer.layers["ref B"],
                                                                        copy=False).affine)
    assert "medseg_metrics" in ov.metadata


def test_reused_restoration_maps_follow_the_new_pairs_grid(make_napari_viewer, qtbot):
    rng = np.random.default_rng(1)
    clean = rng.random((8, 24, 24)).astype(np.float32)
    viewer = make_napari_viewer()
    viewer.add_image(clean + 0.1, name="restored")
    viewer.add_image(clean, name="clean")
    viewer.add_image(clean + 0.2, name="restored B", scale=(2, 2, 2), translate=(5, 0, 0))
    viewer.add_image(clean, name="clean B", scale=(2, 2, 2), translate=(5, 0, 0))
    w = _widget(viewer, qtbot)
    w.set_layers("restored", "clean")
    _settle(qtbot, w)
    maps = (w.ssim_layer, w.error_layer)
    w.set_layers("restored B", "clean B")
    qtbot.waitUntil(lambda: not w.busy and w.restore is not None
                    and np.allclose(w.error_layer.data, 0.2, atol=1e-5), timeout=20000)
    assert (w.ssim_layer, w.error_layer) == maps
    for layer in maps:
        np.testing.assert_allclose(layer.scale, (2, 2, 2))
        np.testing.assert_allclose(layer.translate, (5, 0, 0))


@pytest.mark.parametrize("where", [{"scale": (2.0, 1.0, 1.0)}, {"translate": (0, 10, 0)}])
def test_one_shape_on_two_grids_is_refused(make_napari_viewer, qtbot, where):
    pred, ref = _labels_pair()
    viewer = _viewer(make_napari_viewer, pred, ref)
    w = _widget(viewer, qtbot)
    kw = {"scale": SCALE, **where}
    viewer.add_labels(ref.copy(), name="elsewhere", **kw)
    w.set_layers("prediction", "elsewhere")
    qtbot.waitUntil(lambda: not w.busy, timeout=10000)
    text = w.status.text()
    assert "'prediction'" in text and "'elsewhere'" in text and "one grid" in text
    assert str(tuple(float(s) for s in kw["scale"])) in text
    assert "ff7070" in w.status.styleSheet()  # red
    assert w.seg is None and w.dist is None and not w.table.isVisibleTo(w)
    assert not w.csv_btn.isEnabled() and not w.overlay_layer.visible
    # the same grid again: numbers, overlay and export come back
    w.set_layers("prediction", "reference")
    _settle(qtbot, w)
    assert w.table.isVisibleTo(w) and w.csv_btn.isEnabled() and w.overlay_layer.visible


def test_a_shape_mismatch_clears_the_previous_results(make_napari_viewer, qtbot, tmp_path):
    pred, ref = _labels_pair()
    viewer = _viewer(make_napari_viewer, pred, ref)
    w = _widget(viewer, qtbot)
    viewer.add_labels(np.ones((12, 20, 19), np.int32), name="other case", scale=SCALE)
    w.set_layers("prediction", "other case")
    qtbot.waitUntil(lambda: not w.busy, timeout=10000)
    assert "differ in shape" in w.status.text() and "ff7070" in w.status.styleSheet()
    assert not w.table.isVisibleTo(w)
    assert not w.csv_btn.isEnabled() and not w.png_btn.isEnabled()
    assert not w.overlay_layer.visible
    assert w.plot.n_slices == 0
    with pytest.raises(ValueError, match="Nothing to export"):
        w.export_csv(tmp_path / "stale.csv")


def test_worker_errors_reach_the_status_line(make_napari_viewer, qtbot, monkeypatch):
    from napari_medseg.gui import workers

    monkeypatch.setattr(workers, "show_error", lambda msg: None)  # no notification popups
    rng = np.random.default_rng(0)
    viewer = make_napari_viewer()
    viewer.add_image(rng.random((2, 40)).astype(np.float32), name="tiny pred")
    viewer.add_image(rng.random((2, 40)).astype(np.float32), name="tiny ref")
    w = MetricsWidget(viewer)
    viewer.window.add_dock_widget(w, name="metrics")
    w.set_layers("tiny pred", "tiny ref")
    qtbot.waitUntil(lambda: not w.busy and "SSIM…" not in w.status.text(), timeout=10000)
    assert "too small for SSIM" in w.status.text()
    assert "ff7070" in w.status.styleSheet()
    assert not w.csv_btn.isEnabled()


def test_surface_distance_errors_reach_the_status_line(make_napari_viewer, qtbot, monkeypatch):
    from napari_medseg.gui import workers

    monkeypatch.setattr(workers, "show_error", lambda msg: None)
    pred, ref = _labels_pair()
    viewer = _viewer(make_napari_viewer, pred, ref)
    w = _widget(viewer, qtbot)

    def broken(*a, **k):
        raise MemoryError("no room for the distance transform")

    monkeypatch.setattr(M, "evaluate_segmentation", broken)
    w.compare()
    qtbot.waitUntil(lambda: not w.busy and "failed" in w.status.text(), timeout=10000)
    assert "no room for the distance transform" in w.status.text()
    assert "ff7070" in w.status.styleSheet()
    assert w.table.isVisibleTo(w)  # the Dice column is still right


def test_label_set_is_found_in_the_worker_not_the_gui_thread(make_napari_viewer, qtbot,
                                                             monkeypatch):
    """A full np.unique of both volumes held the GUI ~0.2 s per stroke on a BraTS volume."""
    import threading

    from napari_medseg.gui import metrics_compute as C

    monkeypatch.setattr(C, "SYNC_MAX_VOXELS", 0)  # every volume counts as big
    pred, ref = _labels_pair()
    viewer = _viewer(make_napari_viewer, pred, ref)
    w = _widget(viewer, qtbot)
    viewer.layers["prediction"].paint((7, 5, 5), 1)
    calls = []
    real = np.unique

    def spy(*a, **k):
        calls.append(threading.current_thread() is threading.main_thread())
        return real(*a, **k)

    monkeypatch.setattr(np, "unique", spy)
    w.recompute()
    in_gui = list(calls)
    _settle(qtbot, w)
    qtbot.waitUntil(lambda: not w.busy, timeout=10000)
    monkeypatch.setattr(np, "unique", real)
    assert not any(in_gui)  # recompute() itself: no pass over the volumes
    assert calls.count(False) >= 2  # the distance job found the labels
    fixed = np.asarray(viewer.layers["prediction"].data)
    rep = M.evaluate_segmentation(fixed, ref, spacing=SCALE)
    assert _col(w, "HD95 mm") == [rep["hd95_mm"]["1"], rep["hd95_mm"]["2"]]


def test_renaming_the_compared_layers_keeps_them_compared(make_napari_viewer, qtbot):
    pred, ref = _labels_pair()
    viewer = _viewer(make_napari_viewer, pred, ref)
    w = _widget(viewer, qtbot)
    viewer.layers["reference"].name = "reference (Jo)"
    viewer.layers["prediction"].name = "model 3 prediction"
    assert (w.pred_combo.currentText(), w.ref_combo.currentText()) == \
        ("model 3 prediction", "reference (Jo)")
    qtbot.mouseClick(w.compare_btn, LEFT)
    _settle(qtbot, w)
    assert _col(w, "Dice") == [M.dice_per_class(pred, ref)[1], M.dice_per_class(pred, ref)[2]]


def test_a_sparse_reference_is_scored_on_its_labelled_slices_only(make_napari_viewer, qtbot):
    """A perfect prediction against labels painted on 3 slices: Dice 1 when the widget is
    told the reference is sparse; scored densely, every unpainted slice is a false positive."""
    pred, _ = _labels_pair()
    painted = np.zeros_like(pred)
    painted[:, :, [6, 10, 16]] = pred[:, :, [6, 10, 16]]  # painted along axis 2
    viewer = _viewer(make_napari_viewer, pred, painted)
    w = _widget(viewer, qtbot)
    dense = _col(w, "Dice")
    assert dense == [M.dice_per_class(pred, painted)[1], M.dice_per_class(pred, painted)[2]]
    assert max(dense) < 0.5
    w.sparse_check.setChecked(True)
    qtbot.waitUntil(lambda: not w.busy and w.seg is not None and bool(w.seg.scored),
                    timeout=10000)
    qtbot.waitUntil(lambda: _col(w, "HD95 mm")[0] is not None, timeout=10000)
    assert _col(w, "Dice") == [1.0, 1.0]
    assert _col(w, "HD95 mm") == [0.0, 0.0]
    assert "3 of 20 slices (axis 2)" in w.status.text()
    assert not (w.overlay_layer.data == M.FP).any()
    # -1 voxels of the reference are left out too
    ref = pred.copy()
    ref[:, :, :5] = -1
    wrong = pred.copy()
    wrong[:, :, :5] = 0
    p, r, said = C.labelled_part(wrong, ref)
    assert M.dice_per_class(p, r)[1] == 1.0 and (r >= 0).all() and said


def test_unlabelled_reference_voxels_are_never_a_class():
    """With 'some slices only' unticked (the default), -1 in the reference was scored as a
    class of its own (Dice 0, HD95 inf) and the prediction's voxels there as false
    positives of class 1 (Dice 0.8), where ``napari-medseg evaluate`` gives 1.0."""
    ref = np.zeros((8, 10, 12), np.int32)
    ref[2:6, 3:7, 2:10] = 1
    pred = ref.copy()
    ref[:, :, :4] = -1  # nobody labelled these: the prediction's class 1 there is no error
    part = C.overlap_part(pred, ref, spacing=(1.0, 1.0, 1.0), axis=2, map_label=None)
    assert part.labels == (1,) and part.volume_dice == {1: 1.0}
    assert "unlabelled (-1)" in part.scored
    dist = _run_job(C.distance_job(pred, ref, spacing=(1.0, 1.0, 1.0), tolerance_mm=1.0,
                                   token=0))
    assert dist.report["dice"] == {"1": 1.0} and dist.report["hd95_mm"] == {"1": 0.0}


def _run_job(factory):
    gen = factory(lambda: False)
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        return stop.value


def test_sparse_axis_of_a_small_structure_and_a_dense_reference_warning():
    """A tumour painted on every 2nd axial slice was taken as painted along another axis (it
    spans fewer rows than the volume has slices); a dense reference hid its false positives
    without a word."""
    ref = np.zeros((60, 60, 40), np.int32)
    ref[20:34, 22:36, 10:26] = 1
    painted = ref.copy()
    painted[:, :, 1::2] = 0
    pred = ref.copy()
    p, r, said = C.labelled_part(pred, painted)
    assert "(axis 2)" in said and "fully labelled" not in said
    assert M.dice_per_class(p, r)[1] == 1.0  # a perfect prediction scores perfect
    _, _, said = C.labelled_part(pred, ref)
    assert "looks fully labelled" in said


def test_sparse_axis_on_a_short_axis():
    """Every 2nd slice along a short axis: the fraction of all slices holding labels (0.375)
    exceeded that of a wide axis the structure barely spans (0.25), which was chosen."""
    ref = np.zeros((80, 240, 40), np.int32)
    ref[10:70, 90:150, 5:35] = 1
    painted = ref.copy()
    painted[:, :, 1::2] = 0
    p, r, said = C.labelled_part(ref, painted)
    assert "(axis 2)" in said and M.dice_per_class(p, r)[1] == 1.0


def test_2d_layers_show_areas_not_volumes(make_napari_viewer, qtbot, tmp_path):
    """A 2D pair's sizes were shown as 'Vol pred ml' (pixel area / 1000): they are areas."""
    pred3, ref3 = _labels_pair()
    pred, ref = pred3[5], ref3[5]
    viewer = make_napari_viewer()
    viewer.add_labels(ref.copy(), name="reference", scale=(0.5, 0.5))
    viewer.add_labels(pred.copy(), name="prediction", scale=(0.5, 0.5))
    w = _widget(viewer, qtbot)
    # no per-slice panel: it was docked empty ("no slices") for a 2D pair
    assert w.plot_dock is None or not w.plot_dock.isVisible()
    heads = [w.table.horizontalHeaderItem(c).text() for c in range(w.table.columnCount())]
    assert "Area pred mm²" in heads and "ΔA mm²" in heads and not any("ml" in h for h in heads)
    vd = M.volume_difference(pred, ref, spacing=(0.5, 0.5))
    assert _col(w, "Vol ref ml") == [vd[1]["ref_mm2"], vd[2]["ref_mm2"]]
    assert _col(w, "Vol ref ml")[0] == 0.25 * int((ref == 1).sum())
    with open(w.export_csv(tmp_path / "m.csv"), newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert float(rows[0]["ref_mm2"]) == vd[1]["ref_mm2"] and "ref_ml" not in rows[0]
