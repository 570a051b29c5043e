"""Metrics: what `scripts/mutation.sh metrics` found the other metric tests let through (benchmarks/README.md).

Kept apart from test_eval_metrics.py (another branch changes deepsift/evaluate/ and its tests).
"""
from __future__ import annotations

import numpy as np
import pytest

from deepsift.evaluate.metrics import METRIC_NAMES, compute_metrics, roc_curve
from deepsift.exceptions import EvaluationError


def _data(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)


def test_without_a_bootstrap_no_metric_has_an_interval():
    y, s = _data()
    plain = compute_metrics(y, s)
    assert all(plain.values[k].low is None and plain.values[k].high is None for k in METRIC_NAMES)
    boot = compute_metrics(y, s, bootstrap=50)  # the same figures, now with intervals around them
    for k in ("auroc", "accuracy", "eer"):
        assert boot[k] == plain[k] and boot.values[k].low < boot.values[k].high


def test_the_roc_of_a_detector_that_scores_every_fake_lowest_is_drawn():
    # an inverted detector (AUROC 0) is a result to show, not an error: every real is passed before any fake
    fpr, tpr, thr = roc_curve([0, 0, 0, 1, 1], [0.9, 0.8, 0.7, 0.2, 0.2])
    assert fpr.tolist() == [0.0, 1 / 3, 2 / 3, 1.0, 1.0] and tpr.tolist() == [0.0, 0.0, 0.0, 0.0, 1.0]
    assert thr.tolist() == [np.inf, 0.9, 0.8, 0.7, 0.2]
    assert compute_metrics([0, 0, 0, 1, 1], [0.9, 0.8, 0.7, 0.2, 0.2])["auroc"] == 0.0


@pytest.mark.parametrize("y", [[0, 0, 0, 1], [1, 1, 1, 0]])
def test_the_roc_of_a_set_with_one_image_of_a_class_is_drawn_and_one_without_a_class_is_refused(y):
    """One fake (or one real) image is enough for a curve; none is a clear error, never a curve of NaNs."""
    scores = [0.1, 0.4, 0.35, 0.8]
    fpr, tpr, _ = roc_curve(y, scores)
    assert fpr[-1] == 1.0 and tpr[-1] == 1.0 and np.isfinite(fpr).all() and np.isfinite(tpr).all()
    for one_class in ([0, 0, 0, 0], [1, 1, 1, 1]):
        with pytest.raises(EvaluationError, match="needs both real and fake"):
            roc_curve(one_class, scores)


def test_probabilities_above_one_are_refused_with_the_reason():
    y, s = _data(40)
    for bad in (1.5, 1.0001, -0.2):
        probs = np.clip(s, 0, 1)
        probs[3] = bad
        with pytest.raises(EvaluationError, match=r"probabilities must lie in \[0, 1\]"):
            compute_metrics(y, s, probabilities=probs)


@pytest.mark.parametrize("n", [2**24 - 1, 2**24, 2**24 + 1, 3 * 2**24 + 1])
def test_resample_counts_stay_exact_integers_for_any_set_size(n):
    """The bootstrap's float32 counts (half the traffic) hold only while every count up to n is exact: a
    set of more than 2**24 images gets float64 (a float32 count would round 2**24 + 1 to 2**24)."""
    from deepsift.evaluate.bootstrap import count_dtype

    dtype = count_dtype(n)
    assert int(np.asarray(n, dtype=dtype)) == n and int(np.asarray(n - 1, dtype=dtype)) == n - 1
    assert dtype is (np.float32 if n < 2**24 else np.float64)  # the narrow type wherever it is exact


@pytest.mark.parametrize("size", [2**31 - 1, 2**31, 2**31 + 1, 3 * 2**31])
def test_resample_indices_fit_their_integer_type_for_any_set_size(size):
    """int32 flat indices (half the traffic) only while the last index, size - 1, fits; int64 beyond."""
    from deepsift.evaluate.bootstrap import index_dtype

    dtype = index_dtype(size)
    assert np.iinfo(dtype).max >= size - 1
    assert dtype is (np.int32 if size - 1 <= np.iinfo(np.int32).max else np.int64)  # narrow wherever it fits
