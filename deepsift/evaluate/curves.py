"""Sorted scores and every metric from per-sample weights: the one routine behind point estimates,
bootstrap resamples and the ROC / precision-recall curves (see :mod:`.metrics` for the definitions)."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..exceptions import EvaluationError

RANKING_METRICS = ("ap", "auroc", "eer", "tpr@1%fpr", "tpr@5%fpr")
ECE_BINS = 15


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
