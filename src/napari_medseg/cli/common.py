"""What the commands share: the user-facing :class:`CliError`, printing training events,
and reading checkpoints, channel files and --pred/--ref pairs with one set of checks."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_medseg.core import io


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(outputs: Sequence[tuple[str, str | None]],
                  inputs: Sequence[str | None] = ()) -> None:
    """Refuse, before any work, outputs that cannot be written or would destroy an input.

    Parameters
    ----------
    outputs : sequence of (flag, path)
        The command's output files (``("--out", "m.pt")``); None paths are skipped.
    inputs : sequence of str
        Every file the command reads: an output naming one of them would overwrite the
        user's data (a label file replaced by a model, an image by its prediction).

    Raises
    ------
    CliError
        An output is a folder, lies in a missing or read-only folder, is an input, or
        is named twice; the message says which and what to do.
    """
    seen: dict[str, str] = {}
    for flag, path in outputs:
        if not path:
            continue
        out = Path(path)
        if out.is_dir():
            raise CliError(f"{flag} {path} is a folder; give a file name (one inside it, or "
                           "another name).")
        # A missing folder is made when writing (batch scripts write results/<case>/...):
        # check the nearest one that exists.
        parent = out.parent if str(out.parent) else Path(".")
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise CliError(f"{flag} {path}: {parent} is a file, not a folder; write elsewhere.")
        if not os.access(parent, os.W_OK):
            raise CliError(f"{flag} {path}: cannot write in {parent} (permission denied); "
                           "write elsewhere.")
        for src in inputs:
            if src and (_same_file(out, Path(src)) or out.resolve() == Path(src).resolve()):
                raise CliError(f"{flag} {path} is also an input of this command; writing it "
                               "would destroy that file. Give the output another name.")
        key = str(out.resolve())
        if key in seen:
            raise CliError(f"{flag} and {seen[key]} name the same file {path}; give each its "
                           "own name.")
        seen[key] = flag


@contextlib.contextmanager
def all_or_nothing(paths: Sequence[str | None]) -> Iterator[dict[str, str]]:
    """Write several outputs so that either all of them appear or none changes.

    Yields ``{final path: temporary path}`` (:func:`~napari_medseg.core.io.atomic_write`
    for each); an error while writing any of them removes every temporary file and
    leaves the final paths as they were.
    """
    for p in paths:
        if p:
            Path(p).parent.mkdir(parents=True, exist_ok=True)  # results/<case>/... as before
    with contextlib.ExitStack() as stack:
        yield {str(p): stack.enter_context(io.atomic_write(p)) for p in paths if p}


def _progress_printer(every_s: float = 2.0) -> Callable[[Any], None]:
    """A callback printing inference ``Progress`` at most every ``every_s`` s, and the last one."""
    last = [0.0]

    def show(ev: Any) -> None:
        if time.perf_counter() - last[0] > every_s or ev.done == ev.total:
            last[0] = time.perf_counter()
            print(f"  {ev.stage} {ev.done}/{ev.total}", flush=True)

    return show


def _print_event(ev: Any, *, every: int = 25) -> None:
    from napari_medseg.core.events import EpochDone, Message, StepDone, Validated

    if isinstance(ev, StepDone) and ev.step % every == 0:
        eta = f", eta {ev.eta_s:.0f}s" if ev.eta_s is not None else ""
        print(f"  step {ev.step}: loss {ev.loss:.4f}{eta}", flush=True)
    elif isinstance(ev, EpochDone):
        print(f"epoch {ev.epoch}: loss {ev.loss:.4f} ({ev.elapsed_s:.0f}s)", flush=True)
    elif isinstance(ev, Validated):
        per = ", ".join(f"{k}: {'absent' if v is None else f'{v:.3f}'}" for k, v in ev.dice.items())
        print(f"  validation dice {ev.mean_dice:.3f} [{per}]{' *best*' if ev.best else ''}",
              flush=True)
    elif isinstance(ev, Message):
        print(ev.text, flush=True)


def _load_model(path: str, task: str, other_task_hint: str) -> Any:
    """Load a checkpoint for ``task``; a missing, foreign or other-task file is a CliError."""
    from napari_medseg.core.checkpoint import load_checkpoint

    try:
        ckpt = load_checkpoint(path)
    except (ValueError, FileNotFoundError) as exc:
        raise CliError(str(exc)) from exc
    if ckpt.task != task:
        raise CliError(f"{path} is a {ckpt.task!r} model, not a {task!r} model; {other_task_hint}")
    return ckpt


def placed_apart(a: Any, b: Any) -> bool:
    """Whether two volumes' affines differ by more than rounding (0.01 mm, 0.1 % in the axes)."""
    return not (a.affine is None or b.affine is None
                or np.allclose(a.affine, b.affine, rtol=1e-3, atol=1e-2))


def warn_if_placed_apart(a: Any, b: Any) -> bool:
    """Warn (stderr) when two volumes of one shape have different affines; True if so.

    Voxels pair by index, so a label file saved with another orientation or origin
    than its image (or a prediction than its reference) would pair the wrong voxels
    without any error. Differences below 0.01 mm (and 0.1 % in the axes) are rounding.
    """
    if not placed_apart(a, b):
        return False
    print(f"warning: {b.path} and {a.path} have the same shape but different affines "
          "(orientation, voxel size or origin); their voxels are paired by index. Check that "
          "they belong together, or resample one onto the other's grid.", file=sys.stderr)
    return True


def _read_channels(paths: Sequence[str]) -> list[Any]:
    """Read one image's channel files, which must share one grid."""
    vols = [io.read_spatial(p) for p in paths]
    for v in vols[1:]:
        if v.data.shape != vols[0].data.shape:
            raise CliError(f"{v.path} has shape {v.data.shape} but {vols[0].path} has "
                           f"{vols[0].data.shape}; all channels must share one grid: "
                           f"resample {Path(v.path).name} onto it.")
        warn_if_placed_apart(vols[0], v)
    return vols


def _read_pred_ref(args: argparse.Namespace, verb: str) -> tuple[Any, Any]:
    """Read ``--pred`` and ``--ref``, which must share one grid (``verb``: how to fix it)."""
    pred, ref = io.read_spatial(args.pred), io.read_spatial(args.ref)
    if pred.data.shape != ref.data.shape:
        raise CliError(f"{args.pred} has shape {pred.data.shape} but {args.ref} has "
                       f"{ref.data.shape}; {verb} on the reference's grid.")
    warn_if_placed_apart(ref, pred)
    return pred, ref


def _evaluate_axis(args: argparse.Namespace, vol: Any) -> int | None:
    """The slicing axis of ``--per-slice``, or None without it.

    Default: the slice axis of how ``vol`` (a read ``--ref``) is stored -- the last for
    NIfTI (axial in RAS), the first for TIFF/PNG stacks (Z, Y, X), as ``predict`` slices
    them. A 2D image is one slice: its rows or columns only with an explicit ``--axis``.
    """
    ndim = vol.data.ndim
    if args.axis is not None and not args.per_slice:
        raise CliError("--axis chooses the slicing axis of --per-slice; add --per-slice.")
    if not args.per_slice:
        return None
    if ndim < 2:
        raise CliError(f"--per-slice needs 2D or 3D images, got {ndim}D.")
    if args.axis is None and ndim == 2:
        raise CliError(f"{vol.path} is a 2D image, a single slice: --per-slice needs --axis 0 "
                       "(one score per row) or --axis 1 (per column).")
    default = ndim - 1 if io.is_nifti(vol.path) else 0
    axis = default if args.axis is None else args.axis
    if not -ndim <= axis < ndim:
        raise CliError(f"--axis {args.axis} is out of range for {ndim}D images; pass "
                       f"0..{ndim - 1}.")
    return axis % ndim
