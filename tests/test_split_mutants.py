"""Splits: what `scripts/mutation.sh splits` found the other split tests let through (benchmarks/README.md)."""
from __future__ import annotations

import pytest

from deepsift.data.split import split_of
from deepsift.exceptions import UsageError


@pytest.mark.parametrize("val, test", [(0.6, 0.6), (0.5, 0.51), (1.0, 0.2)])
def test_val_and_test_shares_that_add_up_to_more_than_everything_are_refused(val, test):
    with pytest.raises(UsageError, match=rf"must be >= 0 and sum to <= 1, got {val} and {test}"):
        split_of("rec-1", val, test)


def test_shares_that_add_up_to_everything_leave_train_empty():
    sides = {split_of(f"rec-{i}", 0.5, 0.5) for i in range(200)}
    assert sides == {"val", "test"}
