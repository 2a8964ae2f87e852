"""napari-medseg: medical deep learning inside napari, with a CLI over the same core.

Importing the package loads neither Qt nor torch.
"""

__version__ = "0.1.0"
