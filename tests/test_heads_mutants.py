"""Heads: what `scripts/mutation.sh heads` found the other head tests let through (benchmarks/README.md)."""
from __future__ import annotations

import numpy as np
import pytest

from deepsift.model.heads import HEAD_KINDS, load_head, make_head


def _data(shift: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.r_[rng.normal(1.0, 0.5, (60, 8)), rng.normal(1.0 - shift, 0.5, (60, 8))]
    return X, np.r_[np.zeros(60, int), np.ones(60, int)]


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_saving_a_refitted_head_into_its_folder_replaces_the_old_one(kind, tmp_path):
    old = make_head(kind).fit(*_data(1.5, 0))
    new = make_head(kind).fit(*_data(-1.5, 1))  # fakes on the other side: the opposite scores
    old.save(tmp_path / "head")
    new.save(tmp_path / "head")  # the folder exists now: re-fitting heads into a model folder is the usual case
    X, _ = _data(1.5, 2)
    back = load_head(tmp_path / "head")
    np.testing.assert_array_equal(back.predict_proba(X), new.predict_proba(X))
    assert not np.allclose(back.predict_proba(X), old.predict_proba(X))
