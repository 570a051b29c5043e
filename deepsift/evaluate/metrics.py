"""Detection metrics from scores and labels, with vectorised bootstrap intervals.

Convention: label 1 = fake (the positive class), 0 = real; a higher score means "more fake";
an image is called fake when ``score >= threshold``.

Every metric is computed by one routine on a matrix of per-sample *weights* (one row per
resample): the point estimate uses weight 1 everywhere, a bootstrap resample uses the
multinomial counts of a draw with replacement within each class (stratified). Scores are
sorted once; curves come from cumulative sums over the tie groups of the sorted scores, so
B resamples cost O(B*N) with no per-resample sort. The weighted routine and the curves live in
:mod:`.curves`, the resampling in :mod:`.bootstrap`, and the rule behind the report's ⚠ mark
(:meth:`Metrics.unreliable`) in :mod:`.reliability`; the public names stay importable from here.

Definitions (documented, tested against scikit-learn where it has them):

* ``auroc``: area under the ROC curve (trapezoids; ties count 1/2) == ``roc_auc_score``.
* ``ap``: average precision, ``sum_k (R_k - R_{k-1}) P_k`` == ``average_precision_score``.
* ``eer``: equal error rate, where FPR == FNR, linearly interpolated between ROC points.
* ``tpr@1%fpr`` / ``tpr@5%fpr``: the best TPR among ROC points with FPR <= the target.
* ``ece``: expected calibration error of P(fake) over 15 equal-width bins,
  ``sum_b |#fakes_b - sum p_b| / N``; needs scores in [0, 1] (probabilities).
* ``f1``: F1 of the fake class (the ELSA challenge measure); accuracies at ``threshold``.

AUROC, AP, EER and TPR@FPR are undefined with one class only: the value is ``None`` with the
reason in ``undefined``, never a crash.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..choices import METRIC_NAMES
from ..exceptions import EvaluationError
from .bootstrap import bootstrap_intervals
from .curves import RANKING_METRICS, _compute, _Sorted, check_scores, pr_curve, roc_curve
from .reliability import MIN_GROUPS, unreliable_reason

__all__ = ["METRIC_NAMES", "MIN_GROUPS", "RANKING_METRICS", "SMALL_SAMPLE", "MetricValue", "Metrics", "check_scores",
           "compute_metrics", "bootstrap_intervals", "format_value", "pr_curve", "roc_curve", "summarise"]
SMALL_SAMPLE = 30  # fewer images of a class than this: a small sample (a count, not the ⚠ rule)


@dataclass
class MetricValue:
    """One metric: value, optional bootstrap interval, or why it is undefined."""

    value: float | None
    low: float | None = None
    high: float | None = None
    undefined: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d: dict[str, Any] = {"value": self.value}
        if self.low is not None:
            d["ci95"] = [self.low, self.high]
        if self.undefined:
            d["undefined"] = self.undefined
        return d


@dataclass
class Metrics:
    """All metrics of one evaluation, plus the counts and threshold they were taken at."""

    n_real: int
    n_fake: int
    threshold: float
    values: dict[str, MetricValue] = field(default_factory=dict)
    n_real_groups: int | None = None  # set when samples come in groups (the bootstrap resamples groups)
    n_fake_groups: int | None = None

    def __getitem__(self, name: str) -> float | None:
        return self.values[name].value

    @property
    def small(self) -> bool:
        """Fewer than :data:`SMALL_SAMPLE` images of a class (a count; the ⚠ mark follows :meth:`unreliable`)."""
        return min(self.n_real, self.n_fake) < SMALL_SAMPLE

    @property
    def few_groups(self) -> bool:
        """Grouped samples with fewer than :data:`MIN_GROUPS` groups of a class present."""
        counts = [n for n, k in ((self.n_real_groups, self.n_real), (self.n_fake_groups, self.n_fake)) if n and k]
        return bool(counts) and min(counts) < MIN_GROUPS

    def unreliable(self, name: str) -> str | None:
        """Why the figure ``name`` is unreliable (see :mod:`.reliability`), or None."""
        v = self.values.get(name)
        if v is None:
            return None
        return unreliable_reason(name, v.value, v.low, v.high, self.n_real, self.n_fake, self.n_real_groups,
                                 self.n_fake_groups)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; an unreliable figure carries its reason (``unreliable``)."""
        metrics = {k: v.to_dict() for k, v in self.values.items()}
        for k, d in metrics.items():
            if reason := self.unreliable(k):
                d["unreliable"] = reason
        out = {"n_real": self.n_real, "n_fake": self.n_fake, "threshold": self.threshold, "metrics": metrics}
        if self.n_real_groups is not None:
            out.update(n_real_groups=self.n_real_groups, n_fake_groups=self.n_fake_groups, few_groups=self.few_groups)
        return out


def compute_metrics(
    labels: Any,
    scores: Any,
    *,
    threshold: float = 0.5,
    probabilities: Any | None = None,
    bootstrap: int = 0,
    seed: int = 0,
    confidence: float = 0.95,
    groups: Any | None = None,
) -> Metrics:
    """Compute every metric (see the module docstring); ``bootstrap`` > 0 adds percentile CIs.

    ``probabilities`` (P(fake) in [0, 1]) feed the calibration error; when omitted, the scores
    are used if they lie in [0, 1], otherwise ECE is undefined. ``groups`` (one key per sample;
    None: the sample alone): samples come in groups (sources, prompts), so the bootstrap
    resamples whole groups within each class (a cluster bootstrap), and the counts of groups are
    kept; fewer than :data:`MIN_GROUPS` per class marks the figures unreliable.
    """
    y, s = check_scores(labels, scores)
    probs = None
    if probabilities is not None:
        _, probs = check_scores(y, probabilities)
    elif s.min() >= 0.0 and s.max() <= 1.0:
        probs = s
    if probs is not None and (probs.min() < 0 or probs.max() > 1):
        raise EvaluationError("probabilities must lie in [0, 1]")
    st = _Sorted(y, s, float(threshold), probs)
    n_groups: tuple[int | None, int | None] = (None, None)
    if groups is not None:
        keys = [f"g:{g}" if g is not None else f"i:{i}" for i, g in enumerate(groups)]
        if len(keys) != y.size:
            raise EvaluationError(f"{len(keys)} group keys for {y.size} scores")
        units = np.unique(np.array([f"{c}|{k}" for c, k in zip(y.tolist(), keys)], dtype=object),
                          return_inverse=True)[1]
        st.units = units[np.argsort(-s, kind="stable")]
        n_groups = (len({k for k, c in zip(keys, y) if c == 0}), len({k for k, c in zip(keys, y) if c == 1}))
    point = {k: float(v[0]) for k, v in _compute(st, None).items()}
    intervals = bootstrap_intervals(st, bootstrap, seed, confidence) if bootstrap > 0 else {}
    n_fake = int(y.sum())
    n_real = int(y.size - n_fake)
    m = Metrics(n_real=n_real, n_fake=n_fake, threshold=float(threshold), n_real_groups=n_groups[0],
                n_fake_groups=n_groups[1])
    for name in METRIC_NAMES:
        reason = _undefined_reason(name, n_real, n_fake, probs is not None)
        val = point.get(name)
        if reason or val is None or not np.isfinite(val):
            m.values[name] = MetricValue(None, undefined=reason or "undefined for this input")
            continue
        lo, hi = intervals.get(name, (None, None))
        m.values[name] = MetricValue(val, lo, hi)
    return m


def _undefined_reason(name: str, n_real: int, n_fake: int, has_probs: bool) -> str | None:
    if name in RANKING_METRICS and (n_real == 0 or n_fake == 0):
        return f"needs both classes (got {n_real} real, {n_fake} fake)"
    if name in ("acc_real",) and n_real == 0:
        return "no real images"
    if name in ("acc_fake",) and n_fake == 0:
        return "no fake images"
    if name == "balanced_accuracy" and (n_real == 0 or n_fake == 0):
        return f"needs both classes (got {n_real} real, {n_fake} fake)"
    if name == "ece" and not has_probs:
        return "scores are not probabilities in [0, 1]"
    return None


def format_value(v: MetricValue, digits: int = 3, mark: bool = False) -> str:
    """Human form: ``0.912 [0.900, 0.925]`` or ``n/a``; ``mark``: the figure is unreliable (`` ⚠``)."""
    if v.value is None:
        return "n/a"
    text = f"{v.value:.{digits}f}"
    if v.low is not None and v.high is not None:
        text += f" [{v.low:.{digits}f}, {v.high:.{digits}f}]"
    return text + (" ⚠" if mark else "")


def summarise(metrics: Metrics, names: Sequence[str] = METRIC_NAMES) -> dict[str, str]:
    """Format the named metrics for a table row."""
    return {n: format_value(metrics.values[n]) for n in names if n in metrics.values}
