"""The one rule: core and cli never import the GUI stack (import-linter contract in pyproject)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    exe = Path(sys.executable).with_name("lint-imports")
    res = subprocess.run([str(exe), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 kept, 0 broken" in res.stdout


def test_importing_package_and_core_loads_no_qt_or_napari():
    code = ("import sys, napari_medseg, napari_medseg.cli, napari_medseg.core.engine, "
            "napari_medseg.core.pipeline;"
            "bad=[m for m in ('napari','qtpy','PyQt6','magicgui','superqt') if m in sys.modules];"
            "print(bad); assert not bad")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_package_import_does_not_load_torch():
    code = "import sys, napari_medseg; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
