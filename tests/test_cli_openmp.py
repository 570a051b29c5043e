"""The ``deepsift`` command shortens libgomp's spin-wait (``GOMP_SPINCOUNT``) before torch loads, unless told otherwise."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from deepsift import cli

PROBE = ("import os, sys\n{before}from deepsift.cli import quiet_openmp_spin\nquiet_openmp_spin()\n"
         "print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))")


@pytest.mark.parametrize("env, before, expected", [
    ({}, "", f"{cli.OPENMP_SPIN} None"),
    ({"GOMP_SPINCOUNT": "5"}, "", "5 None"),  # the user's own count
    ({"OMP_WAIT_POLICY": "passive"}, "", "None passive"),  # libgomp would let GOMP_SPINCOUNT override it
    ({}, "import torch\n", "None None"),  # too late: libgomp has read its settings
])
def test_the_command_sets_a_short_openmp_spin_unless_the_user_chose_one(env, before, expected):
    base = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", PROBE.format(before=before)], env={**base, **env},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected


def test_main_sets_it_first(monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "quiet_openmp_spin", lambda: calls.append(True))
    assert cli.main(["--version"]) == 0 and calls == [True]
