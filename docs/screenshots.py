"""Make the README screenshots of the training, prediction and raters widgets.

Run with a display (or ``xvfb-run -a python docs/screenshots.py``). It opens
napari on the brain phantom, keeps labels on every 5th axial slice only (as
a user would paint them), trains a small 2D UNet for 7 short epochs, predicts the
volume and saves ``docs/*.png``; then compares the phantom's three raters
(``docs/raters_widget.png``), restores a noisy T1 (``docs/restore_widget.png``)
and compares two raters in the metrics widget (``docs/metrics_widget.png``).
``python docs/screenshots.py raters|restore|metrics`` makes only that one.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def wait(cond, timeout: float) -> None:
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    t0 = time.time()
    while not cond() and time.time() - t0 < timeout:
        app.processEvents()
        time.sleep(0.02)


def shot(viewer, name: str) -> None:
    import imageio.v3 as iio

    wait(lambda: False, 0.5)  # let the canvas and docks repaint
    img = viewer.screenshot(canvas_only=False, flash=False)
    iio.imwrite(HERE / name, img)
    print(f"wrote docs/{name} {img.shape}", flush=True)


def main(epochs: int = 7) -> int:
    import napari

    from napari_medseg.gui.launch import dock_widgets

    viewer = napari.Viewer(title="napari-medseg", show=True)
    viewer.window._qt_window.resize(1500, 950)
    viewer.open_sample("napari-medseg", "brain_phantom")
    for layer in list(viewer.layers):
        if layer.name.startswith("rater"):
            viewer.layers.remove(layer)
    tissue = viewer.layers["phantom tissue"]
    sparse = np.zeros_like(tissue.data, dtype=np.int32)
    sparse[..., ::5] = tissue.data[..., ::5]
    tissue.visible = False
    viewer.add_labels(sparse, name="my labels", scale=tissue.scale,
                      metadata=dict(tissue.metadata), opacity=0.6)
    viewer.dims.order = (2, 0, 1)
    viewer.dims.set_point(2, 20 * tissue.scale[2])
    train, predict = dock_widgets(viewer)
    train.set_channels(["phantom T1", "phantom FLAIR"])
    train.labels_combo.setCurrentText("my labels")
    train.limit_combo.setCurrentText("epochs")  # the same picture on a slow or a fast machine
    train.limit_spin.setValue(epochs)
    train.steps_spin.setValue(20)
    wait(lambda: False, 1.0)
    docks = viewer.window._dock_widgets
    docks["Train segmentation"].raise_()
    assert train.start_training(), train.status.text()
    wait(lambda: len(train.plot.mean_dice) >= 3, 300)
    shot(viewer, "train_widget.png")
    wait(lambda: not train.runner.busy, 600)
    print(train.status.text(), flush=True)

    viewer.layers["my labels"].visible = False
    assert predict.predict(), predict.status.text()
    wait(lambda: predict.last_layers and not predict.runner.busy and not predict.adding, 120)
    print(predict.status.text(), flush=True)
    docks["Predict segmentation"].raise_()
    shot(viewer, "predict_widget.png")
    lab, prob, unc = predict.last_layers
    lab.visible = False
    unc.visible = True
    viewer.layers.selection.active = unc
    shot(viewer, "uncertainty.png")
    viewer.close()
    return raters_main()


def raters_main() -> int:
    """The raters widget on the phantom's three raters, the widest one clicked."""
    import napari

    from napari_medseg.gui.launch import dock_raters

    viewer = napari.Viewer(title="napari-medseg", show=True)
    viewer.window._qt_window.resize(1500, 950)
    viewer.open_sample("napari-medseg", "brain_phantom")
    viewer.layers["phantom tissue"].visible = False
    viewer.layers["phantom T1"].visible = False
    viewer.layers["phantom FLAIR"].visible = True
    viewer.dims.order = (2, 0, 1)
    raters = dock_raters(viewer)
    wait(lambda: False, 0.5)
    assert raters.compare(), raters.status.text()
    wait(lambda: len(raters.last_layers) == 5 and not raters.busy, 120)
    print(raters.status.text(), flush=True)
    print(raters.summary.text(), flush=True)
    res = raters.result
    # the axial slice where the raters disagree most, zoomed on the lesion
    dis = res.disagreement
    z = int(np.argmax(dis.sum(axis=(0, 1))))
    scale = np.asarray(viewer.layers["phantom FLAIR"].scale)
    viewer.dims.set_point(2, z * scale[2])
    xs, ys = np.nonzero(dis[..., z])
    viewer.reset_view()
    viewer.camera.center = (float(xs.mean() * scale[0]), float(ys.mean() * scale[1]))
    viewer.camera.zoom *= 1.8
    for layer in raters.last_layers:
        layer.visible = False
    cons = raters.last_layers[0]
    cons.visible = True
    cons.contour = 1
    cons.opacity = 1.0
    cons.colormap = {None: "transparent", 0: "transparent", 1: "#40ffff"}
    widest = int(np.argmax(res.deviation_counts[:, 1]))
    raters.highlight(widest)  # as a click on that rater's row does
    shot(viewer, "raters_widget.png")
    viewer.close()
    return 0


def restore_main(epochs: int = 6) -> int:
    """The restoration widget: trained on the clean T1 with synthetic Rician noise, then
    restoring a noisy copy, compared with the clean one (noisy | restored | SSIM map)."""
    import napari

    from napari_medseg.core.degrade import degrade
    from napari_medseg.gui.restore_widget import RestoreWidget

    viewer = napari.Viewer(title="napari-medseg", show=True)
    viewer.window._qt_window.resize(1500, 1150)
    viewer.open_sample("napari-medseg", "brain_phantom")
    t1 = viewer.layers["phantom T1"]
    for layer in list(viewer.layers):
        if layer is not t1:
            viewer.layers.remove(layer)
    noisy = degrade(np.asarray(t1.data, np.float32), "rician:0.1", seed=1)
    viewer.add_image(noisy, name="T1 noisy", scale=t1.scale, metadata=dict(t1.metadata))
    viewer.dims.order = (2, 0, 1)
    viewer.dims.set_point(2, 20 * t1.scale[2])
    restore = RestoreWidget(viewer)
    viewer.window.add_dock_widget(restore, area="right", name="Restoration")
    restore.set_degradation("rician", 0.1)
    restore.limit_combo.setCurrentText("epochs")
    restore.limit_spin.setValue(epochs)
    restore.steps_spin.setValue(25)
    assert restore.start_training(), restore.status.text()
    wait(lambda: restore.last_result is not None and not restore.runner.busy, 600)
    print(restore.status.text(), flush=True)
    restore.input_combo.setCurrentText("T1 noisy")
    restore.ref_combo.setCurrentText("phantom T1")
    restore.restore_btn.click()
    wait(lambda: len(restore.last_layers) == 3 and not restore.runner.busy, 120)
    print(restore.readout.text(), flush=True)
    restored, err, smap = restore.last_layers
    t1.visible = False
    err.visible = False
    viewer.grid.enabled = True
    viewer.grid.shape = (1, 3)
    viewer.reset_view()
    viewer.layers.selection.active = restored
    shot(viewer, "restore_widget.png")
    viewer.close()
    return 0


def metrics_main() -> int:
    """The metrics widget: rater 1 against rater 2 of the phantom's lesion, the TP/FP/FN
    overlay and the per-slice Dice plot, on the slice where the lesion is widest."""
    import napari

    from napari_medseg.gui.launch import dock_restore_and_metrics

    viewer = napari.Viewer(title="napari-medseg", show=True)
    viewer.window._qt_window.resize(1500, 950)
    viewer.open_sample("napari-medseg", "brain_phantom")
    for name in ("phantom tissue", "phantom T1", "rater 3"):
        viewer.layers.remove(name)
    viewer.dims.order = (2, 0, 1)
    _restore, metrics = dock_restore_and_metrics(viewer)
    metrics.parentWidget().raise_()
    metrics.set_layers("rater 1", "rater 2")
    wait(lambda: False, 1.0)
    wait(lambda: not metrics.busy and metrics.seg is not None, 60)
    for name in ("rater 1", "rater 2"):
        viewer.layers[name].visible = False
    viewer.layers["phantom FLAIR"].visible = True
    ov = metrics.overlay_layer
    scale = np.asarray(ov.scale)
    z = int(np.argmax((ov.data > 0).sum(axis=(0, 1))))  # where the lesion is widest
    viewer.dims.set_point(2, z * scale[2])
    wait(lambda: False, 1.0)
    wait(lambda: not metrics.busy, 60)
    ys, xs = np.nonzero(ov.data.max(axis=2))
    viewer.reset_view()
    viewer.camera.center = (float(ys.mean() * scale[0]), float(xs.mean() * scale[1]))
    viewer.camera.zoom *= 2.0
    shot(viewer, "metrics_widget.png")
    viewer.close()
    return 0


PARTS = {"raters": raters_main, "restore": restore_main, "metrics": metrics_main}

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in PARTS:
        sys.exit(PARTS[sys.argv[1]]())
    code = main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
    sys.exit(code or restore_main() or metrics_main())
