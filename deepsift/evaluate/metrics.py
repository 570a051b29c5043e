"""Detection metrics from scores and labels, with vectorised bootstrap intervals.

Convention: label 1 = fake (the positive class), 0 = real; a higher score means "more fake";
an image is called fake when ``score >= threshold``.

Every metric is computed by one routine on a matrix of per-sample *weights* (one row per
resample): the point estimate uses weight 1 everywhere, a bootstrap resample uses the
multinomial counts of a draw with replacement within each class (stratified). Scores are
sorted once; curves come from cumulative sums over the tie groups of the sorted scores, so
B resamples cost O(B*N) with no per-resample sort.

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
from typing import Any, Callable, Sequence

import numpy as np

from ..choices import METRIC_NAMES
from ..exceptions import EvaluationError

RANKING_METRICS = ("ap", "auroc", "eer", "tpr@1%fpr", "tpr@5%fpr")
SMALL_SAMPLE = 30  # fewer images of a class than this: figures get a warning mark, intervals are unreliable
MIN_GROUPS = 20  # fewer groups of a class than this: a cluster bootstrap's interval is unreliable
ECE_BINS = 15
_CHUNK_ELEMENTS = 1_000_000  # resamples x samples handled per batch (memory bound)


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
        """Fewer than :data:`SMALL_SAMPLE` images of a class: figures are fragile, bootstrap intervals unreliable."""
        return min(self.n_real, self.n_fake) < SMALL_SAMPLE

    @property
    def few_groups(self) -> bool:
        """Grouped samples with fewer than :data:`MIN_GROUPS` groups of a class present."""
        counts = [n for n, k in ((self.n_real_groups, self.n_real), (self.n_fake_groups, self.n_fake)) if n and k]
        return bool(counts) and min(counts) < MIN_GROUPS

    @property
    def unreliable_ci(self) -> bool:
        """Bootstrap intervals that cannot show the spread: too few images or too few groups."""
        return self.small or self.few_groups

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``small_sample``, ``few_groups`` and ``ci95_unreliable`` flag fragile figures)."""
        metrics = {k: v.to_dict() for k, v in self.values.items()}
        if self.unreliable_ci:
            for d in metrics.values():
                if "ci95" in d:
                    d["ci95_unreliable"] = True
        out = {
            "n_real": self.n_real, "n_fake": self.n_fake, "threshold": self.threshold,
            "small_sample": self.small, "metrics": metrics,
        }  # fmt: skip
        if self.n_real_groups is not None:
            out.update(n_real_groups=self.n_real_groups, n_fake_groups=self.n_fake_groups, few_groups=self.few_groups)
        return out


def check_scores(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert labels (0/1) and finite numeric scores of equal length."""
    try:
        s = np.asarray(scores, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise EvaluationError(f"scores must be numeric ({exc})") from None
    y_raw = np.asarray(labels).ravel()
    if y_raw.shape != s.shape:
        raise EvaluationError(f"{y_raw.size} labels but {s.size} scores")
    if s.size == 0:
        raise EvaluationError("nothing to evaluate: no scores")
    bad = np.flatnonzero(~np.isfinite(s))
    if bad.size:
        raise EvaluationError(f"{bad.size} score(s) are NaN or infinite, e.g. at positions {bad[:5].tolist()}")
    try:
        y = y_raw.astype(np.float64)
    except (TypeError, ValueError):
        raise EvaluationError("labels must be 0 (real) or 1 (fake)") from None
    odd = np.flatnonzero((y != 0) & (y != 1))
    if odd.size:
        raise EvaluationError(f"labels must be 0 (real) or 1 (fake); got {y_raw[odd[:5]].tolist()}")
    return y.astype(np.int8), s


class _Sorted:
    """Scores sorted once (descending) with their tie groups and fixed threshold cut."""

    def __init__(self, y: np.ndarray, s: np.ndarray, threshold: float, probs: np.ndarray | None):
        order = np.argsort(-s, kind="stable")
        self.s = s[order]
        self.y = y[order].astype(np.float64)
        self.n = s.size
        new = np.empty(self.n, dtype=bool)
        new[0] = True
        np.not_equal(self.s[1:], self.s[:-1], out=new[1:])
        self.starts = np.flatnonzero(new)
        self.has_ties = self.starts.size != self.n
        self.cut = int(np.searchsorted(-self.s, -threshold, side="right"))  # count of s >= t
        self.onehot: np.ndarray | None = None
        self.units: np.ndarray | None = None  # cluster of each sorted sample (cluster bootstrap), or None
        if probs is not None:
            p = probs[order]
            self.p = p
            bins = np.minimum((p * ECE_BINS).astype(np.int64), ECE_BINS - 1)
            self.onehot = np.zeros((self.n, ECE_BINS))
            self.onehot[np.arange(self.n), bins] = 1.0
            self.onehot_p = self.onehot * p[:, None]


def _group(sorted_: _Sorted, a: np.ndarray) -> np.ndarray:
    """Sum a (B, N) matrix over the tie groups of the sorted scores."""
    return np.add.reduceat(a, sorted_.starts, axis=1) if sorted_.has_ties else a


def _rowdot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot product of two (B, G) matrices."""
    if a.dtype == np.float64 and b.dtype == np.float64:
        return np.einsum("ij,ij->i", a, b)
    return np.multiply(a, b).sum(axis=1, dtype=np.float64)  # float32 products, pairwise float64 sums


def _first_true(pred: Callable[[np.ndarray], np.ndarray], n_points: int, n_rows: int) -> np.ndarray:
    """Per row, the first k in 0..n_points-1 where the monotone ``pred(k)`` holds (bisection)."""
    lo = np.zeros(n_rows, dtype=np.int64)
    hi = np.full(n_rows, n_points - 1, dtype=np.int64)
    while np.any(active := lo < hi):
        mid = (lo + hi) // 2
        ok = pred(mid)
        hi = np.where(active & ok, mid, hi)
        lo = np.where(active & ~ok, mid + 1, lo)  # settled rows stay put (a NaN row never holds)
    return lo


def _compute(st: _Sorted, w: np.ndarray | None) -> dict[str, np.ndarray]:
    """All metrics for each row of weights ``w`` (B, N); ``None`` means weight 1 (B = 1)."""
    tot = np.ones((1, st.n)) if w is None else w
    pos = st.y[None, :] if w is None else w * st.y.astype(w.dtype)
    P, T = pos.sum(axis=1, dtype=np.float64), tot.sum(axis=1, dtype=np.float64)
    Nn = T - P
    rows = np.arange(tot.shape[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        # threshold metrics: the first `cut` sorted samples are called fake
        tp = pos[:, : st.cut].sum(axis=1, dtype=np.float64)
        fp = tot[:, : st.cut].sum(axis=1, dtype=np.float64) - tp
        acc_fake, acc_real = tp / P, (Nn - fp) / Nn
        f1_den = tp + fp + P
        out = {
            "acc_real": acc_real, "acc_fake": acc_fake, "accuracy": (tp + Nn - fp) / T,
            "balanced_accuracy": 0.5 * (acc_fake + acc_real),
            "f1": np.where(f1_den > 0, 2 * tp / np.maximum(f1_den, 1e-300), 0.0),
        }  # fmt: skip
        # ranking metrics over the distinct thresholds (descending scores)
        pos_g, tot_g = _group(st, pos), _group(st, tot)
        TP = np.cumsum(pos_g, axis=1)
        C = np.cumsum(tot_g, axis=1)
        FP = C - TP
        ties = 0.5 * _rowdot(pos_g, tot_g - pos_g) if st.has_ties else 0.0
        out["auroc"] = (P * Nn - _rowdot(pos_g, FP) + ties) / (P * Nn)
        out["ap"] = _rowdot(pos_g, TP / C) / P
        G = TP.shape[1] + 1  # curve points k = 0..G-1, point 0 is (0, 0)

        def at(A: np.ndarray, k: np.ndarray) -> np.ndarray:
            return np.where(k == 0, 0.0, A[rows, np.maximum(k - 1, 0)])

        k = _first_true(lambda k: at(FP, k) / Nn + at(TP, k) / P >= 1.0, G, rows.size)
        kp = np.maximum(k - 1, 0)
        f0, f1 = at(FP, kp) / Nn, at(FP, k) / Nn
        t0, t1 = at(TP, kp) / P, at(TP, k) / P
        d0, d1 = f0 + t0 - 1.0, f1 + t1 - 1.0
        frac = np.where(d1 != d0, -d0 / np.where(d1 != d0, d1 - d0, 1.0), 0.0)
        out["eer"] = f0 + frac * (f1 - f0)
        for name, target in (("tpr@1%fpr", 0.01), ("tpr@5%fpr", 0.05)):
            lim = target * Nn * (1 + 1e-12)
            k = _first_true(lambda k: at(FP, k) > lim, G + 1, rows.size) - 1
            out[name] = at(TP, np.minimum(k, G - 1)) / P
        one_class = (P == 0) | (Nn == 0)
        for name in RANKING_METRICS:
            out[name] = np.where(one_class, np.nan, out[name])
        if st.onehot is not None:
            oh, ohp = st.onehot.astype(tot.dtype, copy=False), st.onehot_p.astype(tot.dtype, copy=False)
            out["ece"] = np.abs((pos @ oh).astype(np.float64) - tot @ ohp).sum(axis=1) / T
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
    kept; fewer than :data:`MIN_GROUPS` per class marks the intervals unreliable.
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


def bootstrap_intervals(
    st: _Sorted, n_resamples: int, seed: int = 0, confidence: float = 0.95
) -> dict[str, tuple[float | None, float | None]]:
    """Percentile intervals from ``n_resamples`` stratified resamples, in batches.

    Stratified (as pROC does): the reals are resampled with replacement among the reals and the
    fakes among the fakes, so every resample keeps the test set's class counts. With ``st.units``
    (a cluster bootstrap) the draws are of whole groups within each class: every image of a drawn
    group gets the group's count as its weight.
    """
    if st.units is not None:
        return _percentiles(_cluster_resamples(st, n_resamples, seed), confidence)
    rng = np.random.default_rng(seed)
    n = st.n
    classes = [c for c in (np.flatnonzero(st.y == 0), np.flatnonzero(st.y == 1)) if c.size]
    # resample counts and their cumulative sums are integers < 2**24: exact in float32, half the traffic
    dtype = np.float32 if n < 2**24 else np.float64
    chunk = max(1, min(n_resamples, _CHUNK_ELEMENTS // max(n, 1)))
    results: dict[str, list[np.ndarray]] = {}
    done = 0
    while done < n_resamples:
        b = min(chunk, n_resamples - done)
        itype = np.int64 if b * n >= 2**31 else np.int32
        idx = np.concatenate([c.astype(itype)[rng.integers(0, c.size, size=(b, c.size), dtype=itype)]
                              for c in classes], axis=1)
        idx += (np.arange(b, dtype=itype) * n)[:, None]
        w = np.bincount(idx.ravel(), minlength=b * n).reshape(b, n).astype(dtype)
        for k, v in _compute(st, w).items():
            results.setdefault(k, []).append(v)
        done += b
    return _percentiles(results, confidence)


def _cluster_resamples(st: _Sorted, n_resamples: int, seed: int) -> dict[str, list[np.ndarray]]:
    """Metric values of ``n_resamples`` cluster resamples (whole groups drawn within each class)."""
    rng = np.random.default_rng(seed)
    units = st.units
    assert units is not None
    n_units = int(units.max()) + 1
    unit_class = np.zeros(n_units, np.int64)
    unit_class[units] = st.y.astype(np.int64)
    per_class = [np.flatnonzero(unit_class == c) for c in (0, 1)]
    per_class = [c for c in per_class if c.size]
    chunk = max(1, min(n_resamples, _CHUNK_ELEMENTS // max(st.n, 1)))
    results: dict[str, list[np.ndarray]] = {}
    done = 0
    while done < n_resamples:
        b = min(chunk, n_resamples - done)
        counts = np.zeros((b, n_units))
        for c in per_class:
            draws = c[rng.integers(0, c.size, size=(b, c.size))]
            np.add.at(counts, (np.repeat(np.arange(b), c.size), draws.ravel()), 1.0)
        for k, v in _compute(st, counts[:, units]).items():
            results.setdefault(k, []).append(v)
        done += b
    return results


def _percentiles(results: dict[str, list[np.ndarray]], confidence: float) -> dict[str, tuple[float | None, float | None]]:
    """Percentile interval per metric from its resampled values (NaN resamples left out)."""
    alpha = (1 - confidence) / 2
    out: dict[str, tuple[float | None, float | None]] = {}
    for k, parts in results.items():
        vals = np.concatenate(parts)
        vals = vals[np.isfinite(vals)]
        if vals.size == 0:
            out[k] = (None, None)
        else:
            lo, hi = np.quantile(vals, [alpha, 1 - alpha])
            out[k] = (float(lo), float(hi))
    return out


def roc_curve(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points ``(fpr, tpr, thresholds)`` starting at (0, 0); needs both classes."""
    y, s = check_scores(labels, scores)
    st = _Sorted(y, s, 0.0, None)
    TP = np.cumsum(_group(st, st.y[None]), axis=1)[0]
    FP = np.cumsum(_group(st, 1 - st.y[None]), axis=1)[0]
    if TP[-1] == 0 or FP[-1] == 0:
        raise EvaluationError("a ROC curve needs both real and fake samples")
    thr = np.concatenate([[np.inf], st.s[st.starts]])
    return np.concatenate([[0.0], FP / FP[-1]]), np.concatenate([[0.0], TP / TP[-1]]), thr


def pr_curve(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Precision-recall points ``(recall, precision)`` over distinct thresholds (descending)."""
    y, s = check_scores(labels, scores)
    st = _Sorted(y, s, 0.0, None)
    TP = np.cumsum(_group(st, st.y[None]), axis=1)[0]
    FP = np.cumsum(_group(st, 1 - st.y[None]), axis=1)[0]
    if TP[-1] == 0:
        raise EvaluationError("a precision-recall curve needs fake samples")
    return TP / TP[-1], TP / (TP + FP)


def format_value(v: MetricValue, digits: int = 3, small: bool = False) -> str:
    """Human form: ``0.912 [0.900, 0.925]`` or ``n/a``; ``small``: the interval is marked unreliable (``†``)."""
    if v.value is None:
        return "n/a"
    text = f"{v.value:.{digits}f}"
    if v.low is not None and v.high is not None:
        text += f" [{v.low:.{digits}f}, {v.high:.{digits}f}]" + ("†" if small else "")
    return text


def summarise(metrics: Metrics, names: Sequence[str] = METRIC_NAMES) -> dict[str, str]:
    """Format the named metrics for a table row."""
    return {n: format_value(metrics.values[n]) for n in names if n in metrics.values}
