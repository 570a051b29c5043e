"""The decision rule at its edges: P(fake) exactly at the threshold is fake, and the unsure band is [low, high),
in the rule itself, detect (the Detector), the demo's verdict and band, eval's metrics and unsure report, and the
platform's scoring. A rule written with ``>`` instead of ``>=`` (or a band closed at the wrong end) fails here."""
from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import pytest

from deepsift.decision import decide, verdict
from deepsift.exceptions import DeepsiftWarning

THRESHOLDS = (0.5, 0.3, 0.7, 0.123456789)


def _below(x: float) -> float:
    return float(np.nextafter(x, 0.0))


@pytest.mark.parametrize("t", THRESHOLDS)
def test_the_rule_at_the_threshold_and_one_ulp_below(t):
    assert decide(np.array([t, _below(t), np.nextafter(t, 1.0)]), t).tolist() == [1, 0, 1]
    assert int(decide(t, t)) == 1
    assert verdict(t, t) == "fake" and verdict(_below(t), t) == "real"


def test_the_unsure_band_is_closed_below_and_open_above():
    band = (0.4, 0.6)
    assert verdict(0.4, 0.5, band) == "unsure"
    assert verdict(_below(0.4), 0.5, band) == "real"
    assert verdict(_below(0.6), 0.5, band) == "unsure"
    assert verdict(0.6, 0.5, band) == "fake"
    assert verdict(0.5, 0.5, band) == "unsure"  # the threshold inside the band: unsure wins
    assert verdict(0.5, 0.5, (0.5, 0.5)) == "fake"  # an empty band changes nothing
    assert verdict(float("nan"), 0.5, band) == "error" and verdict(None, 0.5, band) == "error"


class _FixedHead:
    """A head whose calibrated P(fake) is the first embedding coordinate (the Detector's interface)."""

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, np.float64)[:, 0]

    def probability(self, s: np.ndarray) -> np.ndarray:
        return np.asarray(s, np.float64)


def _detector(threshold: float | None):
    from deepsift.model.detector import Detector

    det = Detector.__new__(Detector)
    det.heads, det.classifier, det.threshold = {"linear": _FixedHead()}, "linear", threshold
    return det


@pytest.mark.parametrize("t", THRESHOLDS)
def test_detect_labels_a_probability_equal_to_the_threshold_fake(t, code_model_dir):
    from deepsift.model.detector import Detector
    from deepsift.model.heads import make_head

    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(size=(60, 8)), rng.normal(size=(60, 8)) + 1.5]
    y = np.r_[np.zeros(60), np.ones(60)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeepsiftWarning)
        head = make_head("linear").fit(X, y)
    det = Detector.load_backbone_only(str(code_model_dir))
    det.heads, det.classifier = {"linear": head}, "linear"
    p = det.classify(X[:1])[0]["probability"]
    det.threshold = p  # the real head's own probability, exactly
    assert det.classify(X[:1])[0]["label"] == 1
    det.threshold = float(np.nextafter(p, 1.0))
    assert det.classify(X[:1])[0]["label"] == 0
    fixed = _detector(t)
    rows = fixed.classify(np.array([[t], [_below(t)]]))
    assert [r["label"] for r in rows] == [1, 0] and rows[0]["probability"] == t


def test_the_demo_verdict_and_band_at_the_edges():
    from deepsift.demo.engine import DemoEngine
    from deepsift.demo.settings import DemoSettings

    engine = DemoEngine(DemoSettings(threshold=0.5, unsure_low=0.4, unsure_high=0.6))
    det = _detector(0.5)
    probs = [0.5, _below(0.5), 0.4, _below(0.4), 0.6, _below(0.6)]
    rows = det.classify(np.array([[p] for p in probs]))
    got = [engine._finish(det, {"source": "x", **r}) for r in rows]
    assert [g["verdict"] for g in got] == ["fake", "real", "real", "real", "fake", "fake"]
    assert [g["band"] for g in got] == ["unsure", "unsure", "unsure", "real", "fake", "unsure"]
    engine = DemoEngine(DemoSettings(threshold=0.5, unsure_low=0.5, unsure_high=0.5))  # no band
    assert [engine._finish(det, {"source": "x", **r})["band"] for r in rows[:2]] == ["fake", "real"]


@pytest.mark.parametrize("t", THRESHOLDS)
def test_eval_counts_a_score_equal_to_the_threshold_as_fake(t):
    from deepsift.evaluate.metrics import compute_metrics

    y = np.array([1, 1, 0, 0])
    s = np.array([t, _below(t), _below(t), 0.0])
    m = compute_metrics(y, s, threshold=t)
    assert m.values["acc_fake"].value == 0.5  # the fake at exactly t is caught, the one just below is not
    assert m.values["acc_real"].value == 1.0
    assert m.values["accuracy"].value == 0.75
    assert m.values["f1"].value == pytest.approx(2 / 3)


def test_eval_unsure_report_band_edges():
    from deepsift.evaluate.calibration import unsure_report

    y = np.array([1, 0, 1, 0, 1, 0])
    p = np.array([0.4, _below(0.4), 0.6, _below(0.6), 0.5, 0.9])
    r = unsure_report(y, p, (0.4, 0.6), threshold=0.5)
    assert r["n_unsure"] == 3  # 0.4, just below 0.6 and 0.5; not 0.6, not just below 0.4
    assert (r["unsure_real"], r["unsure_fake"]) == (1, 2)


@pytest.mark.parametrize("t", (0.5, 0.3))
def test_platform_scoring_counts_a_score_equal_to_the_threshold_as_fake(t):
    from deepsift.challenges.scoring import score
    from deepsift.challenges.testsets import Key

    labels = np.array([1, 1, 0, 0, 1, 1, 0, 0], np.int8)
    key = Key(names=pa.array([f"i{k}" for k in range(8)]), labels=labels,
              generators=np.array(["g", "g", "real", "real"] * 2, object), transformed=np.zeros(8, bool),
              public=np.array([True] * 4 + [False] * 4))
    scores = np.array([t, _below(t), 0.0, _below(t)] * 2)
    result = score(key, scores, None, threshold=t)
    for part in ("public", "private"):
        overall = result[part]["overall"]
        assert overall["acc_fake"] == 0.5 and overall["acc_real"] == 1.0 and overall["accuracy"] == 0.75, overall


def test_the_threshold_may_be_either_end_of_the_probability_range():
    from deepsift.decision import check_threshold

    assert check_threshold(0.0) == 0.0 and check_threshold(1.0) == 1.0  # ends included
    assert decide(np.array([0.0, 0.5, 1.0]), 0.0).tolist() == [1, 1, 1]
    assert decide(np.array([0.0, _below(1.0), 1.0]), 1.0).tolist() == [0, 0, 1]
    for bad in (-1e-12, float(np.nextafter(1.0, 2.0)), float("nan")):
        with pytest.raises(ValueError, match="probability in"):
            check_threshold(bad)


def test_the_default_threshold_is_one_half_and_the_band_ends_at_high():
    assert decide(np.array([0.5, _below(0.5)])).tolist() == [1, 0]
    assert verdict(0.5) == "fake" and verdict(_below(0.5)) == "real"
    band = (0.4, 0.6)
    assert verdict(0.9, 0.5, band) == "fake" and verdict(0.1, 0.5, band) == "real"  # outside the band, both sides
