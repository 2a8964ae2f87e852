"""Restoration data: cases, intensity normalisation, patch sampling, blind-spot masking.

Intensities stay in the image's own units until a patch is cut (degradations
such as Rician noise are not shift-invariant, so they must act on raw
magnitudes); input and target of a patch are then normalised with the *same*
affine map, fitted on the noisy input, so that "output minus input" is a
correction in consistent units and the inverse map returns the restored image
to the input's units.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from napari_medseg.core.data import check_image
from napari_medseg.core.degrade import Degradation, parse_degradation, robust_scale
from napari_medseg.core.normalize import ChannelNorm, foreground_mask

__all__ = [
    "RestoreCase",
    "RestorePatchSampler",
    "apply_norm",
    "blind_spot",
    "fit_restore_norm",
    "invert_norm",
    "prepare_restore_case",
]


def fit_restore_norm(image: np.ndarray) -> tuple[ChannelNorm, ...]:
    """Per-channel ``(x - mean) / std`` over the foreground, without clipping.

    Restoration must not clip: bright structures are signal. ``lo``/``hi``
    are infinite so :func:`napari_medseg.core.normalize.apply_normalization`
    applies no clipping either.
    """
    m = foreground_mask(image)
    out = []
    for c in range(image.shape[0]):
        v = image[c][m].astype(np.float64)
        if v.size > 2_000_000:
            v = v[:: v.size // 1_000_000]
        std = float(v.std()) if v.size else 1.0
        out.append(ChannelNorm(-np.inf, np.inf, float(v.mean()) if v.size else 0.0,
                               std if std > 1e-8 else 1.0))
    return tuple(out)


def apply_norm(x: np.ndarray, norms: Sequence[ChannelNorm]) -> np.ndarray:
    """``(x - mean) / std`` per channel of ``(C, *spatial)``, float32."""
    if x.shape[0] != len(norms):
        raise ValueError(f"Image has {x.shape[0]} channel(s) but the normalisation has "
                         f"{len(norms)}; pass the channels the model was trained on.")
    shape = [len(norms)] + [1] * (x.ndim - 1)
    mean = np.array([n.mean for n in norms], np.float32).reshape(shape)
    std = np.array([n.std for n in norms], np.float32).reshape(shape)
    return ((x - mean) / std).astype(np.float32)


def invert_norm(x: np.ndarray, norms: Sequence[ChannelNorm]) -> np.ndarray:
    """Inverse of :func:`apply_norm` for ``(C, *spatial)``: back to the image's units."""
    shape = [len(norms)] + [1] * (x.ndim - 1)
    mean = np.array([n.mean for n in norms], np.float32).reshape(shape)
    std = np.array([n.std for n in norms], np.float32).reshape(shape)
    return (x * std + mean).astype(np.float32)


@dataclass
class RestoreCase:
    """One training/validation image for restoration.

    Attributes
    ----------
    source : numpy.ndarray
        ``(C, *spatial)`` float32 in the image's units: the noisy input
        (``pairs``, ``noise2void``) or the clean image to degrade (``synthetic``).
    target : numpy.ndarray or None
        ``(C, *spatial)`` clean training target of ``pairs``; None otherwise
        (``synthetic`` degrades ``source``, ``noise2void`` has none).
    norms : tuple of ChannelNorm
        Normalisation of network inputs and targets, fitted on a noisy image.
    scale : float
        Robust intensity scale of the clean image (relative noise levels).
    spacing : tuple of float
    name : str
    val_input : numpy.ndarray
        The noisy image the network restores for validation (``synthetic``: a
        fixed, seeded degraded copy of ``source``).
    reference : numpy.ndarray or None
        The clean image validation metrics compare with, when known.
    """

    source: np.ndarray
    target: np.ndarray | None
    norms: tuple[ChannelNorm, ...]
    scale: float
    spacing: tuple[float, ...]
    name: str = "case"
    val_input: np.ndarray | None = None
    reference: np.ndarray | None = None
    _fg: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.val_input is None:
            self.val_input = self.source

    def foreground(self) -> np.ndarray:
        """Flat indices of foreground voxels (above the channel-0 mean), cached, subsampled."""
        if self._fg is None:
            x = self.source[0]
            idx = np.flatnonzero(x.reshape(-1) > x.mean())
            if idx.size > 500_000:
                idx = idx[:: idx.size // 250_000]
            self._fg = idx
        return self._fg


def prepare_restore_case(image: np.ndarray | Sequence[np.ndarray], *, mode: str,
                         target: np.ndarray | Sequence[np.ndarray] | None = None,
                         degrade: str | Degradation = "", spacing: Sequence[float] | None = None,
                         seed: int = 0, name: str = "case") -> RestoreCase:
    """Check and wrap one image (and its clean target) for restoration training.

    Parameters
    ----------
    image : array or sequence of arrays
        One spatial array, or one per channel. Noisy for ``pairs`` and
        ``noise2void``; clean for ``synthetic``.
    mode : {"pairs", "synthetic", "noise2void"}
    target : array or sequence of arrays, optional
        Clean target of ``pairs`` (same shape). With ``noise2void`` (or
        ``synthetic``, where the image itself is clean) it is only the
        reference of the validation metrics.
    degrade : str or Degradation
        ``synthetic``: the degradation (also makes the fixed validation input).
    spacing : sequence of float, optional
    seed : int
        Seeds the validation degradation.

    Raises
    ------
    ValueError
        Shapes differ, NaN/inf values, or a missing target/degradation.
    """
    chans = [np.asarray(image)] if not isinstance(image, (list, tuple)) else list(image)
    src = check_image(chans, [f"{name} channel {i}" for i in range(len(chans))])
    tgt = None
    if target is not None:
        tch = [np.asarray(target)] if not isinstance(target, (list, tuple)) else list(target)
        tgt = check_image(tch, [f"{name} target channel {i}" for i in range(len(tch))])
        if tgt.shape != src.shape:
            raise ValueError(f"{name}: image {src.shape[1:]} ({src.shape[0]} channel(s)) and "
                             f"clean target {tgt.shape[1:]} ({tgt.shape[0]}) differ; register/"
                             "resample the pair onto one grid.")
    sp = tuple(float(s) for s in spacing) if spacing is not None else (1.0,) * (src.ndim - 1)
    if mode == "pairs":
        if tgt is None:
            raise ValueError(f"{name}: mode 'pairs' needs a clean target for every noisy image.")
        return RestoreCase(src, tgt, fit_restore_norm(src), robust_scale(tgt[0]), sp, name,
                           reference=tgt)
    if mode == "synthetic":
        deg = parse_degradation(degrade)
        if not deg.steps():
            raise ValueError("mode 'synthetic' needs a degradation such as 'rician:0.05'.")
        scale = robust_scale(src[0])
        rng = np.random.default_rng(seed)
        noisy = np.stack([deg(c, seed=rng, scale=scale) for c in src])
        return RestoreCase(src, None, fit_restore_norm(noisy), scale, sp, name, val_input=noisy,
                           reference=src if tgt is None else tgt)
    if mode == "noise2void":
        return RestoreCase(src, None, fit_restore_norm(src), robust_scale(src[0]), sp, name,
                           reference=tgt)
    raise ValueError(f"mode={mode!r} is not one of pairs, synthetic, noise2void.")


def blind_spot(x: np.ndarray, *, fraction: float, radius: int, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray]:
    """Noise2Void masking of one ``(C, *spatial)`` patch.

    Pixels are chosen stratified (one random pixel per grid cell of side
    ``fraction ** (-1/d)``) and each is replaced, in every channel, by the value
    of a random other pixel at most ``radius`` away (uniform offset, never 0).

    Returns
    -------
    (masked, mask)
        ``masked``: the patch with the replacements; ``mask``: float32
        ``(*spatial)``, 1 at the chosen pixels.
    """
    spatial = x.shape[1:]
    d = len(spatial)
    cell = max(1, int(round(fraction ** (-1.0 / d))))
    grids = [np.arange(0, s, cell) for s in spatial]
    starts = np.stack(np.meshgrid(*grids, indexing="ij"), -1).reshape(-1, d)
    pos = starts + rng.integers(0, cell, size=starts.shape)
    pos = np.minimum(pos, np.array(spatial) - 1)
    off = rng.integers(-radius, radius + 1, size=pos.shape)
    zero = ~off.any(axis=1)
    while zero.any():  # never the pixel itself
        off[zero] = rng.integers(-radius, radius + 1, size=(int(zero.sum()), d))
        zero = ~off.any(axis=1)
    src = np.clip(pos + off, 0, np.array(spatial) - 1)
    # A clipped offset may land back on the pixel: mirror it instead.
    same = (src == pos).all(axis=1)
    src[same] = np.clip(pos[same] - off[same], 0, np.array(spatial) - 1)
    masked = x.copy()
    pi, si = tuple(pos.T), tuple(src.T)
    masked[(slice(None), *pi)] = x[(slice(None), *si)]
    mask = np.zeros(spatial, np.float32)
    mask[pi] = 1.0
    return masked, mask


class RestorePatchSampler:
    """Draw (input, target[, mask]) patches for a restoration mode.

    Parameters
    ----------
    cases : sequence of RestoreCase
    mode : {"pairs", "synthetic", "noise2void"}
    patch_size : tuple of int
        2 values for a 2D model (cut from slices along ``slice_axis`` of 3D
        cases), 3 for a 3D model.
    degrade : str or Degradation
        ``synthetic``: applied to every patch with a fresh random draw, with
        enough context around the patch for local degradations (blur); whole-
        image degradations (k-space, slice thickness) are applied to the whole
        case once per :meth:`refresh` and patches are cut from that.
    fg_fraction, slice_axis, augment, n2v_fraction, n2v_radius, seed
        See :class:`~napari_medseg.core.restoration.config.RestoreConfig`.
    """

    def __init__(self, cases: Sequence[RestoreCase], *, mode: str, patch_size: Sequence[int],
                 degrade: str | Degradation = "", fg_fraction: float = 0.8, slice_axis: int = 2,
                 augment: bool = True, n2v_fraction: float = 0.02, n2v_radius: int = 2,
                 seed: int = 0) -> None:
        if not cases:
            raise ValueError("No training image given.")
        self.cases = list(cases)
        self.mode = mode
        self.patch = tuple(int(p) for p in patch_size)
        self.spatial_dims = len(self.patch)
        nd = self.cases[0].source.ndim - 1
        if self.spatial_dims == 3 and nd == 2:
            raise ValueError("A 3D model cannot train on 2D images; use a 2D model.")
        self.slicewise = self.spatial_dims == 2 and nd == 3
        self.slice_axis = slice_axis
        self.deg = parse_degradation(degrade)
        self.fg_fraction = fg_fraction
        self.augment = augment
        self.n2v_fraction = n2v_fraction
        self.n2v_radius = n2v_radius
        self.rng = np.random.default_rng(seed)
        if self.slicewise:
            ext = list(self.patch)
            ext.insert(slice_axis, 1)
            self.extract = tuple(ext)
        else:
            self.extract = self.patch
        self.margin = self.deg.margin() if (mode == "synthetic" and self.deg.local) else 0
        self._global: list[np.ndarray | None] = [None] * len(self.cases)
        # Bigger images are drawn more often (a voxel is a voxel).
        sizes = np.array([c.source[0].size for c in self.cases], np.float64)
        self.case_p = sizes / sizes.sum()

    def refresh(self) -> None:
        """New draws of whole-image degradations (called once per epoch)."""
        if self.mode == "synthetic" and not self.deg.local:
            for i, c in enumerate(self.cases):
                self._global[i] = np.stack([self.deg.apply(ch, self.rng, c.scale)
                                            for ch in c.source]).astype(np.float32)

    def _start(self, case: RestoreCase) -> tuple[int, ...]:
        shape = case.source.shape[1:]
        if self.rng.random() < self.fg_fraction and case.foreground().size:
            fg = case.foreground()
            centre = np.unravel_index(int(fg[self.rng.integers(fg.size)]), shape)
        else:
            centre = tuple(int(self.rng.integers(n)) for n in shape)
        out = []
        for c, p, n in zip(centre, self.extract, shape):
            s = int(c) - p // 2
            out.append(min(max(s, 0), max(n - p, 0)))
        return tuple(out)

    def _cut(self, arr: np.ndarray, start: Sequence[int], size: Sequence[int], margin: int
             ) -> np.ndarray:
        """``arr[:, start - margin : start + size + margin]`` with mirror padding outside."""
        shape = arr.shape[1:]
        idx = []
        for s, p, n in zip(start, size, shape):
            i = np.arange(s - margin, s + p + margin)
            i = np.abs(i)  # mirror at 0 (whole-sample)
            i = np.where(i >= n, 2 * (n - 1) - i, i)
            idx.append(np.clip(i, 0, n - 1))
        return arr[np.ix_(range(arr.shape[0]), *idx)]

    def _one(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        case = self.cases[i]
        start = self._start(case)
        size = self.extract
        mask = None
        if self.mode == "pairs":
            assert case.target is not None
            x = self._cut(case.source, start, size, 0)
            y = self._cut(case.target, start, size, 0)
        elif self.mode == "synthetic":
            y = self._cut(case.source, start, size, 0)
            if self.deg.local:
                m = self.margin
                block = self._cut(case.source, start, size, m)
                # A 2D patch needs no context along the slice axis for in-plane blur,
                # but takes it anyway: blur may act along every axis.
                deg = np.stack([self.deg.apply(ch, self.rng, case.scale) for ch in block])
                crop = (slice(None), *(slice(m, m + p) for p in size))
                x = deg[crop]
            else:
                if self._global[i] is None:
                    self.refresh()
                x = self._cut(self._global[i], start, size, 0)  # type: ignore[arg-type]
        else:
            x = self._cut(case.source, start, size, 0)
            y = x
        x = x.astype(np.float32)
        y = y.astype(np.float32)
        if self.slicewise:
            x = x.squeeze(1 + self.slice_axis)
            y = y.squeeze(1 + self.slice_axis)
        x, y = apply_norm(x, case.norms), apply_norm(y, case.norms)
        if self.augment:
            x, y = self._augment(x, y)
        if self.mode == "noise2void":
            x, mask = blind_spot(y, fraction=self.n2v_fraction, radius=self.n2v_radius,
                                 rng=self.rng)
        return np.ascontiguousarray(x), np.ascontiguousarray(y), mask

    def _augment(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nd = x.ndim - 1
        for ax in range(nd):
            if self.rng.random() < 0.5:
                x, y = np.flip(x, 1 + ax), np.flip(y, 1 + ax)
        # 90-degree in-plane rotations keep anisotropic voxels' geometry only in plane.
        if x.shape[1] == x.shape[2] and self.rng.random() < 0.5:
            x, y = np.swapaxes(x, 1, 2), np.swapaxes(y, 1, 2)
        return x, y

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """A batch: inputs and targets ``(B, C, *patch)`` float32, and the blind-spot mask
        ``(B, *patch)`` for noise2void (None otherwise)."""
        xs, ys, ms = [], [], []
        for _ in range(batch_size):
            i = int(self.rng.choice(len(self.cases), p=self.case_p))
            x, y, m = self._one(i)
            xs.append(x)
            ys.append(y)
            if m is not None:
                ms.append(m)
        mask = torch.from_numpy(np.stack(ms)) if ms else None
        return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys)), mask
