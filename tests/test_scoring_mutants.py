"""Scoring: what `scripts/mutation.sh scoring` found the platform tests let through (benchmarks/README.md)."""
from __future__ import annotations

import numpy as np

from deepsift.challenges.scoring import ROC_GRID, roc_on_grid


def test_the_published_roc_grid_is_increasing_fprs_from_0_to_1():
    grid = np.asarray(ROC_GRID)
    assert grid[0] == 0.0 and grid[-1] == 1.0 and len(grid) <= 20
    assert bool(np.all(np.diff(grid) > 0)) and bool(np.all((grid >= 0) & (grid <= 1)))
    fpr, tpr = np.array([0.0, 0.5, 1.0]), np.array([0.0, 1.0, 1.0])  # TPR reaches 1 at FPR 0.5
    assert roc_on_grid(fpr, tpr) == [min(1.0, 2 * f) for f in ROC_GRID]
