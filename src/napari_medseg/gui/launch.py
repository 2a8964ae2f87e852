"""Open napari with the sample data and the plugin's widgets (``napari-medseg demo``)."""

from __future__ import annotations

from typing import Any


def dock_widgets(viewer: Any) -> tuple[Any, Any]:
    """Dock the training and prediction widgets on the right of ``viewer``."""
    from napari_medseg.gui.predict_widget import PredictWidget
    from napari_medseg.gui.train_widget import TrainWidget

    train = TrainWidget(viewer)
    predict = PredictWidget(viewer)
    viewer.window.add_dock_widget(train, area="right", name="Train segmentation")
    viewer.window.add_dock_widget(predict, area="right", name="Predict segmentation",
                                  tabify=True)
    return train, predict


def dock_raters(viewer: Any) -> Any:
    """Dock the raters widget on the right of ``viewer``, tabbed with the others."""
    from napari_medseg.gui.raters_widget import RatersWidget

    raters = RatersWidget(viewer)
    viewer.window.add_dock_widget(raters, area="right", name="Compare raters", tabify=True)
    return raters


def dock_restore_and_metrics(viewer: Any) -> tuple[Any, Any]:
    """Dock the restoration and metrics widgets on the right of ``viewer``, tabbed."""
    from napari_medseg.gui.metrics_widget import MetricsWidget
    from napari_medseg.gui.restore_widget import RestoreWidget

    restore = RestoreWidget(viewer)
    metrics = MetricsWidget(viewer)
    viewer.window.add_dock_widget(restore, area="right", name="Restoration", tabify=True)
    viewer.window.add_dock_widget(metrics, area="right", name="Metrics", tabify=True)
    return restore, metrics


def open_demo_viewer(*, run: bool = True):  # -> napari.Viewer
    """Start a viewer on the brain phantom with the widgets docked; block in the Qt event
    loop when ``run``."""
    import napari

    viewer = napari.Viewer(title="napari-medseg demo")
    viewer.open_sample("napari-medseg", "brain_phantom")
    viewer.dims.ndisplay = 2
    viewer.dims.order = (2, 0, 1)  # slide through axial slices (z), as a 2D model sees them
    train, _predict = dock_widgets(viewer)
    dock_raters(viewer)
    dock_restore_and_metrics(viewer)
    # tabify stacks the docks; the first step of the demo is training
    train.parentWidget().raise_()
    if run:
        napari.run()
    return viewer
