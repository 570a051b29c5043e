"""The one decision rule of deepsift: fake when the calibrated P(fake) reaches the threshold.

Every place that turns a detector's output into a hard label uses this module: ``detect``, the
``Detector`` API, ``eval`` and the baselines, the benchmark platform and the demo. A head's own
native rule (the sign of a logistic logit, 1-NN's nearest label, the one-class SVM's inlier test)
is never used for labels; it only shapes the continuous score that calibration maps to P(fake).
Reports name the rule with :func:`rule_text`.
"""
from __future__ import annotations

import math

import numpy as np

DEFAULT_THRESHOLD = 0.5
"""P(fake) at or above which an image is called fake, unless the user sets another threshold."""


def check_threshold(threshold: float) -> float:
    """Return ``threshold`` as a float, or raise ValueError unless it is a probability in [0, 1]."""
    t = float(threshold)
    if math.isnan(t) or not 0.0 <= t <= 1.0:
        raise ValueError(f"the threshold is a probability in [0, 1], got {threshold!r}")
    return t


def decide(probabilities: np.ndarray | float, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Hard labels, 1 = fake and 0 = real: ``probability >= threshold`` (NaN stays real: never fake by accident)."""
    p = np.asarray(probabilities, dtype=np.float64)
    return (p >= check_threshold(threshold)).astype(np.int64)


def verdict(probability: float | None, threshold: float = DEFAULT_THRESHOLD,
            unsure: tuple[float, float] | None = None) -> str:
    """'fake', 'real', 'unsure' (when ``unsure=(low, high)`` and low <= p < high) or 'error' (no probability)."""
    if probability is None or math.isnan(probability):
        return "error"
    if unsure is not None and unsure[0] <= probability < unsure[1]:
        return "unsure"
    return "fake" if probability >= check_threshold(threshold) else "real"


def rule_text(threshold: float = DEFAULT_THRESHOLD) -> str:
    """The rule in words, for reports and pages: e.g. 'fake when calibrated P(fake) >= 0.5'."""
    return f"fake when calibrated P(fake) >= {check_threshold(threshold):g}"
