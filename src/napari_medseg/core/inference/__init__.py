"""Sliding-window prediction as a generator.

Images are ``(C, *spatial)`` arrays with two or three spatial axes. A window of
``patch_size`` slides over the image with a given overlap; windows are batched,
each window's logits pass through the activation (softmax / sigmoid), are
weighted by an importance map (a Gaussian that trusts the window's centre more
than its border, as in nnU-Net) and summed; the sum is divided by the summed
weights at the end. Probabilities are blended, not logits.

Every function that runs a model is a generator: it yields
:class:`~napari_medseg.core.events.Progress` after each batch and returns its
result, so the CLI, the GUI and the tests drive it the same way::

    gen = predict_volume(model, image, spatial_dims=3, patch_size=(64, 64, 64))
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            prediction = stop.value
            break
"""

from napari_medseg.core.inference.predict import Prediction, predict_volume
from napari_medseg.core.inference.sliding import sliding_window
from napari_medseg.core.inference.tiling import gaussian_importance, tile_starts

__all__ = [
    "Prediction",
    "gaussian_importance",
    "predict_volume",
    "sliding_window",
    "tile_starts",
]
