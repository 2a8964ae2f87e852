"""What the Restoration widget computes: degradation specs, defaults, and its worker jobs.

Qt-free on purpose: the job generators run in the widget's worker thread
(:class:`napari_medseg.gui.workers.JobRunner`) and may never touch the viewer;
they receive plain arrays read from the layers in the GUI thread and return
plain arrays that the widget turns into layers.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_medseg.core.plan import default_depth
from napari_medseg.core.plan import default_patch as fit_patch


#: Metadata key of the layers the widget makes that are not images to train on or restore
#: (the degradation preview, the SSIM and error maps).
ROLE = "medseg_role"


#: The widget's mode names -> the core's (:data:`napari_medseg.core.restoration.MODES`).
MODE_LABELS = {
    "pairs": "supervised: noisy + clean pair",
    "synthetic": "synthetic: clean images + degradation",
    "noise2void": "self-supervised: noisy images only",
}


@dataclass(frozen=True)
class DegradationKind:
    """One entry of the degradation picker: a spec name and what its strength means."""

    name: str
    label: str
    strength: str  # what the number is, for the tooltip / label
    default: float
    minimum: float
    maximum: float
    step: float
    decimals: int
    integer: bool = False


DEGRADATIONS = (
    DegradationKind("rician", "Rician noise (MR magnitude)", "sigma, fraction of tissue "
                    "intensity", 0.05, 0.001, 1.0, 0.01, 3),
    DegradationKind("gaussian", "Gaussian noise", "sigma, fraction of tissue intensity",
                    0.05, 0.001, 1.0, 0.01, 3),
    DegradationKind("poisson", "Poisson-Gaussian noise", "photons at tissue intensity "
                    "(fewer: noisier)", 100.0, 1.0, 1e6, 10.0, 0),
    DegradationKind("blur", "Blur", "Gaussian sigma, voxels", 1.0, 0.1, 10.0, 0.25, 2),
    DegradationKind("kspace", "k-space truncation", "down-sampling factor", 2.0, 1.0, 8.0,
                    0.5, 1),
    DegradationKind("slices", "Thick slices", "slice thickness factor (last axis)", 2.0, 1.0,
                    8.0, 1.0, 0, integer=True),
)
KINDS = {k.name: k for k in DEGRADATIONS}

#: Offered losses (the combo box is editable: any spec the core parses works, e.g.
#: ``0.8*l1+0.2*ssim``); noise2void accepts pixel losses only.
LOSSES = ("l1", "mse", "l1+ssim", "0.8*l1+0.2*ssim", "mse+ssim")
PIXEL_LOSSES = ("l1", "mse")

#: Larger images are previewed on the displayed slice only: degrading a whole
#: volume runs in the GUI thread (~0.1 s per million voxels on a loaded CPU).
PREVIEW_MAX_VOXELS = 2_000_000


def degradation_spec(kind: str, strength: float) -> str:
    """``("rician", 0.05)`` -> ``"rician:0.05"`` (the core's spec grammar)."""
    k = KINDS[kind]
    value = int(round(strength)) if k.integer else float(f"{strength:.6g}")
    return f"{k.name}:{value:g}"


def default_patch(shape: Sequence[int], dims: int, axis: int | None) -> tuple[int, ...]:
    """Training patch: in-plane up to 64 (2D) or up to 32 per axis (3D), multiples of 8.

    The command line's defaults (``napari-medseg train --task restore``), so a
    model trained here matches one trained there.
    """
    return fit_patch(shape, dims, slice_axis=axis, cap=64 if dims == 2 else 32, multiple=8)



@dataclass(frozen=True)
class Comparison:
    """An image compared with a reference (the widget's readout and map layers)."""

    metrics: dict[str, float]  # mae, mse, nmse, psnr, ssim, data_range
    input_metrics: dict[str, float] | None  # the same for the unrestored input
    ssim_map: np.ndarray | None
    abs_error: np.ndarray
    ssim_window: int


def compare(pred: np.ndarray, ref: np.ndarray, *, original: np.ndarray | None = None
            ) -> Comparison:
    """MAE, MSE, NMSE, PSNR and SSIM (with its map) of ``pred`` against ``ref``.

    PSNR and SSIM use ``data_range = ref.max() - ref.min()`` and SSIM a window of
    :func:`ssim_window`, as ``napari-medseg evaluate --task restore``; ``original``
    (the unrestored input) gets the same numbers, without maps.
    """
    from napari_medseg.core.metrics import mae, mse, nmse, psnr, ssim, ssim_window

    p = np.asarray(pred, np.float64)
    r = np.asarray(ref, np.float64)
    dr = float(r.max() - r.min()) if r.size else 0.0
    dr = dr if dr > 0 else 1.0
    win = ssim_window(r.shape)

    def numbers(x: np.ndarray, full: bool) -> tuple[dict[str, float], np.ndarray | None]:
        out = {"mae": mae(x, r), "mse": mse(x, r), "nmse": nmse(x, r),
               "psnr": psnr(x, r, data_range=dr), "data_range": dr}
        smap = None
        if win >= 3:
            if full:
                s, smap = ssim(x, r, data_range=dr, win_size=win, full=True)  # type: ignore[misc]
            else:
                s = ssim(x, r, data_range=dr, win_size=win)
            out["ssim"] = float(s)  # type: ignore[arg-type]
        else:  # a side under 3 voxels has no SSIM window
            out["ssim"] = float("nan")
        return out, smap

    metrics, smap = numbers(p, True)
    before = numbers(np.asarray(original, np.float64), False)[0] if original is not None \
        else None
    return Comparison(metrics, before, None if smap is None else smap.astype(np.float32),
                      np.abs(p - r).astype(np.float32), win)


@dataclass(frozen=True)
class RestoreOutput:
    """What a restore job returns: the restored image, and its comparison when asked."""

    restored: np.ndarray
    comparison: Comparison | None


def train_job(images: Sequence[np.ndarray], targets: Sequence[np.ndarray | None], *,
              names: Sequence[str], spacing: Sequence[float], model_config: Any,
              config: Any, should_stop: Callable[[], bool],
              clock: Callable[[], float] | None = None,
              init_state: dict[str, Any] | None = None) -> Generator[Any, None, Any]:
    """Worker thread: prepare the cases, then the core's restoration training generator.

    ``targets`` holds each image's clean target (``pairs``) or validation reference
    (``noise2void``), or None; ``init_state`` warm-starts from a model's weights.
    """
    from napari_medseg.core import restoration as R
    from napari_medseg.core.data import fingerprint
    from napari_medseg.core.events import Message

    yield Message("preparing the data")
    cases = [R.prepare_restore_case(np.asarray(img, np.float32), mode=config.mode,
                                    target=None if t is None else np.asarray(t, np.float32),
                                    degrade=config.degrade, spacing=spacing,
                                    seed=config.seed + i, name=n)
             for i, (img, t, n) in enumerate(zip(images, targets, names))]
    fps = [fingerprint(np.asarray(a)) for a in [*images, *(t for t in targets if t is not None)]]
    kw = {} if clock is None else {"clock": clock}
    res = yield from R.fit_restoration(cases, model_config=model_config, config=config,
                                       should_stop=should_stop, channel_names=[names[0]],
                                       fingerprints=fps, init_state=init_state, **kw)
    return res


def restore_job(checkpoint: Any, model: Any, image: np.ndarray, *, device: str,
                reference: np.ndarray | None = None) -> Generator[Any, None, RestoreOutput]:
    """Worker thread: restore ``image``; compare with ``reference`` when one is given."""
    from napari_medseg.core import restoration as R
    from napari_medseg.core.events import Message

    out = yield from R.restore(checkpoint, np.asarray(image, np.float32), model=model,
                               device=device)
    comp = None
    if reference is not None:
        yield Message("comparing with the reference")
        comp = compare(out, reference, original=image)
    return RestoreOutput(out, comp)


def degrade_preview(image: np.ndarray, spec: str, *, axis: int | None, index: int,
                    max_voxels: int | None = None, seed: int = 0
                    ) -> tuple[np.ndarray, str]:
    """The degraded image for a preview, and where it was degraded ("" or "slice k").

    Noise levels come from the whole image's intensity scale, as in training. A
    volume over ``max_voxels`` (default :data:`PREVIEW_MAX_VOXELS`) with a local
    degradation (noise, blur) is degraded on the displayed slice (``index`` along
    ``axis``) only, other slices left 0; whole-image degradations (k-space, slice
    thickness) always get the whole volume.
    """
    from napari_medseg.core.degrade import parse_degradation, robust_scale

    deg = parse_degradation(spec)
    limit = PREVIEW_MAX_VOXELS if max_voxels is None else max_voxels
    x = np.asarray(image, np.float32)
    scale = robust_scale(x)
    if x.ndim == 3 and axis is not None and x.size > limit and deg.local:
        out = np.zeros_like(x)
        sl: list[Any] = [slice(None)] * 3
        sl[axis] = index
        out[tuple(sl)] = deg(x[tuple(sl)], seed=seed, scale=scale)
        return out, f"axis {axis}, slice {index}"
    return deg(x, seed=seed, scale=scale), ""
