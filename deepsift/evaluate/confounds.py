"""Reading the confound audit: rank its findings, merge what is one cue, say the contrast, tie it to detectors.

* **Rank**: a finding's weight is its strength (AUROC of the feature alone, above chance) times the
  share of the images it covers; the strongest, widest finding comes first.
* **Merge**: a feature whose separation disappears *within the strata* of a higher-ranked one
  (format, chroma subsampling and JPEG quality all say "JPEG") is the same cue, reported once.
* **Contrast in words**: ``reals are 44% JPEG, fakes 0% (fakes are 100% PNG)``, or
  ``fakes lower: median 256 vs 512 for reals``.
* **Explain**: a detector's AUROC within the strata of the flagged feature (pairs of a real and a
  fake compared only inside one stratum). When that falls to about chance while the overall figure
  is high, "this detector's result is explained by X".
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

N_BINS = 4  # strata of a numeric feature: quartiles of its pooled values
EXPLAINED_SHARE = 0.5  # explained when within-strata AUROC keeps less than half of the margin over chance


def auroc(labels: np.ndarray, x: np.ndarray) -> float | None:
    """AUROC of score ``x`` for label 1 (ties count 1/2); None with one class only."""
    from scipy.stats import rankdata

    n1 = int(labels.sum())
    n0 = labels.size - n1
    if n0 == 0 or n1 == 0:
        return None
    r = rankdata(x)
    return float((r[labels == 1].sum() - n1 * (n1 + 1) / 2) / (n0 * n1))


def strata_of(values: Sequence[Any], kind: str) -> np.ndarray:
    """A stratum label per sample: the category, or the quartile bin of a number; ``n/a`` where undefined."""
    out = np.array(["n/a"] * len(values), dtype=object)
    defined = [i for i, v in enumerate(values) if v is not None]
    if not defined:
        return out
    if kind == "number":
        x = np.array([float(values[i]) for i in defined])
        edges = np.unique(np.quantile(x, np.linspace(0, 1, N_BINS + 1)[1:-1]))
        bins = np.searchsorted(edges, x, side="right")
        out[defined] = [f"bin{b}" for b in bins]
    else:
        out[defined] = [str(values[i]) for i in defined]
    return out


def within_strata_auroc(labels: np.ndarray, scores: np.ndarray, strata: np.ndarray) -> float | None:
    """AUROC over the (real, fake) pairs that share a stratum; None when no stratum holds both classes."""
    total, weight = 0.0, 0.0
    for s in dict.fromkeys(strata.tolist()):
        m = strata == s
        n1 = int(labels[m].sum())
        n0 = int(m.sum()) - n1
        if n0 and n1:
            a = auroc(labels[m], scores[m])
            total += float(a) * n0 * n1
            weight += n0 * n1
    return total / weight if weight else None


def fake_score(values: Sequence[Any], kind: str, labels: np.ndarray) -> np.ndarray:
    """A per-sample score of a feature pointing to fake (numbers as they are; categories by their fake share)."""
    if kind == "number":
        return np.array([np.nan if v is None else float(v) for v in values])
    keys = np.array(["n/a" if v is None else str(v) for v in values], dtype=object)
    out = np.zeros(len(keys))
    for k in dict.fromkeys(keys.tolist()):
        m = keys == k
        out[m] = labels[m].mean()
    return out


def oriented(a: float | None) -> float | None:
    """An AUROC read in the direction that separates (>= 0.5)."""
    return None if a is None else max(a, 1.0 - a)


def contrast(f: dict[str, Any]) -> str:
    """The dominant contrast of a feature between reals and fakes, in words."""
    real, fake = f.get("real") or {}, f.get("fake") or {}
    if not real.get("n") or not fake.get("n"):
        return ""
    if "counts" in real:
        pr = {k: v / real["n"] for k, v in real["counts"].items()}
        pf = {k: v / fake["n"] for k, v in fake["counts"].items()}
        c = max(set(pr) | set(pf), key=lambda k: (abs(pf.get(k, 0.0) - pr.get(k, 0.0)), k))
        top_f = max(pf, key=lambda k: (pf[k], k))
        text = f"reals are {pr.get(c, 0.0):.0%} {c}, fakes {pf.get(c, 0.0):.0%}"
        if top_f != c:
            text += f" (fakes are {pf[top_f]:.0%} {top_f})"
        return text
    word = "higher" if real["median"] < fake["median"] else "lower" if real["median"] > fake["median"] else "alike"
    return f"fakes {word}: median {fake['median']:.3g} vs {real['median']:.3g} for reals"


def explained(overall: float | None, within: float | None) -> bool:
    """True when a high overall AUROC keeps less than :data:`EXPLAINED_SHARE` of its margin within the strata."""
    if overall is None or overall <= 0.6:
        return False
    return within is None or within - 0.5 <= EXPLAINED_SHARE * (overall - 0.5)


def verdict(label: str, overall: float | None, within: float | None) -> str:
    """What a detector's within-strata AUROC says, in words."""
    if overall is None:
        return "n/a"
    if within is None:
        return (f"cannot be told apart from {label}: no stratum of it holds both classes"
                + ("; this detector's result is explained by " + label if explained(overall, within) else ""))
    if explained(overall, within):
        return f"this detector's result is explained by {label}"
    return f"holds within each {label} stratum"
