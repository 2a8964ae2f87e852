"""Open napari with the sample data and the plugin's widgets (``napari-medseg demo``)."""

from __future__ import annotations


def open_demo_viewer(*, run: bool = True):  # -> napari.Viewer
    """Start a viewer on the brain phantom; block in the Qt event loop when ``run``."""
    import napari

    viewer = napari.Viewer(title="napari-medseg demo")
    viewer.open_sample("napari-medseg", "brain_phantom")
    viewer.dims.ndisplay = 2
    if run:
        napari.run()
    return viewer
