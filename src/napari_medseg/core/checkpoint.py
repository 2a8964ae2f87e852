"""Model files: one self-describing checkpoint, written atomically, loaded safely.

A checkpoint is untrusted input: it is loaded with ``weights_only=True`` and
holds only tensors and plain Python values (no pickled classes).
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from napari_medseg.core.config import ModelConfig, TrainConfig
from napari_medseg.core.data import LabelMapping
from napari_medseg.core.decision import uses_threshold
from napari_medseg.core.io import atomic_write
from napari_medseg.core.normalize import ChannelNorm, norms_from_dicts

FORMAT = "napari-medseg-checkpoint"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """Everything needed to use a trained model on new data.

    Attributes
    ----------
    model_config, train_config : ModelConfig, TrainConfig
    mapping : LabelMapping
        Label values of the training labels.
    norms : tuple of ChannelNorm
        Per-channel intensity normalisation fitted on the training data.
    spacing : tuple of float or None
        Voxel spacing (mm) the model was trained at (None: native grid).
    state_dict : dict
        Model weights.
    history : list of dict
        Metrics per validation.
    task : str
        "segment" or "restore" (a restoration network: settings in ``extra["restore"]``).
    channel_names : list of str
    fingerprints : list of str
        Content hashes of the training data.
    versions : dict
        Software versions that wrote the file.
    extra : dict
        Anything else JSON-like (e.g. crop margin).
    """

    model_config: ModelConfig
    train_config: TrainConfig
    mapping: LabelMapping
    norms: tuple[ChannelNorm, ...]
    spacing: tuple[float, ...] | None
    state_dict: dict[str, torch.Tensor]
    history: list[dict[str, Any]] = field(default_factory=list)
    task: str = "segment"
    channel_names: list[str] = field(default_factory=list)
    fingerprints: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def build_model(self) -> torch.nn.Module:
        """Instantiate the network with the stored weights (on the CPU, eval mode)."""
        from napari_medseg.core.models import build_model

        model = build_model(self.model_config)
        model.load_state_dict(self.state_dict)
        return model.eval()

    def describe(self) -> str:
        """One line for people: what the model does, expects and produces.

        Segmentation models list their label values and training grid;
        restoration models (``task == "restore"``) their training mode,
        degradation, loss and best validation PSNR -- label values mean nothing
        for them.
        """
        mc = self.model_config
        chans = f"{mc.in_channels} channel(s)"
        if self.channel_names:
            chans += " (" + ", ".join(self.channel_names) + ")"
        if self.task == "restore":
            return f"{mc.spatial_dims}D {mc.arch} restoration model, {chans}, " + \
                _describe_restoration(self.extra.get("restore", {}), self.history)
        if self.task != "segment":
            return f"{mc.spatial_dims}D {mc.arch} {self.task} model, {chans}"
        tc = self.train_config
        sp = replace(tc, spacing=self.spacing).spacing_text()
        # argmax among several foreground classes reads no threshold: do not claim one
        used = uses_threshold(mc.out_channels, tc.decision)
        thr = f", foreground above {tc.threshold:g}" if used and tc.threshold != 0.5 else ""
        return (f"{mc.spatial_dims}D {mc.arch}, {chans}, "
                f"label values {list(self.mapping.values)}, trained at {sp}{thr}")


_MODE_WORDS = {"pairs": "trained on noisy/clean pairs",
               "synthetic": "trained on clean images with synthetic",
               "noise2void": "self-supervised (Noise2Void) on noisy images"}


def _describe_restoration(rc: dict[str, Any], history: list[dict[str, Any]]) -> str:
    """The restoration part of :meth:`Checkpoint.describe` (tolerates missing keys)."""
    mode = str(rc.get("mode", "?"))
    how = _MODE_WORDS.get(mode, f"mode {mode}")
    if mode == "synthetic":
        deg = str(rc.get("degrade", "")) or "?"
        try:
            from napari_medseg.core.degrade import describe as describe_degradation

            deg = describe_degradation(deg)
        except ValueError:  # a spec from a newer version: show it as written
            pass
        how += f" {deg}"
    out = f"{how}, loss {rc.get('loss', '?')}"
    psnrs = [h["psnr"] for h in history if isinstance(h, dict) and h.get("psnr") is not None]
    if psnrs:
        out += f", best validation PSNR {max(psnrs):.2f} dB"
    return out


def _versions() -> dict[str, str]:
    import numpy

    from napari_medseg import __version__

    return {"napari_medseg": __version__, "torch": str(torch.__version__), "numpy": str(numpy.__version__),
            "python": platform.python_version()}


def save_checkpoint(path: str | os.PathLike[str], ckpt: Checkpoint) -> str:
    """Write ``ckpt`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "task": ckpt.task,
        "model_config": ckpt.model_config.to_dict(),
        "train_config": ckpt.train_config.to_dict(),
        "label_values": list(ckpt.mapping.values),
        "normalization": [n.to_dict() for n in ckpt.norms],
        "spacing": None if ckpt.spacing is None else [float(s) for s in ckpt.spacing],
        "history": ckpt.history,
        "channel_names": list(ckpt.channel_names),
        "fingerprints": list(ckpt.fingerprints),
        "versions": ckpt.versions or _versions(),
        "extra": ckpt.extra,
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in ckpt.state_dict.items()},
    }
    with atomic_write(p, suffix=".tmp") as tmp:
        torch.save(payload, tmp)
    return str(p)


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Not a napari-medseg model (another tool's ``.pt``, a corrupt file, a
        file with pickled code, a newer format); the message says which.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such model file.")
    try:
        payload = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors, or objects refused by weights_only
        raise ValueError(
            f"{p}: not a loadable napari-medseg model ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). It may be corrupt, or a file from "
            "another tool that needs code to unpickle (refused for safety). Train a model with "
            "`napari-medseg train` or pick the .pt it wrote.") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{p}: this .pt file is not a napari-medseg model (no "
                         f"'{FORMAT}' marker); pick a model written by napari-medseg.")
    if int(payload.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{p}: written by a newer napari-medseg (format "
                         f"{payload['format_version']} > {FORMAT_VERSION}); upgrade napari-medseg.")
    try:
        sp = payload.get("spacing")
        ck = Checkpoint(
            model_config=ModelConfig.from_dict(payload["model_config"]),
            train_config=TrainConfig.from_dict(payload["train_config"]),
            mapping=LabelMapping(tuple(int(v) for v in payload["label_values"])),
            norms=norms_from_dicts(payload["normalization"]),
            spacing=None if sp is None else tuple(float(s) for s in sp),
            state_dict=payload["state_dict"],
            history=list(payload.get("history", [])),
            task=str(payload.get("task", "segment")),
            channel_names=list(payload.get("channel_names", [])),
            fingerprints=list(payload.get("fingerprints", [])),
            versions=dict(payload.get("versions", {})),
            extra=dict(payload.get("extra", {})),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{p}: napari-medseg model file is incomplete or damaged ({exc}).") from exc
    _check_fits(ck, p)
    return ck


def _check_fits(ck: Checkpoint, p: Path) -> None:
    """Refuse a marked file whose parts disagree (weights vs architecture, outputs vs label
    values): a damaged file, or one from a version with other layer names, would otherwise
    fail deep inside prediction with a torch error."""
    made_by = ck.versions.get("napari_medseg")
    fix = ("Retrain it" + (f", or use napari-medseg {made_by}, which wrote it" if made_by else "")
           + ".")
    try:
        ck.build_model()
    except Exception as exc:  # noqa: BLE001 - load_state_dict's size/key errors, odd configs
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{p}: its weights do not fit the network it describes ({first[:200]}); "
                         f"the file is damaged or from an incompatible version. {fix}") from exc
    if ck.task == "segment":
        n, k = ck.model_config.out_channels, ck.mapping.num_classes
        if not (n == k or (n == 1 and k == 2)):
            raise ValueError(f"{p}: the network has {n} output(s) but the file lists {k} label "
                             f"values {list(ck.mapping.values)}; the file is damaged. {fix}")
