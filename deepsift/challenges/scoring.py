"""Score a submission against a hidden key, with the evaluation toolkit's metrics (nothing re-implemented).

For each part (``public``, ``private``; then ``all`` = both, in the second step) the result holds the overall metrics,
one row per generator (real images + that generator's, as ``deepsift eval scores`` does), and,
when the test set has transformed images, the metrics without and with transformations. Ranking
metrics (AP, AUROC, EER, TPR at FPR) use the scores; hard labels (F1, accuracies) come from the
submitted ``label`` column when there is one, else from the score by the one decision rule
(:mod:`deepsift.decision`: fake iff score >= threshold). The ``all`` part and the bootstrap 95 %
intervals of every metric are a second, separate step (:func:`complete`), so the live leaderboard
shows a score as soon as the public part is scored.

A phase that declares the generators of its training data (``train_generators``) also gets, in each
part, ``split``: the metrics on the real images plus the fakes of ``seen`` generators, and on the
real images plus the fakes of ``unseen`` ones (every real image counts in both, as the negatives;
``overall`` is the third figure, all), with their intervals in ``split_ci``. ``rank_on`` (all, seen,
unseen) says which of the three the ranking metric is read from. Without ``train_generators`` a
result is exactly what it was before.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..decision import decide, rule_text
from ..evaluate.metrics import METRIC_NAMES, compute_metrics, roc_curve
from .testsets import Key

PARTS = ("public", "private", "all")
THRESHOLD_METRICS = ("acc_real", "acc_fake", "accuracy", "balanced_accuracy", "f1")
ROC_GRID = (0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
"""The FPRs at which a submission's ROC curve is stored and shown (at most 20: the labels must not leak)."""
DISPLAY_DIGITS = 4
"""Decimals of the metrics participants and leaderboards see while a phase runs (hosts see all)."""


def _values(m: Any) -> dict[str, float | None]:
    return {k: m.values[k].value for k in METRIC_NAMES}


def _metrics(y: np.ndarray, s: np.ndarray, hard: np.ndarray | None, threshold: float) -> dict[str, float | None]:
    """All metrics of one subset: ranking ones from scores, threshold ones from hard labels if given."""
    out = _values(compute_metrics(y, s, threshold=threshold))
    if hard is not None:
        from_labels = _values(compute_metrics(y, hard.astype(np.float64), threshold=0.5))
        out.update({k: from_labels[k] for k in THRESHOLD_METRICS})
    out["n"] = int(y.size)  # type: ignore[assignment]
    return out


def _roc(y: np.ndarray, s: np.ndarray) -> list[list[float]] | None:
    """The ROC curve from (0, 0) and read at the fixed FPR grid :data:`ROC_GRID` (never one point per image:
    see :func:`roc_on_grid`)."""
    if np.unique(y).size < 2:
        return None
    fpr, tpr, _ = roc_curve(y, s)
    return [[0.0, 0.0]] + [[round(f, 5), round(v, 5)] for f, v in zip(ROC_GRID, roc_on_grid(fpr, tpr))]


def roc_on_grid(fpr: np.ndarray, tpr: np.ndarray, grid: tuple[float, ...] | None = None) -> list[float]:
    """TPR of a ROC curve at each FPR of ``grid``: the highest TPR at an FPR on the curve, linear in between.

    A curve with a point per image would tell, in one submission's own score order, which images
    are fake (a step up) and which real (a step right); a fixed grid of at most 20 FPRs tells only
    how many fakes rank above a few chosen reals, so the labels cannot be read back from it.
    """
    grid = ROC_GRID if grid is None else grid
    xs, first = np.unique(fpr, return_index=True)
    last = np.r_[first[1:] - 1, fpr.size - 1]
    hi, lo = tpr[last], tpr[first]  # top and bottom of the vertical step at each distinct FPR
    out = []
    for f in grid:
        j = int(np.searchsorted(xs, f, side="right")) - 1
        if xs[j] == f or j == xs.size - 1:
            out.append(float(hi[j]))
        else:
            out.append(float(hi[j] + (lo[j + 1] - hi[j]) * (f - xs[j]) / (xs[j + 1] - xs[j])))
    return out


def published(result: Any, digits: int = DISPLAY_DIGITS) -> Any:
    """A result with every float rounded to ``digits`` decimals (what participants and boards see)."""
    if isinstance(result, float):
        return round(result, digits)
    if isinstance(result, dict):
        return {k: published(v, digits) for k, v in result.items()}
    if isinstance(result, list):
        return [published(v, digits) for v in result]
    return result


def unseen_mask(key: Key, train_generators: list[str]) -> np.ndarray:
    """Per image: a fake whose generator is not among ``train_generators`` (real images: False)."""
    codes, names = key.generator_codes
    train = set(train_generators)
    seen_codes = np.array([i for i, n in enumerate(names) if n in train], np.int32)
    return (key.labels == 1) & ~np.isin(codes, seen_codes)


def split_masks(key: Key, train_generators: list[str]) -> dict[str, np.ndarray]:
    """``seen`` and ``unseen`` subsets of the whole key: every real image plus the fakes of that kind."""
    unseen = unseen_mask(key, train_generators)
    real = key.labels == 0
    return {"seen": real | ((key.labels == 1) & ~unseen), "unseen": real | unseen}


def _part(key: Key, mask: np.ndarray, scores: np.ndarray, hard: np.ndarray | None, threshold: float,
          detail: bool, train: list[str] | None = None) -> dict[str, Any]:
    # sorted once (descending, stable); every subset below keeps that order, so the metrics' own
    # stable sorts meet already-sorted input (linear time). Metrics do not depend on input order.
    idx = np.flatnonzero(mask)
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    y, s = key.labels[idx], scores[idx]
    h = hard[idx] if hard is not None else None
    codes, names = key.generator_codes
    g = codes[idx]
    out: dict[str, Any] = {"overall": _metrics(y, s, h, threshold), "generators": {}}
    for code in sorted(np.unique(g[y == 1]).tolist(), key=lambda c: names[c]):
        m = (y == 0) | (g == code)
        out["generators"][names[code]] = _metrics(y[m], s[m], h[m] if h is not None else None, threshold)
    tr = key.transformed[idx]
    if detail and tr.any() and (~tr).any():
        out["transformations"] = {
            name: _metrics(y[sel], s[sel], h[sel] if h is not None else None, threshold)
            for name, sel in (("without", ~tr), ("with", tr))
        }  # fmt: skip
    out["roc"] = _roc(y, s)
    if train is not None:
        out["split"] = {}
        for name, sub in split_masks(key, train).items():
            sel = sub[idx]
            out["split"][name] = _metrics(y[sel], s[sel], h[sel] if h is not None else None, threshold) \
                if sel.any() else None
    return out


def score(key: Key, scores: np.ndarray, labels: np.ndarray | None, *, threshold: float = 0.5,
          ranking_metric: str = "auroc", train_generators: list[str] | None = None,
          rank_on: str = "all") -> dict[str, Any]:
    """The metrics JSON of one submission on the ``public`` and ``private`` parts (see the module docstring)."""
    scores = np.asarray(scores, np.float64)
    result: dict[str, Any] = {
        "rule": rule_text(threshold) if labels is None else "hard labels as submitted (label column)",
        "threshold": threshold, "ranking_metric": ranking_metric,
        "hard_labels": "rule" if labels is None else "submitted",
    }  # fmt: skip
    train = None if train_generators is None else sorted(train_generators)
    if train is not None:
        codes, names = key.generator_codes
        fakes = sorted({names[c] for c in np.unique(codes[key.labels == 1]).tolist()})
        result.update(train_generators=train, rank_on=rank_on, seen_generators=[g for g in fakes if g in train],
                      unseen_generators=[g for g in fakes if g not in train])
    for part, mask in (("public", key.public), ("private", ~key.public)):
        result[part] = _part(key, mask, scores, labels, threshold, detail=True, train=train)
    return result


def complete(result: dict[str, Any], key: Key, scores: np.ndarray, labels: np.ndarray | None, *,
             resamples: int, seed: int = 0) -> dict[str, Any]:
    """The second step: the ``all`` part (the whole test set, for hosts and after the end) and the
    bootstrap intervals of every overall metric of each part (none when ``resamples`` is 0)."""
    out = dict(result)
    threshold = float(result["threshold"])
    train = result.get("train_generators")
    out["all"] = _part(key, np.ones(len(key), bool), np.asarray(scores, np.float64), labels, threshold, detail=False,
                       train=train)
    if resamples > 0:
        for part, ci in intervals(key, scores, labels, threshold=threshold, resamples=resamples, seed=seed).items():
            out[part] = {**out[part], "ci": ci}
        if train is not None:
            for name, sub in split_masks(key, train).items():
                for part, ci in intervals(key, scores, labels, threshold=threshold, resamples=resamples, seed=seed,
                                          within=sub).items():
                    out[part] = {**out[part], "split_ci": {**out[part].get("split_ci", {}), name: ci}}
    return out


def ranking_value(result: dict[str, Any], part: str) -> float | None:
    """The ranking metric of ``part`` from a result: overall, or on the ``rank_on`` split when the phase has one."""
    res = result.get(part, {})
    on = result.get("rank_on", "all")
    figures = res.get("overall", {}) if on == "all" else (res.get("split") or {}).get(on) or {}
    return figures.get(result["ranking_metric"])


def ranking_ci(result: dict[str, Any], part: str) -> list[float] | None:
    """The 95 % interval of the ranking metric of ``part`` (on the ``rank_on`` split, as :func:`ranking_value`)."""
    res = result.get(part, {})
    on = result.get("rank_on", "all")
    ci = res.get("ci") if on == "all" else (res.get("split_ci") or {}).get(on)
    return (ci or {}).get(result["ranking_metric"])


def intervals(key: Key, scores: np.ndarray, labels: np.ndarray | None, *, threshold: float, resamples: int,
              seed: int = 0, within: np.ndarray | None = None) -> dict[str, dict[str, list[float] | None]]:
    """Stratified bootstrap 95 % intervals of every overall metric, per part (``public``, ``private``);
    ``within``: only the images of this mask (a seen/unseen split)."""
    out: dict[str, dict[str, list[float] | None]] = {}
    masks = {"public": key.public, "private": ~key.public}
    for part, mask in masks.items():
        if within is not None:
            mask = mask & within
        y, s = key.labels[mask], np.asarray(scores, np.float64)[mask]
        if y.size == 0:
            out[part] = {k: None for k in METRIC_NAMES}
            continue
        m = compute_metrics(y, s, threshold=threshold, bootstrap=resamples, seed=seed)
        ci = {k: ([m.values[k].low, m.values[k].high] if m.values[k].low is not None else None) for k in METRIC_NAMES}
        if labels is not None:
            mh = compute_metrics(y, labels[mask].astype(np.float64), threshold=0.5, bootstrap=resamples, seed=seed)
            ci.update({k: ([mh.values[k].low, mh.values[k].high] if mh.values[k].low is not None else None)
                       for k in THRESHOLD_METRICS})
        out[part] = ci
    return out


def hard_labels(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Hard labels of scores by the one decision rule (for exports)."""
    return decide(scores, threshold)
