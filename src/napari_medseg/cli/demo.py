"""The ``demo`` command: napari on sample data, or train and segment a phantom headless.

The viewer is started through :mod:`napari_medseg.gui.launch`, imported by name only
when a display is there, so the CLI never imports napari or Qt.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

import numpy as np

from napari_medseg.cli.common import _print_event


#: Starts a Qt application and exits: Qt aborts the whole process when the display it was
#: given cannot be reached, so the demo asks a child process first.
_QT_PROBE = "from qtpy.QtWidgets import QApplication; QApplication([])"


def _has_display() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _display_problem() -> str | None:
    """Why napari cannot open a window here (no display, no Qt, display unreachable), or None."""
    if not _has_display():
        return "no display"
    import subprocess

    try:
        done = subprocess.run([sys.executable, "-c", _QT_PROBE], capture_output=True, text=True,
                              timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"could not start Qt ({exc})"
    if done.returncode == 0:
        return None
    lines = [ln.strip() for ln in (done.stderr or "").splitlines() if ln.strip()]
    why = next((ln for ln in lines if "display" in ln.lower()), lines[-1] if lines else "")
    return f"Qt cannot open a window ({why or f'exit status {done.returncode}'})"


def run_headless_demo(seconds: float | None = 20.0, *, epochs: int | None = None, seed: int = 0
                      ) -> dict[int, float | None]:
    """Train on one generated phantom, segment another, return Dice per tissue label.

    ``seconds`` bounds the training time; ``epochs`` (25 steps each) bounds the
    work instead, for results that do not depend on the machine's speed.
    """
    from napari_medseg.core.config import ModelConfig, TrainConfig
    from napari_medseg.core.data import LabelMapping
    from napari_medseg.core.engine import fit, run
    from napari_medseg.core.metrics import dice_per_class
    from napari_medseg.core.pipeline import segment
    from napari_medseg.core.prepare import prepare_case
    from napari_medseg.core.sample import PHANTOM_CLASSES, brain_phantom

    train, test = brain_phantom(seed=seed), brain_phantom(seed=seed + 1)
    mapping = LabelMapping.from_labels([train.labels])
    tc = TrainConfig(patch_size=(64, 64), batch_size=8, loss="dice_ce", epochs=epochs,
                     minutes=None if seconds is None else seconds / 60, steps_per_epoch=25,
                     seed=seed, lr=3e-3)
    mc = ModelConfig(spatial_dims=2, in_channels=2, out_channels=mapping.num_classes,
                     base_width=16, depth=4)
    case, _ = prepare_case([train.t1, train.flair], train.labels, train.spacing, mapping=mapping,
                           config=tc, name="phantom seed 0")
    limit = f"{seconds:.0f}s" if seconds is not None else f"{epochs} epochs"
    print(f"demo: training a 2D UNet on a generated brain phantom for {limit}", flush=True)
    res = run(fit([case], model_config=mc, train_config=tc, mapping=mapping,
                  channel_names=["T1", "FLAIR"]), _print_event)
    seg = run(segment(res.checkpoint, [test.t1, test.flair], test.spacing, model=res.model))
    dice = dice_per_class(seg.labels, test.labels, labels=[1, 2, 3, 4])
    print("Dice on an unseen phantom (seed %d):" % (seed + 1))
    for k, d in dice.items():
        print(f"  {PHANTOM_CLASSES[k]:>12}: {'absent' if d is None else f'{d:.3f}'}")
    vals = [d for d in dice.values() if d is not None]
    print(f"mean Dice {np.mean(vals):.3f}")
    hint = weak_classes_hint(dice, seconds)
    if hint:
        print(hint)
    return dice


def weak_classes_hint(dice: dict[int, float | None], seconds: float | None) -> str | None:
    """What to do when a class scored low: small ones (CSF, 0.4% of the phantom) are learnt
    last, so a slow machine's short demo can end before them -- a Dice of 0 is not a bug."""
    from napari_medseg.core.sample import PHANTOM_CLASSES

    weak = [PHANTOM_CLASSES[k] for k, d in dice.items() if d is not None and d < 0.5]
    if not weak:
        return None
    longer = f" --seconds {max(60, int(3 * seconds))}" if seconds is not None else ""
    return (f"{', '.join(weak)}: small structures are learnt last and this run ended before "
            f"them; train longer to see them segmented (napari-medseg demo --headless{longer}).")


def cmd_demo(args: argparse.Namespace) -> int:
    if not args.headless:
        problem = _display_problem()
        if problem is None:
            try:
                launch = importlib.import_module("napari_medseg.gui.launch")
                return int(launch.open_demo_viewer())
            except ImportError as exc:  # napari or a Qt binding missing (the qt extra)
                print(f"napari/Qt unavailable ({exc}); running the headless demo.", flush=True)
        elif _has_display():  # a display was named but cannot be used: say why
            print(f"{problem}; running the headless demo.", flush=True)
    run_headless_demo(args.seconds, seed=args.seed)
    return 0
