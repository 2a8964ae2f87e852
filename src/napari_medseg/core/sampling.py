"""Patch sampling with foreground oversampling and sparse labels, and augmentation.

Sampling is numpy on the CPU (cheap slicing); augmentation runs on the batch
tensor on the training device so a GPU does that work too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from napari_medseg.core.config import INTENSITY_JITTER, P_SCALE
from napari_medseg.core.data import UNLABELLED, Case


class PatchSampler:
    """Draw training patches from cases.

    Patch centres are labelled voxels only, so sparsely annotated volumes
    (most voxels -1) still give patches with labels. With probability
    ``fg_oversample`` the centre is a foreground voxel of a class drawn
    uniformly among the classes present, which keeps small structures (a
    lesion, enhancing tumour) in view.

    Cases labelled by several raters (:attr:`Case.raters`) are sampled at
    the same locations in every rater mode: a centre is a voxel some rater
    labelled, a foreground centre one that some rater gave that class, so
    the disagreement band at a structure's edge is in view whatever the mode.
    What the patch's target holds depends on ``raters``:

    * ``"majority"``: the plurality vote (:attr:`Case.target`);
    * ``"sample"``: one rater of that case, drawn uniformly per patch;
    * ``"soft"``: all raters, cut at the same place, as (R, *patch) class
      indices; cases with fewer raters are padded with all-unlabelled
      volumes (an abstaining rater). Turn them into vote fractions with
      :func:`rater_soft_targets` after augmentation.

    Parameters
    ----------
    cases : sequence of Case
        Volumes (C, X, Y[, Z]) with targets.
    patch_size : tuple of int
        Spatial patch size. With ``spatial_dims == 2`` and 3D cases, a 2D
        patch is cut from one slice along ``slice_axis``.
    spatial_dims : {2, 3}
    fg_oversample : float
    slice_axis : int
    seed : int
    raters : {"soft", "sample", "majority"}
        See above; no effect when every case has one label volume.
    """

    def __init__(self, cases: Sequence[Case], patch_size: Sequence[int], *, spatial_dims: int,
                 fg_oversample: float = 0.5, slice_axis: int = 2, seed: int = 0,
                 raters: str = "majority") -> None:
        if not cases:
            raise ValueError("No training case given.")
        if raters not in ("soft", "sample", "majority"):
            raise ValueError(f"raters={raters!r} is not one of soft, sample, majority.")
        self.cases = list(cases)
        self.spatial_dims = spatial_dims
        case_nd = self.cases[0].target.ndim
        if len(patch_size) != spatial_dims:
            raise ValueError(f"patch_size {tuple(patch_size)} has {len(patch_size)} values; a "
                             f"{spatial_dims}D model needs {spatial_dims}.")
        if spatial_dims == 3 and case_nd == 2:
            raise ValueError("A 3D model cannot train on 2D images; choose 2D (--dims 2).")
        self.slice_axis = slice_axis
        if spatial_dims == 2 and case_nd == 3:
            ps = list(patch_size)
            ps.insert(slice_axis, 1)
            self.extract_size = tuple(ps)
        else:
            self.extract_size = tuple(int(p) for p in patch_size)
        self.fg_oversample = fg_oversample
        self.max_raters = max(c.n_raters for c in self.cases)
        self.mode = raters if self.max_raters > 1 else "majority"
        self.rng = np.random.default_rng(seed)
        # Its own stream, so the locations drawn do not depend on the rater mode.
        self.rater_rng = np.random.default_rng([seed, 1])
        self._labelled: list[np.ndarray | None] = []
        self._fg: list[list[np.ndarray]] = []
        for c in self.cases:
            t = c.target
            if (t >= 0).sum() == 0:
                raise ValueError(f"{c.name}: no labelled voxel; label at least one slice.")
            # Fully labelled volumes sample uniformly without storing indices.
            self._labelled.append(None if (t >= 0).all() else np.flatnonzero(t.reshape(-1) >= 0))
            if c.raters is None:
                classes = [int(v) for v in np.unique(t) if v > 0]
                self._fg.append([np.flatnonzero(t.reshape(-1) == k) for k in classes])
            else:
                classes = [int(v) for v in np.unique(c.raters) if v > 0]
                self._fg.append([np.flatnonzero((c.raters == k).any(axis=0).reshape(-1))
                                 for k in classes])

    def _centre(self, i: int) -> tuple[int, ...]:
        t = self.cases[i].target
        fg = self._fg[i]
        if fg and self.rng.random() < self.fg_oversample:
            idx = fg[self.rng.integers(len(fg))]
            flat = int(idx[self.rng.integers(idx.size)])
        elif self._labelled[i] is None:
            flat = int(self.rng.integers(t.size))
        else:
            lab = self._labelled[i]
            flat = int(lab[self.rng.integers(lab.size)])  # type: ignore[index]
        return tuple(int(v) for v in np.unravel_index(flat, t.shape))

    def _window(self, shape: Sequence[int], centre: tuple[int, ...]
                ) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
        """Source slices in the case and destination slices in the patch."""
        size = self.extract_size
        # Jitter so the labelled voxel is not always at the exact centre.
        starts = []
        for c, p, n in zip(centre, size, shape):
            lo = c - p + 1
            s = int(self.rng.integers(lo, c + 1)) if p > 1 else c
            if n >= p:
                s = min(max(s, 0), n - p)
            else:  # image smaller than the patch: keep all of it inside the patch
                s = int(self.rng.integers(n - p, 1))
            starts.append(s)
        src, dst = [], []
        for s, p, n in zip(starts, size, shape):
            a, b = max(s, 0), min(s + p, n)
            src.append(slice(a, b))
            dst.append(slice(a - s, b - s))
        return tuple(src), tuple(dst)

    def _labels(self, case: Case) -> np.ndarray:
        """The label volume(s) this mode trains on: (*spatial) or (R, *spatial)."""
        if self.mode == "majority" or case.raters is None:
            return case.target if self.mode != "soft" else case.target[None]
        if self.mode == "sample":
            return case.raters[int(self.rater_rng.integers(case.raters.shape[0]))]
        return case.raters

    def _extract(self, case: Case, centre: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        size = self.extract_size
        shape = case.target.shape
        src, dst = self._window(shape, centre)
        labels = self._labels(case)
        lead = labels.shape[:-len(shape)]  # () or (R,)
        img = np.zeros((case.image.shape[0], *size), np.float32)
        # All-unlabelled rows pad a case with fewer raters than the batch's stack.
        tgt = np.full((self.max_raters, *size) if self.mode == "soft" else size, UNLABELLED,
                      np.int16)
        if any(p > n for p, n in zip(size, shape)):
            # Pad with each channel's minimum: the value of "outside the body".
            img[:] = case.image.reshape(case.image.shape[0], -1).min(axis=1).reshape(
                -1, *([1] * len(size)))
        img[(slice(None), *dst)] = case.image[(slice(None), *src)]
        if lead:
            tgt[(slice(0, lead[0]), *dst)] = labels[(slice(None), *src)]
        else:
            tgt[dst] = labels[src]
        if self.spatial_dims == 2 and len(size) == 3:
            img = img.squeeze(1 + self.slice_axis)
            tgt = tgt.squeeze(self.slice_axis + (1 if self.mode == "soft" else 0))
        return img, tgt

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch: images (B, C, *patch) float32 and int64 targets (-1 unlabelled).

        Targets are (B, *patch), or (B, R, *patch) rater stacks in ``soft`` mode.
        """
        imgs, tgts = [], []
        for _ in range(batch_size):
            i = int(self.rng.integers(len(self.cases)))
            img, tgt = self._extract(self.cases[i], self._centre(i))
            imgs.append(img)
            tgts.append(tgt)
        return torch.from_numpy(np.stack(imgs)), torch.from_numpy(np.stack(tgts).astype(np.int64))


def rater_soft_targets(stack: torch.Tensor, num_classes: int, *, binary: bool = False
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Vote fractions of stacked rater labels, and where they are defined.

    Parameters
    ----------
    stack : torch.Tensor
        (B, R, *spatial) integer class indices, -1 where a rater did not label.
    num_classes : int
        Classes including background.
    binary : bool
        Return the foreground fraction (B, 1, *spatial) for a one-channel
        sigmoid model instead of (B, K, *spatial).

    Returns
    -------
    soft : torch.Tensor
        float32 fraction of the raters *that labelled the voxel* voting for
        each class (abstentions are left out of numerator and denominator).
    mask : torch.Tensor
        (B, *spatial) float32, 1 where at least one rater labelled the voxel;
        0 elsewhere (the voxel is ignored, as -1 is for one label volume).
    """
    if stack.ndim < 3 or stack.is_floating_point():
        raise ValueError(f"Rater labels must be integer (B, R, *spatial), got {stack.dtype} "
                         f"{tuple(stack.shape)}.")
    valid = stack >= 0
    n = valid.sum(1, keepdim=True).float()
    onehot = F.one_hot(stack.clamp_min(0).long(), num_classes).movedim(-1, 2)  # B, R, K, ...
    counts = (onehot * valid.unsqueeze(2)).sum(1).float()
    soft = counts / n.clamp_min(1.0)
    if binary:
        soft = soft[:, 1:].sum(1, keepdim=True)
    return soft, (n[:, 0] > 0).float()


def _rotation_theta(batch: int, spatial_dims: int, max_deg: float,
                    gen: torch.Generator) -> torch.Tensor:
    """Affine matrices of random small rotations (about the last axis pair in 2D, any in 3D)."""
    ang = (torch.rand(batch, generator=gen) * 2 - 1) * math.radians(max_deg)
    c, s = torch.cos(ang), torch.sin(ang)
    if spatial_dims == 2:
        theta = torch.zeros(batch, 2, 3)
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = c, -s, s, c
    else:
        theta = torch.zeros(batch, 3, 4)
        theta[:, 0, 0] = 1
        theta[:, 1, 1], theta[:, 1, 2], theta[:, 2, 1], theta[:, 2, 2] = c, -s, s, c
        # Rotate in a random plane by permuting which axis is kept fixed.
        perm = torch.randint(0, 3, (1,), generator=gen).item()
        idx = [(0, 1, 2), (1, 2, 0), (2, 0, 1)][int(perm)]
        theta[:, :, :3] = theta[:, :, :3][:, list(idx)][:, :, list(idx)]
    return theta


def augment_batch(x: torch.Tensor, y: torch.Tensor, *, gen: torch.Generator,
                  p_rotate: float = 0.3, max_deg: float = 15.0,
                  flip_axes: Sequence[int] | None = None, intensity: float = INTENSITY_JITTER,
                  scale: float = 0.0, p_scale: float = P_SCALE
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment for scanner and protocol shift: flips, intensity, gamma, rotation, zoom.

    Parameters
    ----------
    x : torch.Tensor
        (B, C, *spatial) normalised images.
    y : torch.Tensor
        (B, *spatial) int64 targets (-1 unlabelled), (B, K, *spatial) float soft targets,
        or (B, R, *spatial) int64 stacks of R raters' targets: every rater of a sample
        gets that sample's flips and rotation (nearest neighbour, -1 outside).
    gen : torch.Generator
        CPU generator, seeded by the engine, for reproducible draws.
    flip_axes : sequence of int or None
        Spatial axes that may flip (default: all).
    intensity : float
        Each sample's channels are scaled by ``1 ± intensity`` and shifted by
        ``± intensity`` (uniform draws; ``TrainConfig.intensity_jitter``).
    scale : float
        With probability ``p_scale`` a sample is zoomed by a factor drawn log-uniformly
        from ``[1 / (1 + scale), 1 + scale]`` about the patch centre
        (``TrainConfig.scale_jitter``); 0 turns zooming off and leaves every other draw
        as it was. Where a shrunk patch reaches past its own edges the labels are
        unlabelled (the image repeats its border).
    """
    b, ch = x.shape[:2]
    nd = x.ndim - 2
    chan = y.ndim == x.ndim  # a channel axis: soft targets or a stack of raters
    soft = chan and y.is_floating_point()
    dev = x.device
    axes = range(nd) if flip_axes is None else flip_axes
    for ax in axes:
        flip = torch.rand(b, generator=gen) < 0.5
        if flip.any():
            idx = flip.nonzero().squeeze(1).to(dev)
            x[idx] = x[idx].flip(2 + ax)
            y[idx] = y[idx].flip((2 if chan else 1) + ax)
    # Per-sample, per-channel intensity scale and shift (contrast/brightness drift).
    shape = (b, ch) + (1,) * nd
    gain = (1 + (torch.rand(shape, generator=gen) * 2 - 1) * intensity).to(dev)
    shift = ((torch.rand(shape, generator=gen) * 2 - 1) * intensity).to(dev)
    x = x * gain + shift
    # Gamma on the per-sample range, applied to half the samples.
    gam = torch.exp((torch.rand(shape, generator=gen) * 2 - 1) * math.log(1.4)).to(dev)
    use = (torch.rand((b,) + (1,) * (nd + 1), generator=gen) < 0.5).to(dev)
    flat = x.flatten(2)
    lo = flat.amin(dim=2).view(b, ch, *([1] * nd))
    hi = flat.amax(dim=2).view(b, ch, *([1] * nd))
    rng = (hi - lo).clamp_min(1e-6)
    xg = ((x - lo) / rng).clamp(0, 1).pow(gam) * rng + lo
    x = torch.where(use, xg, x)
    # One resampling for rotation and zoom together. Draws happen only for the parts that
    # are on, so a model trained without zoom sees exactly the patches it saw before.
    theta = torch.eye(nd, nd + 1).repeat(b, 1, 1)
    moved = torch.zeros(b, dtype=torch.bool)
    if p_rotate > 0:
        rot = torch.rand(b, generator=gen) < p_rotate
        if rot.any():
            theta[rot] = _rotation_theta(int(rot.sum()), nd, max_deg, gen)
            moved |= rot
    if scale > 0:
        zoom = torch.rand(b, generator=gen) < p_scale
        if zoom.any():
            log_f = (torch.rand(int(zoom.sum()), generator=gen) * 2 - 1) * math.log1p(scale)
            # affine_grid maps output to input coordinates: a factor above 1 samples a wider
            # field, so the content shrinks.
            theta[zoom, :, :nd] *= torch.exp(log_f).view(-1, 1, 1)
            moved |= zoom
    if moved.any():
        sel = moved.nonzero().squeeze(1)
        grid = F.affine_grid(theta[sel].to(dev), [sel.numel(), 1, *x.shape[2:]],
                             align_corners=False)
        ridx = sel.to(dev)
        x[ridx] = F.grid_sample(x[ridx], grid, mode="bilinear", padding_mode="border",
                                align_corners=False)
        if soft:
            y[ridx] = F.grid_sample(y[ridx], grid, mode="bilinear", padding_mode="zeros",
                                    align_corners=False)
        else:
            # Nearest sampling keeps class indices; outside the patch becomes unlabelled.
            yy = (y[ridx] if chan else y[ridx].unsqueeze(1)).float() + 1
            yy = F.grid_sample(yy, grid, mode="nearest", padding_mode="zeros", align_corners=False)
            y[ridx] = (yy if chan else yy.squeeze(1)).long() - 1
    return x.contiguous(), y
