"""Loss specs (``"0.8*l1+0.2*ssim"``): the name -> factory table, parsing, the weighted sum."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

from napari_medseg.core.losses.restoration.adversarial import AdversarialLoss
from napari_medseg.core.losses.restoration.perceptual import PerceptualLoss
from napari_medseg.core.losses.restoration.pixel import L1Loss, MSELoss
from napari_medseg.core.losses.restoration.ssim import SSIMLoss

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
