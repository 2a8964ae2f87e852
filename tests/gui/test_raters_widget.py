"""The raters widget, clicked in a real viewer: layers, heat map, table, click-to-highlight."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_medseg.core import raters as R
from napari_medseg.core.sample import brain_phantom
from napari_medseg.gui.raters_compare import deviation_map
from napari_medseg.gui.raters_tables import heat_color
from napari_medseg.gui.raters_widget import (
    EXTRA,
    MAJORITY,
    MISSED,
    OTHER,
    RatersWidget,
)

LEFT = Qt.MouseButton.LeftButton
SCALE = (1.0, 1.0, 1.5)
TRANSLATE = (5.0, -3.0, 2.0)
OUTPUTS = ["consensus (STAPLE)", "STAPLE probability", "vote fraction", "vote entropy",
           "rater disagreement"]


@pytest.fixture(scope="module")
def phantom():
    return brain_phantom(shape=(32, 32, 16), seed=0, n_raters=3)


def _viewer(make_napari_viewer, ph):
    viewer = make_napari_viewer()
    common = {"scale": SCALE, "translate": TRANSLATE}
    viewer.add_image(ph.t1, name="T1", **common)
    viewer.add_labels(ph.labels.astype(np.int32), name="tissue", **common)
    for k, r in enumerate(ph.raters, 1):
        viewer.add_labels(r, name=f"rater {k}", **common)
    return viewer


def _widget(viewer):
    w = RatersWidget(viewer)
    viewer.window.add_dock_widget(w, name="raters")
    return w


def _run(qtbot, w, n=5):
    start = len(w.last_layers) and w.last_layers[0]
    qtbot.mouseClick(w.compare_btn, LEFT)
    qtbot.waitUntil(lambda: not w.busy and len(w.last_layers) == n
                    and w.last_layers[0] is not start, timeout=30000)
    assert w.compare_btn.isEnabled()


def _click_row(qtbot, table, row, col=0):
    rect = table.visualItemRect(table.item(row, col))
    qtbot.mouseClick(table.viewport(), LEFT, pos=rect.center())


def test_compare_layers_heat_map_table_and_highlight(make_napari_viewer, qtbot, phantom):
    viewer = _viewer(make_napari_viewer, phantom)
    w = _widget(viewer)
    assert w.checked_raters() == ["rater 1", "rater 2", "rater 3"]  # 'tissue' is not a rater
    n_before = len(viewer.layers)
    _run(qtbot, w)
    raters = [np.asarray(r) for r in phantom.raters]
    st = R.staple(raters)
    assert [lay.name for lay in w.last_layers] == OUTPUTS
    assert len(viewer.layers) == n_before + 5
    cons, prob, frac, ent, dis = w.last_layers
    assert type(cons).__name__ == "Labels" and type(dis).__name__ == "Labels"
    np.testing.assert_array_equal(cons.data, st.consensus)
    np.testing.assert_allclose(prob.data, st.probability, atol=1e-6)
    np.testing.assert_allclose(frac.data, R.vote_fraction(raters), atol=1e-6)
    np.testing.assert_allclose(ent.data, R.vote_entropy(raters), atol=1e-6)
    np.testing.assert_array_equal(dis.data.astype(bool), R.disagreement(raters))
    assert dis.data.any() and cons.data.any()
    for layer in w.last_layers:
        np.testing.assert_allclose(layer.scale, SCALE)
        np.testing.assert_allclose(layer.translate, TRANSLATE)
        np.testing.assert_allclose(np.diag(layer.metadata["affine"])[:3], SCALE)
        assert layer.data.shape == raters[0].shape

    # heat map: the pairwise Dice matrix, coloured by value
    pw = R.pairwise_dice(raters)[1]
    hm = w.heatmap
    assert (hm.rowCount(), hm.columnCount()) == (3, 3)
    for i in range(3):
        assert hm.verticalHeaderItem(i).text().endswith(f"rater {i + 1}")
        for j in range(3):
            it = hm.item(i, j)
            assert it.data(Qt.ItemDataRole.UserRole) == pytest.approx(pw[i, j])
            assert it.text() == f"{pw[i, j]:.2f}"
            assert it.background().color() == heat_color(pw[i, j])
    assert pw[0, 2] < pw[0, 1] < 1.0  # the outer raters disagree most
    # table: STAPLE's sensitivity and specificity, Dice to the consensus
    rep = R.rater_report(raters, names=["rater 1", "rater 2", "rater 3"])
    tb = w.rater_table
    assert tb.rowCount() == 3
    for j in range(3):
        assert tb.item(j, 0).text() == f"rater {j + 1}"
        assert tb.item(j, 1).text() == f"{st.sensitivity[j]:.3f}"
        assert tb.item(j, 2).text() == f"{st.specificity[j]:.4f}"
        assert tb.item(j, 3).text() == f"{rep['dice_to_consensus'][j]:.3f}"
    assert f"Fleiss' kappa {R.fleiss_kappa(raters):.3f}" in w.summary.text()

    # click a rater: where it departs from the consensus
    n_layers = len(viewer.layers)
    _click_row(qtbot, tb, 2)
    hl = w.highlight_layer
    assert hl is not None and hl.name == "rater 3 vs consensus" and w.highlighted == 2
    dev = deviation_map(raters[2], st.consensus)
    np.testing.assert_array_equal(hl.data, dev)
    assert np.array_equal(hl.data == EXTRA, (raters[2] > 0) & (st.consensus == 0))
    assert np.array_equal(hl.data == MISSED, (raters[2] == 0) & (st.consensus > 0))
    assert (hl.data == EXTRA).any()  # the widest rater marks beyond the consensus
    np.testing.assert_allclose(hl.scale, SCALE)
    np.testing.assert_allclose(hl.translate, TRANSLATE)
    assert f"{int((dev == EXTRA).sum()):,} marked beyond" in w.highlight_label.text()
    assert len(viewer.layers) == n_layers + 1
    # another rater (a heat-map row this time): the same layer, updated
    _click_row(qtbot, hm, 0, 1)
    assert w.highlight_layer is hl and hl.name == "rater 1 vs consensus"
    np.testing.assert_array_equal(hl.data, deviation_map(raters[0], st.consensus))
    assert (hl.data == MISSED).any()  # the tightest rater misses part of the consensus
    assert len(viewer.layers) == n_layers + 1

    # run again: new layers, nothing overwritten; the old ones and the highlight hidden
    first = list(w.last_layers)
    _run(qtbot, w)
    assert w.last_layers[0].name == "consensus (STAPLE) [2]"
    assert all(viewer.layers[lay.name] is lay for lay in first)
    assert not any(lay.visible for lay in [*first, hl])
    assert w.last_layers[0].visible and w.highlight_label.text() == ""
    assert w.checked_raters() == ["rater 1", "rater 2", "rater 3"]  # outputs are not raters


def test_majority_vote_and_multilabel_raters(make_napari_viewer, qtbot):
    rng = np.random.default_rng(1)
    truth = np.zeros((24, 24, 8), np.int32)
    truth[4:14, 4:14] = 1
    truth[12:20, 12:22] = 2
    raters = []
    for _ in range(4):
        r = truth.copy()
        flip = rng.random(truth.shape) < 0.05
        r[flip] = rng.integers(0, 3, int(flip.sum()))
        raters.append(r)
    viewer = make_napari_viewer()
    for k, r in enumerate(raters):
        viewer.add_labels(r, name=f"expert {k}", scale=(0.5, 0.5, 2.0))
    w = _widget(viewer)
    assert w.checked_raters() == []  # not named like raters: the user picks them
    w.set_raters([f"expert {k}" for k in range(4)])
    w.method_combo.setCurrentText(MAJORITY)
    _run(qtbot, w)
    cons = w.last_layers[0]
    assert cons.name == "consensus (majority)"
    np.testing.assert_array_equal(cons.data, R.majority_vote(raters, tie="low"))
    np.testing.assert_allclose(cons.scale, (0.5, 0.5, 2.0))
    st = R.staple(raters)
    p_fg = 1.0 - st.probability[0]
    np.testing.assert_allclose(w.last_layers[1].data, p_fg, atol=1e-6)
    rep = R.rater_report(raters, method="majority")
    for i in range(4):
        for j in range(4):
            assert w.heatmap.item(i, j).data(Qt.ItemDataRole.UserRole) == \
                pytest.approx(rep["pairwise_dice"][i][j])
    mean_sens = np.asarray(st.sensitivity)[:, 1:].mean(axis=1)
    for j in range(4):
        assert w.rater_table.item(j, 1).text() == f"{mean_sens[j]:.3f}"
        assert "per label 1: sens" in w.rater_table.item(j, 1).toolTip()
    _click_row(qtbot, w.rater_table, 1)
    hl = w.highlight_layer
    np.testing.assert_array_equal(hl.data, deviation_map(raters[1], cons.data))
    assert (hl.data == OTHER).any()  # a voxel called 1 by the rater, 2 by the consensus
    # the user deletes the highlight layer: the next click adds a new one
    viewer.layers.remove(hl)
    _click_row(qtbot, w.rater_table, 0)
    assert w.highlight_layer is not hl and w.highlight_layer in viewer.layers


def test_clear_messages_and_worker_errors(make_napari_viewer, qtbot, phantom, monkeypatch):
    from napari_medseg.gui import raters_widget, workers

    errors: list[str] = []
    monkeypatch.setattr(workers, "show_error", errors.append)
    viewer = _viewer(make_napari_viewer, phantom)
    w = _widget(viewer)
    n = len(viewer.layers)
    w.set_raters(["rater 1"])
    assert not w.compare() and "at least two Labels layers, one per rater; 1 checked" in w.status.text()
    viewer.add_labels(np.zeros((32, 32, 15), np.uint8), name="short rater", scale=SCALE,
                      translate=TRANSLATE)
    w.set_raters(["rater 1", "short rater"])
    assert not w.compare()
    assert "'rater 1' (32, 32, 16) and 'short rater' (32, 32, 15) differ in shape" in \
        w.status.text()
    viewer.add_labels(np.asarray(phantom.raters[1]), name="moved rater", scale=SCALE)
    w.set_raters(["rater 1", "moved rater"])
    assert not w.compare() and "do not lie on one grid" in w.status.text()
    assert not w.runner.busy and len(viewer.layers) == n + 2

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory while counting patterns")
        yield  # a generator

    monkeypatch.setattr(raters_widget, "compare_raters", broken)
    w.set_raters(["rater 1", "rater 2"])
    for _ in range(2):  # ready again after the failure
        assert w.compare()
        qtbot.waitUntil(lambda: not w.busy and bool(errors), timeout=20000)
        assert "Comparison failed: out of memory" in w.status.text()
        assert w.compare_btn.isEnabled()
        errors.clear()
    assert len(viewer.layers) == n + 2


def test_deviation_map_and_heat_colors():
    r = np.array([0, 1, 1, 0, 2, 2])
    c = np.array([0, 1, 0, 1, 1, 2])
    np.testing.assert_array_equal(deviation_map(r, c), [0, 0, EXTRA, MISSED, OTHER, 0])
    assert heat_color(0.0).getRgb()[:3] == (68, 1, 84)
    assert heat_color(1.0).getRgb()[:3] == (253, 231, 37)
    assert heat_color(float("nan")).getRgb()[:3] == (90, 90, 90)
    assert heat_color(None).getRgb()[:3] == (90, 90, 90)


def test_widget_is_contributed_by_the_plugin(make_napari_viewer):
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-medseg", "Compare raters")
    assert isinstance(widget, RatersWidget)


def test_highlight_follows_the_raters_to_another_grid(make_napari_viewer, qtbot, phantom):
    """The 'vs consensus' layer is reused only while it lies on the compared raters' grid."""
    viewer = _viewer(make_napari_viewer, phantom)
    w = _widget(viewer)
    w.set_raters(["rater 1", "rater 2"])
    _run(qtbot, w)
    first = w.highlight(0)
    np.testing.assert_allclose(first.translate, TRANSLATE)
    for k in (0, 1):  # the same masks, placed elsewhere
        viewer.add_labels(phantom.raters[k], name=f"moved {k}", scale=(2.0, 2.0, 3.0),
                          translate=(100.0, 50.0, 50.0))
    w.set_raters(["moved 0", "moved 1"])
    _run(qtbot, w)
    moved = w.highlight(0)
    assert moved is not first and first in viewer.layers  # the earlier one is left as it was
    np.testing.assert_allclose(moved.scale, (2.0, 2.0, 3.0))
    np.testing.assert_allclose(moved.translate, (100.0, 50.0, 50.0))
    np.testing.assert_allclose(first.translate, TRANSLATE)
