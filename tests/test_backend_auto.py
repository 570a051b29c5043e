"""``--backend auto`` (the default unless ``DEEPSIFT_BACKEND`` says otherwise): picks an exact backend, caches its
measurement, skips what fails, says why."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from deepsift.cli import main
from deepsift.exceptions import DeepsiftWarning
from deepsift.model import autobackend
from deepsift.model.autobackend import bf16_unsafe_heads, cache_file, choose_backend
from deepsift.model.detector import Detector


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """A 2-layer CoDE network with linear, kNN and SVM heads (fast to measure and export) and a few images."""
    from deepsift.model.backbone import build_code_config, create_backbone, save_backbone
    from deepsift.model.heads import make_head
    from deepsift.model.headset import save_headset

    root = tmp_path_factory.mktemp("auto")
    model = save_backbone(create_backbone(build_code_config(num_hidden_layers=2), seed=3), root / "model")
    rng = np.random.default_rng(0)
    images = root / "images"
    images.mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (240, 250, 3), dtype=np.uint8)).save(images / f"{i}.png")
    X = Detector.load_backbone_only(str(model), device="cpu").embed(sorted(str(p) for p in images.iterdir()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        heads = {k: make_head(k).fit(X.astype(np.float64), np.arange(6) % 2) for k in ("linear", "knn", "svm")}
    save_headset(heads, model / "heads", model=str(model), embedding_dim=X.shape[1])
    return model, images


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    """A fresh deepsift cache folder (the measurement cache and the ONNX exports) for this test."""
    monkeypatch.setenv("DEEPSIFT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


class Timer:
    """An injected measurement: fixed images/s per candidate, counting its calls."""

    def __init__(self, rates):
        self.rates, self.calls = rates, []

    def __call__(self, name, forward, batch):
        out = forward(batch)  # the candidate really runs
        assert out.shape == (len(batch), 192)
        self.calls.append(name)
        return self.rates[name]


def _choose(model, **kw):
    det = Detector.load_backbone_only(str(model), device="cpu")
    return choose_backend(det.backbone, model, det.fingerprint, batch_size=2, **kw)


def test_auto_picks_the_fastest_measured_and_the_cache_is_reused(small_model, cache_home):
    model, _ = small_model
    timer = Timer({"torch/fp32": 10.0, "onnx/fp32": 20.0})
    first = _choose(model, measure=timer)
    assert (first.backend, first.precision, first.measured) == ("onnx", "fp32", True)
    assert sorted(timer.calls) == ["onnx/fp32", "torch/fp32"]
    written = json.loads(cache_file().read_text())
    assert cache_file().parent == cache_home
    [entry] = written["entries"].values()
    assert entry["backend"] == "onnx" and entry["rates"] == {"torch/fp32": 10.0, "onnx/fp32": 20.0}
    mtime = cache_file().stat().st_mtime_ns
    again = Timer({"torch/fp32": 99.0, "onnx/fp32": 1.0})
    second = _choose(model, measure=again)
    assert again.calls == [] and not second.measured  # read from the cache: nothing measured
    assert (second.backend, second.rates) == ("onnx", first.rates)
    assert cache_file().stat().st_mtime_ns == mtime
    other = Timer({"torch/fp32": 30.0, "onnx/fp32": 20.0})  # another batch size is another entry
    det = Detector.load_backbone_only(str(model), device="cpu")
    assert choose_backend(det.backbone, model, det.fingerprint, batch_size=3, measure=other).backend == "torch"
    assert len(json.loads(cache_file().read_text())["entries"]) == 2


@pytest.mark.parametrize("garbage", [b"{not json", b"\xff\xfe\x00", b'{"version": 1, "entries": []}', b"[1, 2]"])
def test_a_corrupt_cache_is_measured_again_and_rewritten(small_model, cache_home, garbage):
    model, _ = small_model
    cache_file().parent.mkdir(parents=True)
    cache_file().write_bytes(garbage)
    timer = Timer({"torch/fp32": 20.0, "onnx/fp32": 10.0})
    choice = _choose(model, measure=timer)
    assert choice.measured and choice.backend == "torch" and len(timer.calls) == 2
    assert json.loads(cache_file().read_text())["version"] == 1


def test_an_unwritable_cache_only_means_no_cache(small_model, tmp_path, monkeypatch):
    model, images = small_model
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("DEEPSIFT_HOME", str(blocker / "home"))  # the cache folder cannot be made under a file
    choice = _choose(model, measure=Timer({"torch/fp32": 20.0, "onnx/fp32": 10.0}))
    assert choice.backend == "torch" and choice.cache is None
    det = Detector.load(str(model), backend="auto", device="cpu", batch_size=2)
    assert all(p.error is None for p in det.predict(sorted(images.iterdir())))


def test_auto_results_equal_the_forced_backend(small_model, cache_home):
    model, images = small_model
    paths = sorted(str(p) for p in images.iterdir())
    auto = Detector.load(str(model), backend="auto", device="cpu", batch_size=2)
    assert auto.choice is not None and auto.choice.measured
    assert auto.choice.backend in ("torch", "onnx") and auto.choice.precision == "fp32"
    assert (auto.onnx is not None) == (auto.choice.backend == "onnx")
    forced = Detector.load(str(model), backend=auto.choice.backend, device="cpu", batch_size=2)
    torch_det = Detector.load(str(model), backend="torch", device="cpu", batch_size=2)
    got, same, ref = auto.embed(paths), forced.embed(paths), torch_det.embed(paths)
    np.testing.assert_array_equal(got, same)  # the very backend it names
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)  # and exact within the ONNX tolerance of torch
    assert [p.label for p in auto.predict(paths)] == [p.label for p in torch_det.predict(paths)]


def test_bf16_only_when_asked_and_the_heads_keep_their_labels(small_model, cache_home):
    model, _ = small_model
    favour_bf16 = {"torch/fp32": 10.0, "onnx/fp32": 10.5, "torch/bf16": 50.0}
    fp32 = Timer(favour_bf16)
    assert _choose(model, measure=fp32, heads=["linear"]).precision == "fp32"  # fp32 asked: never bf16
    assert "torch/bf16" not in fp32.calls
    bf16 = Timer(favour_bf16)
    chosen = _choose(model, measure=bf16, heads=["linear", "linear:gen_a"], precision="bf16")
    assert (chosen.backend, chosen.precision) == ("torch", "bf16") and "torch/bf16" in bf16.calls
    svm = Timer(favour_bf16)
    with pytest.warns(DeepsiftWarning, match="svm.*fp32"):
        chosen = _choose(model, measure=svm, heads=["svm"], precision="bf16")
    assert chosen.precision == "fp32" and "torch/bf16" not in svm.calls
    assert bf16_unsafe_heads(["linear", "knn", "svm", "linear:sd21", "knn:sd21", "svm:sd21", "odd"]) == \
        ["knn", "svm", "knn:sd21", "svm:sd21", "odd"]  # a per-generator head counts at most its kind's figure


def test_asking_bf16_for_a_head_below_the_agreement_warns(small_model, cache_home):
    model, _ = small_model
    with pytest.warns(DeepsiftWarning, match="knn"):
        det = Detector.load(str(model), classifier="knn", precision="bf16", backend="torch", device="cpu")
    assert det.precision == "bf16"  # asked for: it runs, with the warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeepsiftWarning)
        Detector.load(str(model), classifier="linear", precision="bf16", backend="torch", device="cpu")


def test_detect_says_its_choice_with_v_and_the_second_run_reads_the_cache(small_model, cache_home, tmp_path, capsys):
    model, images = small_model
    args = ["detect", str(images), "--model", str(model), "--format", "jsonl", "--batch-size", "2", "--backend", "auto"]
    assert main([*args, "-v", "--out", str(tmp_path / "a.jsonl")]) == 0
    err = capsys.readouterr().err
    line = next(ln for ln in err.splitlines() if "backend auto chose" in ln)
    assert "measured now" in line and "torch/fp32" in line and "onnx/fp32" in line
    mtime = cache_file().stat().st_mtime_ns
    assert main([*args, "-v", "--out", str(tmp_path / "b.jsonl")]) == 0
    line2 = next(ln for ln in capsys.readouterr().err.splitlines() if "backend auto chose" in ln)
    assert "cached measurement" in line2 and line2.split(":")[1] == line.split(":")[1]  # the same choice
    assert cache_file().stat().st_mtime_ns == mtime
    assert main([*args, "--out", str(tmp_path / "c.jsonl")]) == 0
    assert "backend auto" not in capsys.readouterr().err  # said with -v only
    rows = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert main([*args, "--backend", "torch", "--out", str(tmp_path / "t.jsonl")]) == 0
    forced = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert [r["label"] for r in rows] == [r["label"] for r in forced]
    assert all(abs(a["probability"] - b["probability"]) < 1e-4 for a, b in zip(rows, forced))


def _backend_of(argv, monkeypatch, setting):
    """The backend a command given ``argv`` runs with ``DEEPSIFT_BACKEND`` set to ``setting`` (None: unset)."""
    from deepsift.cli import build_parser
    from deepsift.cliargs import detector_kwargs

    if setting is None:
        monkeypatch.delenv("DEEPSIFT_BACKEND", raising=False)
    else:
        monkeypatch.setenv("DEEPSIFT_BACKEND", setting)
    return detector_kwargs(build_parser().parse_args(["detect", ".", "--model", ".", *argv]))["backend"]


def test_the_default_backend_is_auto_and_the_setting_changes_it(monkeypatch):
    assert _backend_of([], monkeypatch, None) == "auto"
    assert _backend_of([], monkeypatch, "") == "auto"
    assert _backend_of([], monkeypatch, "torch") == "torch"
    assert _backend_of([], monkeypatch, "ONNX") == "onnx"
    assert _backend_of([], monkeypatch, "auto") == "auto"


def test_an_explicit_backend_wins_over_the_setting(monkeypatch):
    assert _backend_of(["--backend", "auto"], monkeypatch, "torch") == "auto"
    assert _backend_of(["--backend", "torch"], monkeypatch, "onnx") == "torch"
    assert _backend_of(["--backend", "onnx"], monkeypatch, "nonsense") == "onnx"  # the setting is not even read


def test_the_setting_decides_what_detect_runs(small_model, cache_home, tmp_path, monkeypatch, capsys):
    """A real run: with DEEPSIFT_BACKEND=torch nothing is measured; with auto the measurement is said and cached."""
    model, images = small_model
    args = ["detect", str(images), "--model", str(model), "--format", "jsonl", "--batch-size", "2", "-v"]
    monkeypatch.setenv("DEEPSIFT_BACKEND", "torch")
    assert main([*args, "--out", str(tmp_path / "t.jsonl")]) == 0
    assert "backend auto" not in capsys.readouterr().err and not cache_file().exists()
    monkeypatch.setenv("DEEPSIFT_BACKEND", "auto")
    assert main([*args, "--out", str(tmp_path / "a.jsonl")]) == 0
    assert "backend auto chose" in capsys.readouterr().err and cache_file().exists()


def test_a_bad_setting_is_one_line_naming_it(small_model, tmp_path, monkeypatch, capsys):
    model, images = small_model
    monkeypatch.setenv("DEEPSIFT_BACKEND", "tensorrt")
    out = tmp_path / "o.jsonl"
    assert main(["detect", str(images), "--model", str(model), "--format", "jsonl", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "DEEPSIFT_BACKEND" in err[0] and "'tensorrt'" in err[0], err
    assert "auto, torch, onnx" in err[0] and "Traceback" not in err[0]
    assert not out.exists()
    assert main(["detect", str(images), "--model", str(model), "--backend", "torch", "--format", "jsonl",
                 "--out", str(out)]) == 0  # an explicit --backend does not need the setting


def test_onnxruntime_missing_is_skipped(small_model, tmp_path):
    """A real process where onnxruntime cannot be imported: auto runs torch and says why onnx was skipped."""
    model, images = small_model
    code = ("import sys; sys.modules['onnxruntime'] = None\n"  # `import onnxruntime` now raises ImportError
            "from deepsift.cli import main\n"
            f"sys.exit(main(['detect', {str(images)!r}, '--model', {str(model)!r}, '-v', '--batch-size', '2', "
            f"'--format', 'jsonl', '--backend', 'auto', '--out', {str(tmp_path / 'o.jsonl')!r}]))\n")
    env = {**os.environ, "DEEPSIFT_HOME": str(tmp_path / "home"),
           "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(ln for ln in proc.stderr.splitlines() if "backend auto chose" in ln)
    assert "chose torch fp32" in line and "onnx/fp32 skipped (onnxruntime cannot be imported" in line
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 6
    assert not (tmp_path / "home" / "onnx").exists()  # nothing exported for a backend that cannot run


def test_a_candidate_that_fails_to_run_is_skipped(small_model, cache_home, monkeypatch):
    model, _ = small_model

    def broken(name, forward, batch):
        if name == "onnx/fp32":
            raise RuntimeError("no kernel for this CPU")
        return 5.0

    choice = _choose(model, measure=broken)
    assert choice.backend == "torch" and "no kernel" in choice.skipped["onnx/fp32"]
    assert autobackend.read_cache(cache_file())  # written: the next run need not try again
