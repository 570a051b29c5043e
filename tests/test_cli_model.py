"""The detector commands end to end: heads fit, detect in every format, embed, export onnx, offline errors."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from deepsift.cli import main


@pytest.fixture(scope="module")
def fitted(code_model_dir, labelled_folders, tmp_path_factory):
    out = tmp_path_factory.mktemp("fitted") / "heads"
    fake_root = labelled_folders["gen_a"].parent
    rc = main(["heads", "fit", "--real", str(labelled_folders["real"]), "--fake", str(labelled_folders["gen_a"]),
               "--fake", str(labelled_folders["gen_b"]), "--model", str(code_model_dir), "--out", str(out)])
    assert rc == 0
    return out, fake_root


def test_heads_fit_writes_all_and_per_generator_heads(fitted):
    out, _ = fitted
    index = json.loads((out / "heads.json").read_text())
    assert set(index["heads"]) == {"linear", "knn", "svm", "linear:gen_a", "linear:gen_b", "knn:gen_a",
                                   "knn:gen_b", "svm:gen_a", "svm:gen_b"}
    assert index["preprocessing"] == "official"


def run(args, stdin=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "deepsift", *args], input=stdin, capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv", "table"])
def test_detect_formats(fitted, code_model_dir, labelled_folders, tmp_path, fmt):
    heads, _ = fitted
    out = tmp_path / f"res.{fmt}"
    rc = main(["detect", str(labelled_folders["real"]), str(labelled_folders["gen_a"]), "--model", str(code_model_dir),
               "--heads", str(heads), "--format", fmt, "--out", str(out), "--batch-size", "5"])
    assert rc == 0
    text = out.read_text()
    if fmt == "json":
        rows = json.loads(text)
    elif fmt == "jsonl":
        rows = [json.loads(line) for line in text.splitlines()]
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
    else:
        lines = text.splitlines()
        assert lines[0].split()[:3] == ["source", "verdict", "label"] and len(lines) == 25
        return
    assert len(rows) == 24
    verdicts = [r["verdict"] for r in rows]
    assert verdicts == ["real"] * 12 + ["fake"] * 12
    assert {r["generator"] for r in rows[12:]} <= {"gen_a", "gen_b"}


def test_detect_subprocess_stdin_glob_bad_file_and_exit_code(fitted, code_model_dir, labelled_folders, tmp_path):
    heads, _ = fitted
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really")
    listing = f"{labelled_folders['real'] / '000.jpg'}\n{bad}\n"
    glob = str(labelled_folders["gen_a"] / "00[0-2].*")
    res = run(["detect", "-", glob, "--model", str(code_model_dir), "--heads", str(heads), "--format", "jsonl",
               "--threshold", "0.5"], stdin=listing)
    assert res.returncode == 3, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["verdict"] for r in rows] == ["real", "error", "fake", "fake", "fake"]
    assert "broken.jpg" in rows[1]["source"] and rows[1]["error"]
    assert "Traceback" not in res.stderr and "1 failed" in res.stderr


def test_offline_without_cache_is_one_clear_line(tmp_path, labelled_folders):
    env_home = {"HF_HOME": str(tmp_path / "hf"), "DEEPSIFT_HOME": str(tmp_path / "ds")}
    res = subprocess.run([sys.executable, "-m", "deepsift", "detect", str(labelled_folders["real"] / "000.jpg")],
                         capture_output=True, text=True, env={**os.environ, **env_home, "HF_HUB_OFFLINE": "1"},
                         timeout=120)
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    err = [line for line in res.stderr.splitlines() if line.startswith("deepsift: error")]
    assert len(err) == 1 and "aimagelab/CoDE" in err[0] and "--model /path/to/dir" in err[0]


def test_unreachable_hub_is_one_clear_line(tmp_path, labelled_folders):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}
    res = subprocess.run([sys.executable, "-m", "deepsift", "detect", str(labelled_folders["real"] / "000.jpg"),
                          "--model", "someone/some-model"], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "someone/some-model" in res.stderr and "--model /path/to/dir" in res.stderr


def test_embed_to_parquet(code_model_dir, labelled_folders, tmp_path):
    from deepsift.model.detector import Detector
    from deepsift.model.embeddings import read_embeddings

    out = tmp_path / "emb.parquet"
    missing = str(tmp_path / "nope.png")
    rc = main(["embed", str(labelled_folders["real"]), missing, "--model", str(code_model_dir), "--out", str(out)])
    assert rc == 3
    sources, emb, errors = read_embeddings(out)
    assert len(sources) == 13 and sources[-1] == missing and errors[-1] and np.isnan(emb[-1]).all()
    direct = Detector.load_backbone_only(str(code_model_dir)).embed(sources[:12])
    np.testing.assert_allclose(emb[:12], direct, atol=1e-6)
    assert pq.read_schema(out).metadata[b"deepsift.dim"] == b"192"
    assert main(["embed", str(labelled_folders["real"]), "--model", str(code_model_dir), "--out",
                 str(tmp_path / "x.csv")]) == 2


def test_export_onnx_and_onnx_backend(code_model_dir, fitted, labelled_folders, tmp_path, monkeypatch):
    from deepsift.model.detector import Detector

    out = tmp_path / "code.onnx"
    assert main(["export", "onnx", "--model", str(code_model_dir), "--out", str(out)]) == 0
    assert out.stat().st_size > 20e6  # fp32 ViT-Tiny weights are in the graph
    monkeypatch.setenv("DEEPSIFT_HOME", str(tmp_path / "home"))
    heads, _ = fitted
    paths = sorted(map(str, labelled_folders["gen_b"].iterdir()))
    torch_preds = Detector.load(str(code_model_dir), heads=heads).predict(paths)
    onnx_preds = Detector.load(str(code_model_dir), heads=heads, backend="onnx").predict(paths)
    for a, b in zip(torch_preds, onnx_preds):
        assert a.label == b.label and abs(a.score - b.score) < 1e-3


def test_usage_errors(code_model_dir, fitted):
    heads, _ = fitted
    assert main(["detect", "x.png", "--model", str(code_model_dir), "--heads", str(heads),
                 "--batch-size", "0"]) == 2
    assert main(["detect", "x.png", "--model", str(code_model_dir), "--heads", str(heads),
                 "--threshold", "1.5"]) == 2
    with pytest.raises(SystemExit):
        main(["detect", "x.png", "--classifier", "forest"])
    if not __import__("torch").cuda.is_available():  # a device this machine lacks: one line, exit 2
        assert main(["detect", "x.png", "--model", str(code_model_dir), "--heads", str(heads),
                     "--device", "cuda"]) == 2
