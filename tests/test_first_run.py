"""The first hour: checks that need no model answer before torch loads, with the same words as the full path."""
from __future__ import annotations

import inspect
from pathlib import Path
import subprocess
import sys

import pytest
from PIL import Image


def _run_without_torch(code: str) -> tuple[str, bool]:
    """Run ``code`` in a fresh interpreter; (its stdout, whether torch got imported)."""
    res = subprocess.run([sys.executable, "-c", code + "\nimport sys; print('TORCH', 'torch' in sys.modules)"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    out, _, flag = res.stdout.rpartition("TORCH ")
    return out + res.stderr, flag.strip() == "True"


def test_baseline_list_reads_the_classes_without_importing_torch():
    out, torch_loaded = _run_without_torch("from deepsift.cli import main; main(['baseline', 'list'])")
    assert not torch_loaded
    from deepsift.evaluate.baselines import BASELINE_NAMES, baseline_class

    for name in BASELINE_NAMES:  # the same text the imported classes give
        cls = baseline_class(name)
        params = [f"{k}={v.default!r}" for k, v in inspect.signature(cls.__init__).parameters.items()
                  if k != "self" and v.kind is v.POSITIONAL_OR_KEYWORD]
        assert f"{name:10s} {(cls.__doc__ or '').strip().splitlines()[0]}" in out
        assert ", ".join(params) in out


@pytest.mark.parametrize("option", [["--device", "cuda"], ["--devices", "cuda:0,cuda:1"]])
def test_cuda_without_a_cuda_torch_is_refused_before_torch_loads(option, tmp_path):
    from deepsift.cli import torch_has_cuda

    if torch_has_cuda() is not False:
        pytest.skip("this torch has CUDA: the full device check applies")
    img = tmp_path / "a.png"
    Image.new("RGB", (32, 32)).save(img)
    code = (f"from deepsift.cli import main; rc = main(['detect', {str(img)!r}, *{option!r}]); "
            "print('RC', rc)")
    out, torch_loaded = _run_without_torch(code)
    assert "RC 1" in out and not torch_loaded
    assert "is not usable here (this torch has no CUDA support)" in out
    assert "Traceback" not in out


def test_json_rows_follow_the_documented_column_order():
    """detect's json/jsonl keys come in the README's order: source, verdict, label, probability, score, ..."""
    from deepsift.model.detector import Prediction
    from deepsift.output import PREDICTION_COLUMNS

    row = Prediction("a.png", label=1, score=2.0, probability=0.9, head="linear").to_dict()
    assert list(row) == PREDICTION_COLUMNS == ["source", "verdict", "label", "probability", "score", "head",
                                               "generator", "error"]
    assert list(Prediction("b.png", error="unreadable").to_dict()) == PREDICTION_COLUMNS
    docs = " ".join((Path(__file__).resolve().parent.parent / "docs" / "guides" / "detect.md").read_text().split())
    assert "`source, verdict, label (1 = fake), probability (calibrated P(fake)), score" in docs


def test_a_ray_usage_error_is_said_before_torch_loads(tmp_path, code_model_dir):
    img = tmp_path / "a.png"
    Image.new("RGB", (32, 32)).save(img)
    code = (f"from deepsift.cli import main; rc = main(['detect', {str(img)!r}, '--ray', 'auto', '--model', "
            f"{str(code_model_dir)!r}]); print('RC', rc)")
    out, torch_loaded = _run_without_torch(code)
    assert "RC 2" in out and "give --out FILE.jsonl and --format jsonl" in out and not torch_loaded


def test_a_finished_add_to_says_so_before_torch_loads(plugin_dist, tmp_path, capsys):
    """``data build --add-to`` with every shard already grown: the same summary as the full path, without
    importing torch or loading the generator."""
    from data_factory import make_shards

    from deepsift.cli import main

    base = tmp_path / "base"
    make_shards(base, 6, per_shard=3, n_gen=1)
    spec = "flat=plugin:solid,size=8"
    assert main(["data", "build", "--add-to", str(base), "-g", spec]) == 0  # grows both shards (torch loads here)
    capsys.readouterr()
    before = {p.name: p.stat().st_mtime_ns for p in base.iterdir()}
    code = f"from deepsift.cli import main; print('RC', main(['data', 'build', '--add-to', {str(base)!r}, '-g', {spec!r}]))"
    out, torch_loaded = _run_without_torch(code)
    assert "RC 0" in out and not torch_loaded, out
    assert "nothing to do, all 2 shard(s) were already done (6 record(s) from 6 input record(s))" in out
    assert "images per generator: flat=6" in out and "Traceback" not in out
    assert {p.name: p.stat().st_mtime_ns for p in base.iterdir()} == before  # nothing rewritten
    # a generator not yet there: the full path (a shard to grow), same as before this shortcut
    assert main(["data", "build", "--add-to", str(base), "-g", "flat2=plugin:solid,size=4", "-q"]) == 0
