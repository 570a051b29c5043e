"""The public names resolve, the CLI lists every area, and `python -m deepsift` works."""
from __future__ import annotations

import subprocess
import sys

import deepsift
from deepsift.cli import build_parser


def test_all_names_resolve():
    for name in deepsift.__all__:
        assert getattr(deepsift, name) is not None
    from deepsift.model.detector import Detector, Prediction

    assert deepsift.Detector is Detector and deepsift.Prediction is Prediction


def test_every_command_area_is_registered():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"detect", "embed", "heads", "weights", "export", "data", "eval", "baseline"} <= set(sub.choices)
    data = sub.choices["data"]._actions[-1].choices
    assert {"info", "fetch-real", "export-wds", "split", "build"} <= set(data)


def test_module_entry_point_prints_version():
    res = subprocess.run([sys.executable, "-m", "deepsift", "--version"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == f"deepsift {deepsift.__version__}"
