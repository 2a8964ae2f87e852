"""Command line: ``napari-medseg demo | train | predict | restore | evaluate | raters``.

A thin argparse front over the core, one module per command family
(:mod:`~napari_medseg.cli.segment`, :mod:`~napari_medseg.cli.predict`,
:mod:`~napari_medseg.cli.restore`,
:mod:`~napari_medseg.cli.raters`, :mod:`~napari_medseg.cli.demo`; the parser and
:func:`main` in :mod:`~napari_medseg.cli.parser`). It prints the engine's events; it never
imports napari or Qt (the demo's viewer is started through
:mod:`napari_medseg.gui.launch`, imported only when a display is there).
"""

from __future__ import annotations

import os

# OpenMP's default busy-wait spins threads between ops; on a shared 2-core machine that made
# a 2D training step 8x slower (4.0 s vs 0.52 s). Must be set before torch is imported, so
# here, before any command module (a submodule import runs this file first).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from napari_medseg.cli.common import CliError  # noqa: E402
from napari_medseg.cli.demo import cmd_demo, run_headless_demo  # noqa: E402
from napari_medseg.cli.parser import build_parser, main  # noqa: E402
from napari_medseg.cli.raters import cmd_raters  # noqa: E402
from napari_medseg.cli.restore import (  # noqa: E402
    cmd_evaluate_restore,
    cmd_restore,
    cmd_train_restore,
)
from napari_medseg.cli.predict import cmd_predict  # noqa: E402
from napari_medseg.cli.segment import (  # noqa: E402
    SEG_LOSS_NAMES,
    cmd_evaluate,
    cmd_train,
)

__all__ = [
    "SEG_LOSS_NAMES",
    "CliError",
    "build_parser",
    "cmd_demo",
    "cmd_evaluate",
    "cmd_evaluate_restore",
    "cmd_predict",
    "cmd_raters",
    "cmd_restore",
    "cmd_train",
    "cmd_train_restore",
    "main",
    "run_headless_demo",
]
