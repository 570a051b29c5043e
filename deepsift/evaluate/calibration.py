"""Operating points and calibration: threshold at a target FPR, Platt / isotonic, unsure band.

A :class:`Calibrator` maps raw scores to P(fake); it is stored as plain JSON (no pickle):
Platt keeps ``a, b`` of ``sigmoid(a * score + b)``, isotonic keeps the breakpoints of its
step function, applied with linear interpolation between them.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..choices import CALIBRATION_METHODS
from ..exceptions import EvaluationError
from ..model.platt import apply_platt, fit_platt
from .metrics import check_scores

CALIBRATION_FORMAT = 1


def threshold_for_fpr(labels: Any, scores: Any, target_fpr: float) -> float:
    """A threshold whose FPR on the real images of a validation set is <= ``target_fpr``, in the middle of the gap.

    The validation labels are those of the lowest such threshold (just above the highest real score that
    must be excluded); the threshold itself sits mid-way to the next score above, rounded to the shortest
    decimal inside that gap, so separable scores get a readable rule (0.5, not 4.94e-324).
    """
    if not 0.0 <= target_fpr <= 1.0:
        raise EvaluationError(f"target FPR must be in [0, 1], got {target_fpr}")
    y, s = check_scores(labels, scores)
    real = np.sort(s[y == 0])[::-1]
    if real.size == 0:
        raise EvaluationError("choosing a threshold for a target FPR needs real images in the validation set")
    k = int(np.floor(target_fpr * real.size + 1e-9))  # at most k real images may score >= threshold
    if k >= real.size:
        return float(real[-1])
    lo = float(real[k])  # must be excluded
    above = s[s > lo]
    if above.size:
        hi = float(above.min())  # must stay included: nothing of the validation set lies in (lo, hi)
    elif lo < 1.0 and s.min() >= 0.0:
        hi = 1.0  # probabilities: mid-way to certainty
    else:
        return float(np.nextafter(lo, np.inf))
    mid = lo + (hi - lo) / 2
    for digits in range(1, 18):
        t = round(mid, digits)
        if lo < t <= hi:
            return float(t)
    return float(mid) if lo < mid <= hi else float(np.nextafter(lo, np.inf))


@dataclass
class Calibrator:
    """Score -> P(fake) mapping fitted on a validation set (Platt or isotonic)."""

    method: str = "platt"
    params: dict[str, Any] = field(default_factory=dict)

    def fit(self, labels: Any, scores: Any) -> "Calibrator":
        """Fit on validation labels (0/1) and scores; returns ``self``."""
        if self.method not in CALIBRATION_METHODS:
            raise EvaluationError(f"calibration method must be one of {CALIBRATION_METHODS}, got {self.method!r}")
        y, s = check_scores(labels, scores)
        if np.unique(y).size < 2:
            raise EvaluationError("calibration needs both real and fake validation images")
        if self.method == "platt":
            a, b = fit_platt(s, y)
            self.params = {"a": a, "b": b}
        else:
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(s, y)
            self.params = {"x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}
        return self

    def transform(self, scores: Any) -> np.ndarray:
        """Map scores to calibrated probabilities of fake."""
        if not self.params:
            raise EvaluationError("calibrator is not fitted")
        s = np.asarray(scores, dtype=np.float64)
        if self.method == "platt":
            return apply_platt(s, self.params["a"], self.params["b"])
        return np.interp(s, self.params["x"], self.params["y"])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"format_version": CALIBRATION_FORMAT, "method": self.method, "params": self.params}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the calibrator as JSON (complete or not at all; a failure is one DataError line)."""
        from ..output import open_output

        with open_output(str(path)) as fh:
            fh.write(json.dumps(self.to_dict(), indent=2))
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Calibrator":
        """Read a calibrator written by :meth:`save`."""
        p = Path(path)
        try:
            data = json.loads(p.read_text())
            method, params = data["method"], data["params"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise EvaluationError(f"{p}: not a deepsift calibration file ({exc})") from None
        if method not in CALIBRATION_METHODS:
            raise EvaluationError(f"{p}: unknown calibration method {method!r}")
        return cls(method, params)


def parse_band(text: str) -> tuple[float, float]:
    """Parse ``LOW,HIGH`` (probabilities, LOW < HIGH) for the unsure band."""
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise EvaluationError(f"unsure band must be 'LOW,HIGH', e.g. 0.4,0.6; got {text!r}") from None
    if not 0.0 <= low < high <= 1.0:
        raise EvaluationError(f"unsure band needs 0 <= LOW < HIGH <= 1, got {low},{high}")
    return low, high


def unsure_report(labels: Any, probabilities: Any, band: tuple[float, float], threshold: float = 0.5) -> dict[str, Any]:
    """Split predictions into decided and unsure (``low <= p < high``) and report both separately."""
    y, p = check_scores(labels, probabilities)
    low, high = band
    unsure = (p >= low) & (p < high)
    decided = ~unsure
    yd, pd = y[decided], p[decided] >= threshold
    n_real, n_fake = int(np.sum(yd == 0)), int(np.sum(yd == 1))
    return {
        "band": [low, high],
        "n_unsure": int(unsure.sum()),
        "unsure_fraction": float(unsure.mean()),
        "unsure_real": int(np.sum(unsure & (y == 0))),
        "unsure_fake": int(np.sum(unsure & (y == 1))),
        "n_decided": int(decided.sum()),
        "decided_accuracy": float(np.mean(pd == yd)) if yd.size else None,
        "decided_fpr": float(np.mean(pd[yd == 0])) if n_real else None,
        "decided_tpr": float(np.mean(pd[yd == 1])) if n_fake else None,
    }
