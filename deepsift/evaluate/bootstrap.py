"""Bootstrap percentile intervals: stratified by class, vectorised in batches; whole groups when
samples come in groups (a cluster bootstrap)."""
from __future__ import annotations

import numpy as np

from .curves import _compute, _Sorted

_CHUNK_ELEMENTS = 1_000_000  # resamples x samples handled per batch (memory bound)


def count_dtype(n: int) -> type:
    """The float type for resample counts of ``n`` images: float32 (half the traffic) while every count and
    cumulative sum (integers up to ``n``) is exact in it, i.e. below 2**24, else float64."""
    return np.float32 if n < 2**24 else np.float64


def index_dtype(size: int) -> type:
    """The integer type for flat indices into ``size`` resampled slots: int32 (half the traffic) while every
    index (up to ``size - 1``) fits in it, else int64."""
    return np.int64 if size > 2**31 else np.int32


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
    dtype = count_dtype(n)
    chunk = max(1, min(n_resamples, _CHUNK_ELEMENTS // max(n, 1)))
    results: dict[str, list[np.ndarray]] = {}
    done = 0
    while done < n_resamples:
        b = min(chunk, n_resamples - done)
        itype = index_dtype(b * n)
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
