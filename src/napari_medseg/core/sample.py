"""A small synthetic brain-like phantom, generated in code (no download).

Two MR-like channels (T1-weighted and FLAIR-like contrast), tissue labels
(1 CSF, 2 grey matter, 3 white matter, 4 lesion) and simulated raters who
outline the lesion slightly differently, as people do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

#: Label value -> tissue name for the phantom.
PHANTOM_CLASSES = {0: "background", 1: "csf", 2: "grey matter", 3: "white matter", 4: "lesion"}


@dataclass(frozen=True)
class Phantom:
    """A generated case.

    Attributes
    ----------
    t1, flair : np.ndarray
        float32 intensity volumes, shape ``shape``.
    labels : np.ndarray
        uint8 tissue classes, see :data:`PHANTOM_CLASSES`.
    raters : tuple of np.ndarray
        uint8 binary lesion masks from simulated raters.
    spacing : tuple of float
        Voxel size in mm.
    """

    t1: np.ndarray
    flair: np.ndarray
    labels: np.ndarray
    raters: tuple[np.ndarray, ...]
    spacing: tuple[float, float, float]

    @property
    def affine(self) -> np.ndarray:
        """Axis-aligned voxel-to-mm affine."""
        return np.diag([*self.spacing, 1.0])


def _ellipsoid(grid: tuple[np.ndarray, ...], centre: tuple[float, ...], radii: tuple[float, ...]
               ) -> np.ndarray:
    """Normalised ellipsoid radius at every voxel (<1 inside)."""
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii))  # type: ignore[return-value]


def brain_phantom(
    shape: tuple[int, int, int] = (64, 64, 40),
    *,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.5),
    n_raters: int = 3,
    noise: float = 0.04,
    seed: int = 0,
) -> Phantom:
    """Generate a brain-like phantom with a lesion and rater variants.

    Parameters
    ----------
    shape : tuple of int
        Volume size (x, y, z).
    spacing : tuple of float
        Voxel size in mm (anisotropic along z by default, as in clinical MR).
    n_raters : int
        Number of simulated lesion outlines (0 for none).
    noise : float
        Gaussian noise standard deviation relative to white-matter intensity.
    seed : int
        Seeds the random shape perturbations, the lesion position and the noise.

    Returns
    -------
    Phantom
    """
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij")
    # Low-frequency random field makes tissue borders irregular, like gyri.
    wobble = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma=3) * 6
    head = _ellipsoid(grid, (0, 0, 0), (0.9, 0.8, 0.85))
    brain = _ellipsoid(grid, (0, 0, 0), (0.78, 0.68, 0.72)) + 0.15 * wobble
    wm = _ellipsoid(grid, (0, 0, 0), (0.58, 0.5, 0.54)) + 0.3 * wobble
    vent_l = _ellipsoid(grid, (-0.05, -0.14, 0.05), (0.25, 0.08, 0.22))
    vent_r = _ellipsoid(grid, (-0.05, 0.14, 0.05), (0.25, 0.08, 0.22))

    labels = np.zeros(shape, np.uint8)
    labels[brain < 1] = 2
    labels[wm < 1] = 3
    labels[(vent_l < 1) | (vent_r < 1)] = 1
    # Lesion: a blob in white matter at a random side, with a fuzzy rim raters disagree on.
    side = rng.choice([-1.0, 1.0])
    centre = (float(rng.uniform(-0.2, 0.2)), side * 0.32, float(rng.uniform(-0.15, 0.15)))
    lesion_r = _ellipsoid(grid, centre, (0.21, 0.17, 0.2)) + 0.25 * wobble
    labels[lesion_r < 1] = 4
    skull = (head < 1) & (brain >= 1.12)

    t1_of = np.array([0.0, 0.25, 0.6, 0.85, 0.45], np.float32)
    flair_of = np.array([0.0, 0.1, 0.65, 0.5, 1.0], np.float32)
    t1 = t1_of[labels]
    flair = flair_of[labels]
    t1[skull] = 0.9
    flair[skull] = 0.3
    # Oedema-like halo on FLAIR only: its edge is what raters argue about.
    halo = (lesion_r >= 1) & (lesion_r < 1.6) & (labels > 1)
    flair[halo] = np.maximum(flair[halo], 0.75)
    bias = 1 + 0.1 * grid[0] + 0.05 * grid[1]
    t1 = ndi.gaussian_filter(t1 * bias, 0.6) + rng.normal(0, noise, shape).astype(np.float32)
    flair = ndi.gaussian_filter(flair * bias, 0.6) + rng.normal(0, noise, shape).astype(np.float32)

    raters = []
    for k in range(n_raters):
        # Each rater draws the border at their own threshold of the fuzzy rim,
        # some including part of the halo, with a little independent jitter.
        level = 1.0 + 0.25 * (k - (n_raters - 1) / 2)
        jitter = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 2) * 1.5
        raters.append(((lesion_r + 0.15 * jitter) < level).astype(np.uint8))
    return Phantom(
        t1=np.clip(t1, 0, None).astype(np.float32),
        flair=np.clip(flair, 0, None).astype(np.float32),
        labels=labels,
        raters=tuple(raters),
        spacing=tuple(float(s) for s in spacing),  # type: ignore[arg-type]
    )
