"""Platt scaling, the one logistic map from a fake-score to P(fake) in deepsift.

``P(fake) = sigmoid(a * score + b)``: the heads calibrate their scores with it
(:mod:`deepsift.model.heads`), the evaluation toolkit fits it on validation scores
(:class:`deepsift.evaluate.calibration.Calibrator`), and the baselines turn their logits into
probabilities with :func:`sigmoid`. One implementation, so the same score gives the same
probability everywhere.
"""
from __future__ import annotations

import numpy as np

PLATT_C = 1e6
"""Inverse regularisation of the 1-D logistic fit: effectively none (Platt's maximum likelihood)."""


def sigmoid(z: np.ndarray | float) -> np.ndarray:
    """The logistic function in float64, stable for any input; tiny probabilities keep their order (NaN stays NaN)."""
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def fit_platt(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Fit ``(a, b)`` of ``P(fake) = sigmoid(a * score + b)`` by logistic regression on one feature.

    With one class only there is nothing to fit: the scores are scaled by their spread and 0 stays
    the boundary (``a = 1 / std``, ``b = 0``).
    """
    from sklearn.linear_model import LogisticRegression

    s = np.asarray(scores, dtype=np.float64).reshape(-1, 1)
    y = np.asarray(labels).ravel()
    if len(np.unique(y)) < 2:
        return 1.0 / (float(np.std(s)) or 1.0), 0.0
    lr = LogisticRegression(C=PLATT_C, max_iter=1000).fit(s, y)
    return float(lr.coef_[0, 0]), float(lr.intercept_[0])


def apply_platt(scores: np.ndarray, a: float, b: float) -> np.ndarray:
    """``sigmoid(a * scores + b)``."""
    return sigmoid(a * np.asarray(scores, dtype=np.float64) + b)
