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
from PIL import Image

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
    assert len(err) == 1 and "aimagelab/CoDE" in err[0] and "give a local folder" in err[0]


def test_unreachable_hub_is_one_clear_line(tmp_path, labelled_folders):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}
    res = subprocess.run([sys.executable, "-m", "deepsift", "detect", str(labelled_folders["real"] / "000.jpg"),
                          "--model", "someone/some-model"], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "someone/some-model" in res.stderr and "cannot be reached" in res.stderr and len(res.stderr.splitlines()) == 1


def test_embed_to_parquet(code_model_dir, labelled_folders, tmp_path):
    from deepsift.model.detector import Detector
    from deepsift.model.embeddings import read_embeddings

    out = tmp_path / "emb.parquet"
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    # torch, as the Python API below: the default `auto` may pick ONNX Runtime (within 1e-4, not 1e-6)
    rc = main(["embed", str(labelled_folders["real"]), str(broken), "--model", str(code_model_dir), "--out", str(out),
               "--backend", "torch"])
    assert rc == 3
    sources, emb, errors = read_embeddings(out)
    assert len(sources) == 13 and sources[-1] == str(broken) and errors[-1] and np.isnan(emb[-1]).all()
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
    assert main(["detect", "x.png", "--classifier", "forest"]) == 2
    if not __import__("torch").cuda.is_available():  # a device this machine lacks: one line, exit 1 (issue 12)
        assert main(["detect", str(code_model_dir / "config.json"), "--model", str(code_model_dir), "--heads",
                     str(heads), "--device", "cuda"]) == 1


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """A 1-layer CoDE network (quick to load) and its weights' tensors."""
    from safetensors.torch import load_file

    from deepsift.model.backbone import build_code_config, create_backbone, save_backbone

    d = save_backbone(create_backbone(build_code_config(num_hidden_layers=1), seed=0),
                      tmp_path_factory.mktemp("small-model"))
    return d, (d / "model.safetensors").read_bytes(), load_file(d / "model.safetensors")


@pytest.mark.parametrize("damage, words", [
    ("truncated", "not a valid safetensors file"), ("garbage", "not a valid safetensors file"),
    ("empty", "not a valid safetensors file"), ("missing", "16 tensor(s) missing"), ("shape", "wrong shape"),
])
def test_a_corrupt_model_safetensors_is_one_line_naming_the_file(small_model, tmp_path, damage, words, capfd):
    import shutil

    import torch
    from safetensors.torch import save_file

    src, raw, tensors = small_model
    model = tmp_path / "model"
    shutil.copytree(src, model)
    weights = model / "model.safetensors"
    if damage == "truncated":
        weights.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        weights.write_bytes(b"\x00not safetensors at all" * 9)
    elif damage == "empty":
        weights.write_bytes(b"")
    elif damage == "missing":  # a valid file that lacks a layer: transformers would fill it with random values
        save_file({k: v for k, v in tensors.items() if "layer.0" not in k}, weights, metadata={"format": "pt"})
    else:
        save_file({**tensors, "embeddings.cls_token": torch.zeros(1, 1, 10)}, weights, metadata={"format": "pt"})
    image = tmp_path / "x.png"  # an input that exists: the model is what fails
    Image.new("RGB", (32, 32), (90, 120, 30)).save(image)
    commands = [["embed", str(image), "--out", str(tmp_path / "e.parquet")]]
    if damage == "truncated":
        commands.append(["detect", str(image), "--heads", str(tmp_path)])
    for args in commands:
        capfd.readouterr()
        assert main([*args, "--model", str(model)]) == 1
        err = capfd.readouterr().err  # file-descriptor level: transformers' own log lines would show here
        lines = err.strip().splitlines()
        assert len(lines) == 1 and str(weights) in lines[0] and words in lines[0], err
    assert not (tmp_path / "e.parquet").exists()
