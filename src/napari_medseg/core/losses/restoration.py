"""Restoration losses and weighted sums of them named by a spec (``"0.8*l1+0.2*ssim"``).

Every loss is an :class:`torch.nn.Module` called as ``loss(pred, target, mask=None)``:

``pred``, ``target``
    ``(N, C, *spatial)`` floating tensors of one shape, 2D or 3D (the restored and the clean
    image, in the network's normalised units).
``mask``
    Optional ``(N, *spatial)`` or ``(N, 1, *spatial)`` weights (bool or float): pixel-wise losses
    (``l1``, ``mse``) average only where it is non-zero (Noise2Void's blind-spot pixels). The
    structural losses (``ssim``, ``perceptual``, ``adv``) compare neighbourhoods and refuse a
    mask. A mask with no weight gives 0 (never NaN).

Names (:data:`RESTORATION_LOSSES`): ``l1`` (= ``mae``), ``mse`` (= ``l2``), ``ssim``,
``perceptual``, ``adv`` (= ``adversarial``). :func:`parse_loss_spec` reads
``"l1+ssim"``, ``"0.8*l1+0.2*ssim"``, ``"l1+0.1*perceptual+0.01*adv"``; the adversarial term is
only there when named (off by default).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "RESTORATION_LOSSES",
    "AdversarialLoss",
    "CompositeLoss",
    "L1Loss",
    "MSELoss",
    "PatchDiscriminator",
    "PerceptualLoss",
    "SSIMLoss",
    "make_restoration_loss",
    "parse_loss_spec",
    "ssim_torch",
]


def _check_pair(pred: Tensor, target: Tensor, who: str) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"{who}: pred {tuple(pred.shape)} and target {tuple(target.shape)} "
                         "differ in shape.")
    if pred.dim() not in (4, 5):
        raise ValueError(f"{who}: expected (N, C, X, Y) or (N, C, X, Y, Z), got "
                         f"{tuple(pred.shape)}; add batch and channel axes.")


def _weight(mask: Tensor | None, pred: Tensor) -> Tensor | None:
    if mask is None:
        return None
    m = mask.to(pred.dtype)
    if m.dim() == pred.dim() - 1:
        m = m.unsqueeze(1)
    if m.shape[0] != pred.shape[0] or m.shape[2:] != pred.shape[2:]:
        raise ValueError(f"mask {tuple(mask.shape)} does not match images {tuple(pred.shape)}.")
    return m.expand_as(pred)


def _no_mask(mask: Tensor | None, who: str) -> None:
    if mask is not None:
        raise ValueError(f"{who} compares neighbourhoods and cannot use a pixel mask; use "
                         "'l1' or 'mse' for masked (Noise2Void) training.")


class _Pixelwise(nn.Module):
    def _reduce(self, err: Tensor, mask: Tensor | None, pred: Tensor) -> Tensor:
        w = _weight(mask, pred)
        if w is None:
            return err.mean()
        total = w.sum()
        return (err * w).sum() / total.clamp_min(1e-12) if total > 0 else (err * w).sum()


class L1Loss(_Pixelwise):
    """Mean absolute error: robust to outliers, keeps edges sharper than MSE."""

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        _check_pair(pred, target, "l1")
        return self._reduce((pred.float() - target.float()).abs(), mask, pred)


class MSELoss(_Pixelwise):
    """Mean squared error: the maximum-likelihood loss under Gaussian noise (PSNR's loss)."""

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        _check_pair(pred, target, "mse")
        d = pred.float() - target.float()
        return self._reduce(d * d, mask, pred)


# --------------------------------------------------------------------------- SSIM


def _window_1d(win_size: int, gaussian: bool, sigma: float, dtype: torch.dtype,
               device: torch.device) -> Tensor:
    if gaussian:
        r = int(3.5 * sigma + 0.5)
        x = torch.arange(-r, r + 1, dtype=torch.float64)
        k = torch.exp(-0.5 * (x / sigma) ** 2)
    else:
        k = torch.ones(win_size, dtype=torch.float64)
    return (k / k.sum()).to(dtype=dtype, device=device)


def _separable(x: Tensor, k: Tensor) -> Tensor:
    """Valid (unpadded) separable filtering of every channel of (N, C, *S) by the 1D kernel k."""
    c = x.shape[1]
    nd = x.dim() - 2
    conv = F.conv3d if nd == 3 else F.conv2d
    for ax in range(nd):
        shape = [1, 1] + [1] * nd
        shape[2 + ax] = k.numel()
        x = conv(x, k.view(shape).expand(c, *shape[1:]), groups=c)
    return x


def ssim_torch(pred: Tensor, target: Tensor, *, data_range: float | Tensor | None = None,
               win_size: int | None = None, gaussian_weights: bool = True, sigma: float = 1.5,
               K1: float = 0.01, K2: float = 0.03, use_sample_covariance: bool = True,
               reduction: str = "mean") -> Tensor:
    """Differentiable SSIM of ``(N, C, *spatial)`` tensors (2D or 3D), per-channel.

    Same definition as :func:`napari_medseg.core.metrics.ssim` (and scikit-image): the
    map is computed only where the window fits (valid filtering), which is exactly the
    region the metric averages over.

    Parameters
    ----------
    data_range : float, tensor or None
        R; ``None`` uses each sample's ``target.max() - target.min()`` (detached, at least
        1e-6), shape-broadcast per sample.
    reduction : {"mean", "none"}
        ``"mean"``: a scalar; ``"none"``: the valid SSIM map ``(N, C, *valid)``.
    """
    _check_pair(pred, target, "ssim")
    if win_size is None:
        win_size = 2 * int(3.5 * sigma + 0.5) + 1 if gaussian_weights else 7
    if win_size % 2 != 1:
        raise ValueError(f"win_size must be odd, got {win_size}.")
    nd = pred.dim() - 2
    dt = torch.float64 if pred.dtype == torch.float64 else torch.float32
    k = _window_1d(win_size, gaussian_weights, sigma, dt, pred.device)
    span = k.numel()
    if span > win_size:
        raise ValueError(f"A Gaussian window of sigma {sigma} spans {span} voxels, more than "
                         f"win_size {win_size}; leave win_size at None or raise it to {span}.")
    if min(pred.shape[2:]) < max(span, win_size):
        raise ValueError(f"SSIM window {max(span, win_size)} does not fit patches of "
                         f"{tuple(pred.shape[2:])}; use larger patches or win_size/sigma smaller.")
    x, y = pred.to(dt), target.to(dt)
    n = x.shape[0]
    if data_range is None:
        flat = y.detach().reshape(n, -1)
        r = (flat.amax(1) - flat.amin(1)).clamp_min(1e-6).view(n, *([1] * (nd + 1)))
    else:
        r = torch.as_tensor(data_range, dtype=dt, device=x.device)
    # Centre on the target's mean per sample: same SSIM, better float32 conditioning.
    c = y.detach().mean(dim=tuple(range(1, nd + 2)), keepdim=True)
    xc, yc = x - c, y - c
    ch = x.shape[1]
    moments = _separable(torch.cat([xc, yc, xc * xc + yc * yc, xc * yc], dim=1), k)
    ux, uy = moments[:, :ch], moments[:, ch:2 * ch]
    sxx_yy, sxy = moments[:, 2 * ch:3 * ch], moments[:, 3 * ch:]
    np_ = win_size**nd
    cn = np_ / (np_ - 1) if use_sample_covariance else 1.0
    c1, c2 = (K1 * r) ** 2, (K2 * r) ** 2
    vsum = cn * (sxx_yy - ux * ux - uy * uy)
    vxy = cn * (sxy - ux * uy)
    mx, my = ux + c, uy + c
    smap = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vsum + c2))
    if span < win_size:
        # The metric crops (win_size-1)/2 from each border; valid filtering cropped
        # (span-1)/2, so crop the rest.
        cut = (win_size - span) // 2
        smap = smap[(slice(None), slice(None), *(slice(cut, s - cut) for s in smap.shape[2:]))]
    if reduction == "none":
        return smap
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}.")
    return smap.mean()


class SSIMLoss(nn.Module):
    """``1 - SSIM(pred, target)``, differentiable, 2D and 3D.

    Parameters
    ----------
    win_size, gaussian_weights, sigma, K1, K2, use_sample_covariance
        As :func:`ssim_torch` (default: Gaussian window, sigma 1.5, 11 wide).
    data_range : float or None
        R in the constants; None uses each target patch's range (the images are
        normalised, so there is no fixed intensity span).
    """

    def __init__(self, *, win_size: int | None = None, gaussian_weights: bool = True,
                 sigma: float = 1.5, K1: float = 0.01, K2: float = 0.03,
                 use_sample_covariance: bool = True, data_range: float | None = None) -> None:
        super().__init__()
        self.options = dict(win_size=win_size, gaussian_weights=gaussian_weights, sigma=sigma,
                            K1=K1, K2=K2, use_sample_covariance=use_sample_covariance)
        self.data_range = data_range

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        _no_mask(mask, "ssim")
        return 1.0 - ssim_torch(pred, target, data_range=self.data_range, **self.options)


# --------------------------------------------------------------------------- perceptual


def _frozen(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


class PerceptualLoss(nn.Module):
    """Distance between deep features of a frozen network (a "perceptual" loss).

    The features are the levels of a UNet encoder (:class:`~napari_medseg.core.models.blocks.
    Encoder`): each level's activations of ``pred`` and ``target`` are compared with the mean
    absolute difference, and the levels are averaged. No gradient flows into the encoder.

    Which network
    -------------
    ``checkpoint``: a model trained with this project (``napari-medseg train``), typically a
    segmentation model trained on medical images, as the seed suggests ("a network trained on
    CT for another task"): its encoder has learnt anatomy-relevant features. Its first
    ``levels`` levels are used; a single restoration channel is repeated to the encoder's input
    channels. With ``checkpoint=None`` there is no download: a **randomly initialised, frozen**
    UNet encoder (fixed seed, instance norm, 16-32-64 feature maps) is used. Random
    convolutional features still respond to edges and textures at several scales, which is why
    they work as a perceptual distance (Ulyanov et al., deep image prior; Zhang et al. 2018
    report random networks as a meaningful baseline), but a trained encoder is better: pass one.

    Parameters
    ----------
    spatial_dims : {2, 3}
    checkpoint : str or None
        Path of a napari-medseg checkpoint whose model has an ``encoder``.
    levels : int
        Encoder levels compared (finest first).
    seed : int
        Seed of the random encoder (no checkpoint).
    """

    def __init__(self, *, spatial_dims: int, checkpoint: str | None = None, levels: int = 3,
                 seed: int = 0) -> None:
        super().__init__()
        from napari_medseg.core.config import ModelConfig
        from napari_medseg.core.models import build_model

        if checkpoint:
            from napari_medseg.core.checkpoint import load_checkpoint

            ckpt = load_checkpoint(checkpoint)
            if ckpt.model_config.spatial_dims != spatial_dims:
                raise ValueError(f"{checkpoint}: a {ckpt.model_config.spatial_dims}D model cannot "
                                 f"give features of {spatial_dims}D patches; pick a "
                                 f"{spatial_dims}D model for the perceptual loss.")
            model = ckpt.build_model()
            self.source = f"encoder of {checkpoint} ({ckpt.describe()})"
        else:
            cfg = ModelConfig(arch="unet", spatial_dims=spatial_dims, in_channels=1,
                              out_channels=1, base_width=16, depth=max(3, levels), norm="instance")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = build_model(cfg)
            self.source = f"random frozen UNet encoder (seed {seed}; no checkpoint given)"
        encoder = getattr(model, "encoder", None)
        if encoder is None:
            raise ValueError(f"{checkpoint}: model has no encoder to take features from.")
        self.encoder = _frozen(encoder)
        self.in_channels = int(model.config.in_channels)  # type: ignore[union-attr]
        self.levels = max(1, min(int(levels), len(self.encoder.levels)))  # type: ignore[arg-type]
        self.spatial_dims = spatial_dims

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.encoder.eval()  # frozen: batch-norm statistics never update
        return self

    def _features(self, x: Tensor) -> list[Tensor]:
        if x.shape[1] != self.in_channels:
            if x.shape[1] != 1:
                raise ValueError(f"perceptual: images have {x.shape[1]} channels, the encoder "
                                 f"takes {self.in_channels}.")
            x = x.expand(-1, self.in_channels, *x.shape[2:])
        fmt = torch.channels_last_3d if x.dim() == 5 else torch.channels_last
        x = x.float().contiguous(memory_format=fmt)
        feats = []
        for level in list(self.encoder.levels)[: self.levels]:  # type: ignore[union-attr]
            x = level(x)
            feats.append(x)
        return feats

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        _check_pair(pred, target, "perceptual")
        _no_mask(mask, "perceptual")
        if pred.dim() - 2 != self.spatial_dims:
            raise ValueError(f"perceptual: {self.spatial_dims}D encoder, "
                             f"{pred.dim() - 2}D images.")
        with torch.no_grad():
            ft = self._features(target)
        fp = self._features(pred)
        return torch.stack([(a - b).abs().mean() for a, b in zip(fp, ft)]).mean()


# --------------------------------------------------------------------------- adversarial


class PatchDiscriminator(nn.Module):
    """A small PatchGAN: strided convolutions to a map of real/fake scores (one per patch).

    ``layers`` stride-2 convolutions (4^d kernels, LeakyReLU 0.2, instance norm after the
    first) and a final 1-channel convolution; its receptive field is ~``16 * 2**(layers-2)``
    voxels, so it judges local texture (noise left, blur) rather than global content.
    """

    def __init__(self, *, spatial_dims: int, in_channels: int = 1, width: int = 32,
                 layers: int = 3) -> None:
        super().__init__()
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        norm = nn.InstanceNorm3d if spatial_dims == 3 else nn.InstanceNorm2d
        mods: list[nn.Module] = []
        cin = in_channels
        for i in range(layers):
            cout = width * 2**i
            mods.append(conv(cin, cout, 4, stride=2, padding=1))
            if i > 0:
                mods.append(norm(cout, affine=True))
            mods.append(nn.LeakyReLU(0.2, inplace=True))
            cin = cout
        mods.append(conv(cin, 1, 3, padding=1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class AdversarialLoss(nn.Module):
    """Least-squares GAN loss with its own :class:`PatchDiscriminator` (off by default).

    ``loss(pred, target)`` is the generator's term ``mean((D(pred) - 1)^2)``: small when the
    discriminator takes the restored patch for a clean one. The discriminator learns in
    :meth:`discriminator_step` (called by the training loop after each generator step via
    :meth:`CompositeLoss.after_step`) with Adam (lr 2e-4, betas 0.5/0.999), minimising
    ``0.5 * (mean((D(clean) - 1)^2) + mean(D(restored)^2))``. Use a small weight (0.001-0.01)
    next to a pixel loss: alone, a GAN invents texture.
    """

    def __init__(self, *, spatial_dims: int, in_channels: int = 1, lr: float = 2e-4,
                 width: int = 32, layers: int = 3) -> None:
        super().__init__()
        self.discriminator = PatchDiscriminator(spatial_dims=spatial_dims,
                                                in_channels=in_channels, width=width,
                                                layers=layers)
        self.lr = lr
        self._opt: torch.optim.Optimizer | None = None

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        _check_pair(pred, target, "adv")
        _no_mask(mask, "adv")
        return ((self.discriminator(pred.float()) - 1) ** 2).mean()

    def discriminator_step(self, pred: Tensor, target: Tensor) -> float:
        """One optimisation step of the discriminator; returns its loss."""
        if self._opt is None:
            self._opt = torch.optim.Adam(self.discriminator.parameters(), lr=self.lr,
                                         betas=(0.5, 0.999))
        d = self.discriminator
        loss = 0.5 * (((d(target.detach().float()) - 1) ** 2).mean()
                      + (d(pred.detach().float()) ** 2).mean())
        self._opt.zero_grad(set_to_none=True)
        loss.backward()
        self._opt.step()
        return float(loss.detach())


# --------------------------------------------------------------------------- specs


LossFactory = Callable[..., nn.Module]


def _make_l1(**_: Any) -> nn.Module:
    return L1Loss()


def _make_mse(**_: Any) -> nn.Module:
    return MSELoss()


def _make_ssim(*, spatial_dims: int, **options: Any) -> nn.Module:
    opts = {k: v for k, v in options.items() if k in ("win_size", "gaussian_weights", "sigma",
                                                       "data_range")}
    return SSIMLoss(**opts)


def _make_perceptual(*, spatial_dims: int, perceptual_checkpoint: str | None = None,
                     **_: Any) -> nn.Module:
    return PerceptualLoss(spatial_dims=spatial_dims, checkpoint=perceptual_checkpoint)


def _make_adv(*, spatial_dims: int, in_channels: int = 1, **_: Any) -> nn.Module:
    return AdversarialLoss(spatial_dims=spatial_dims, in_channels=in_channels)


RESTORATION_LOSSES: dict[str, LossFactory] = {
    "l1": _make_l1,
    "mse": _make_mse,
    "ssim": _make_ssim,
    "perceptual": _make_perceptual,
    "adv": _make_adv,
}
"""Loss name -> factory ``f(*, spatial_dims, **options) -> nn.Module``."""

#: Other accepted spellings.
ALIASES = {"mae": "l1", "l2": "mse", "adversarial": "adv", "gan": "adv"}

#: Losses that are defined per pixel (and so accept a blind-spot mask).
PIXELWISE = ("l1", "mse")

_TERM = re.compile(r"^\s*(?:(?P<w>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*\*\s*)?"
                   r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*$")


def parse_loss_spec(spec: str) -> list[tuple[float, str]]:
    """``"0.8*l1+0.2*ssim"`` -> ``[(0.8, "l1"), (0.2, "ssim")]`` (canonical names).

    Raises
    ------
    ValueError
        Empty spec, a term that is not ``[weight*]name``, an unknown name (the message
        lists the valid ones), a negative or zero total weight, or a name used twice.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"A restoration loss spec is like 'l1+ssim' or '0.8*l1+0.2*ssim', got "
                         f"{spec!r}.")
    out: list[tuple[float, str]] = []
    for term in spec.split("+"):
        m = _TERM.match(term)
        if not m:
            raise ValueError(f"Cannot read {term.strip()!r} in loss {spec!r}; write terms as "
                             "'name' or 'weight*name', e.g. '0.8*l1+0.2*ssim'.")
        name = m.group("name").lower()
        name = ALIASES.get(name, name)
        if name not in RESTORATION_LOSSES:
            raise ValueError(f"Unknown restoration loss {m.group('name')!r} in {spec!r}; valid "
                             f"names are {', '.join(RESTORATION_LOSSES)} (aliases "
                             f"{', '.join(ALIASES)}).")
        if any(n == name for _, n in out):
            raise ValueError(f"Loss {name!r} appears twice in {spec!r}; add the weights.")
        w = float(m.group("w")) if m.group("w") else 1.0
        if not math.isfinite(w):
            raise ValueError(f"Weight of {name!r} in {spec!r} is not finite.")
        out.append((w, name))
    if sum(w for w, _ in out) <= 0:
        raise ValueError(f"Loss {spec!r} has no positive weight.")
    return out


class CompositeLoss(nn.Module):
    """A weighted sum of named restoration losses.

    ``last_terms`` holds each term's (unweighted) value of the last call, for logging.
    ``after_step(pred, target)`` runs the adversarial discriminator's update, if any.
    """

    def __init__(self, terms: Sequence[tuple[float, str, nn.Module]]) -> None:
        super().__init__()
        self.weights = [float(w) for w, _, _ in terms]
        self.names = [n for _, n, _ in terms]
        self.parts = nn.ModuleList([m for _, _, m in terms])
        self.last_terms: dict[str, float] = {}

    @property
    def spec(self) -> str:
        """Canonical spec, e.g. ``"0.8*l1+0.2*ssim"``."""
        return "+".join(n if w == 1 else f"{w:g}*{n}" for w, n in zip(self.weights, self.names))

    @property
    def pixelwise(self) -> bool:
        """True when every term accepts a pixel mask (Noise2Void)."""
        return all(n in PIXELWISE for n in self.names)

    @property
    def adversarial(self) -> bool:
        return "adv" in self.names

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        total: Tensor | None = None
        terms = {}
        for w, n, m in zip(self.weights, self.names, self.parts):
            v = m(pred, target, mask)
            terms[n] = float(v.detach())
            total = w * v if total is None else total + w * v
        self.last_terms = terms
        assert total is not None
        return total

    def after_step(self, pred: Tensor, target: Tensor) -> dict[str, float]:
        """Update auxiliary networks (the discriminator); returns their losses."""
        out = {}
        for n, m in zip(self.names, self.parts):
            if isinstance(m, AdversarialLoss):
                out["discriminator"] = m.discriminator_step(pred, target)
        return out


def make_restoration_loss(spec: str, *, spatial_dims: int, in_channels: int = 1,
                          perceptual_checkpoint: str | None = None,
                          **options: Any) -> CompositeLoss:
    """Build the weighted sum a spec names.

    Parameters
    ----------
    spec : str
        ``"l1"``, ``"l1+ssim"``, ``"0.8*l1+0.2*ssim"``, ``"mse+0.1*perceptual+0.01*adv"``.
    spatial_dims : {2, 3}
        Of the training patches.
    in_channels : int
        Image channels (for the discriminator).
    perceptual_checkpoint : str or None
        Model whose encoder gives the perceptual features (see :class:`PerceptualLoss`).
    **options
        SSIM options (``win_size``, ``gaussian_weights``, ``sigma``, ``data_range``).

    Returns
    -------
    CompositeLoss
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
    terms = []
    for w, name in parse_loss_spec(spec):
        mod = RESTORATION_LOSSES[name](spatial_dims=spatial_dims, in_channels=in_channels,
                                       perceptual_checkpoint=perceptual_checkpoint, **options)
        terms.append((w, name, mod))
    return CompositeLoss(terms)
