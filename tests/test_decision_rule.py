"""One decision rule everywhere: fake iff calibrated P(fake) >= threshold (deepsift.decision).

detect (the Detector), eval, the baselines and every report label the same way, whatever the head;
a head's native rule (the one-class SVM's inlier test, 1-NN's nearest label) never labels.
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from evalkit import folders_dataset, tiny_heads, tiny_model
from deepsift.cli import main
from deepsift.decision import decide, rule_text
from deepsift.exceptions import DeepsiftWarning
from deepsift.model.detector import Detector
from deepsift.model.heads import OCSVMHead, make_head


def _embeddings(rng: np.random.Generator, n: int, offset: float, dim: int = 16) -> np.ndarray:
    return rng.normal(size=(n, dim)) + offset


@pytest.mark.parametrize("kind", ["linear", "knn", "svm"])
def test_detector_labels_are_the_decision_rule_for_every_head(code_model_dir, kind):
    rng = np.random.default_rng(0)
    real, fake = _embeddings(rng, 120, 0.0), _embeddings(rng, 120, 2.0)
    X, y = np.r_[real, fake], np.r_[np.zeros(120), np.ones(120)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeepsiftWarning)
        head = make_head(kind).fit(X, y)
    det = Detector.load_backbone_only(str(code_model_dir))
    det.heads, det.classifier = {kind: head}, kind
    test = np.r_[_embeddings(rng, 60, 0.0), _embeddings(rng, 60, 2.0)]
    differs = False
    for threshold in (None, 0.3, 0.8):
        det.threshold = threshold
        rows = det.classify(test)
        probs = np.array([r["probability"] for r in rows])
        labels = [r["label"] for r in rows]
        assert labels == decide(probs, 0.5 if threshold is None else threshold).tolist()
        differs |= labels != head.predict(test).tolist()
    if kind == "svm":
        assert differs  # the SVM's native inlier test gives other labels: the Detector does not use it


def test_detect_and_eval_count_the_same_labels_with_the_svm_head(tmp_path, capsys):
    model = tiny_model(tmp_path / "model")
    folders_dataset(tmp_path / "train", 12, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeepsiftWarning)
        heads = tiny_heads(model, tmp_path / "train", tmp_path / "heads", kinds=("svm",))
    test = folders_dataset(tmp_path / "test", 8, seed=2)
    det = ["--model", str(model), "--heads", str(heads), "--classifier", "svm"]
    out = tmp_path / "detect.jsonl"
    assert main(["detect", str(test), *det, "--format", "jsonl", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    truth = [0 if "/real/" in r["source"] else 1 for r in rows]
    detect_accuracy = np.mean([r["label"] == t for r, t in zip(rows, truth)])
    assert all(r["label"] == int(r["probability"] >= 0.5) for r in rows)
    rep = tmp_path / "rep"
    assert main(["eval", "generators", str(test), *det, "--report", str(rep)]) == 0
    metrics = json.loads((rep / "metrics.json").read_text())
    eval_accuracy = metrics["per_generator"]["CoDE/svm"]["all"]["all"]["metrics"]["accuracy"]["value"]
    assert eval_accuracy == pytest.approx(detect_accuracy, abs=1e-12)
    assert metrics["decision_rule"] == {"CoDE/svm": rule_text(0.5)}
    assert "Decision rule: fake when calibrated P(fake) >= 0.5" in (rep / "report.md").read_text()


def test_every_report_names_its_rule(tmp_path):
    labels = tmp_path / "labels.csv"
    scores = tmp_path / "run.csv"
    labels.write_text("id,label\n" + "".join(f"{i},{i % 2}\n" for i in range(10)))
    scores.write_text("id,probability\n" + "".join(f"{i},{0.1 + 0.08 * i}\n" for i in range(10)))
    rep = tmp_path / "rep"
    assert main(["eval", "scores", "--labels", str(labels), "--scores", str(scores), "--threshold", "0.7",
                 "--report", str(rep)]) == 0
    assert json.loads((rep / "metrics.json").read_text())["decision_rule"] == {"run": rule_text(0.7)}
    assert rule_text(0.7) in (rep / "report.md").read_text()
    assert rule_text(0.7).replace(">=", "&gt;=") in (rep / "report.html").read_text()


def test_baselines_label_with_the_rule(tmp_path):
    from deepsift.evaluate.baselines import get_baseline
    from deepsift.evaluate.baselines.synthetic import write_synthetic_folders

    real, fake = write_synthetic_folders(tmp_path, 16, 16, seed=0)
    det = get_baseline("frequency", workers=1).fit(sorted(map(str, real.iterdir())), sorted(map(str, fake.iterdir())))
    for threshold in (0.5, 0.9):
        det.threshold = threshold
        preds = det.predict(sorted(map(str, real.iterdir())) + sorted(map(str, fake.iterdir())))
        assert [p.label for p in preds] == decide([p.probability for p in preds], threshold).tolist()


def test_one_class_svm_warns_when_it_rejects_far_more_than_nu():
    rng = np.random.default_rng(0)
    centred = rng.normal(size=(200, 16))
    with pytest.warns(DeepsiftWarning, match=r"rejects \d+% of its 200 training real images.*nu=0.1"):
        head = OCSVMHead().fit(centred, np.zeros(200))
    assert head.training_outlier_rate_ > 0.3
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeepsiftWarning)  # a well-placed cloud: about nu rejected, no warning
        head = OCSVMHead().fit(centred + 5.0, np.zeros(200))
    assert head.training_outlier_rate_ == pytest.approx(0.1, abs=0.03)


def test_the_warning_is_one_line_on_the_command_line(tmp_path):
    """In a real process: the one-class SVM's warning is one 'deepsift: warning:' line; --quiet hides it."""
    import os
    import subprocess
    import sys

    model = tiny_model(tmp_path / "model")
    root = folders_dataset(tmp_path / "train", 10, seed=1)
    argv = [sys.executable, "-m", "deepsift", "heads", "fit", "--real", str(root / "real"), "--fake",
            str(root / "gen_a"), "--model", str(model), "--classifier", "svm", "--no-per-generator"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([*argv, "--out", str(tmp_path / "h1")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if "one-class SVM" in line]
    assert len(warned) == 1 and warned[0].startswith("deepsift: warning: the one-class SVM rejects"), done.stderr
    assert "warnings.warn" not in done.stderr and "DeepsiftWarning" not in done.stderr
    quiet = subprocess.run([*argv, "--out", str(tmp_path / "h2"), "-q"], capture_output=True, text=True, env=env,
                           timeout=300)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    # per-generator heads fit the same reals: the same notice is said once, with the count
    per_gen = [a for a in argv if a != "--no-per-generator"] + ["--fake", str(root / "gen_b")]
    done = subprocess.run([*per_gen, "--out", str(tmp_path / "h3")], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if "one-class SVM" in line]
    assert len(warned) == 1 and "(the same for 3 heads fitted on these real images)" in warned[0], done.stderr
