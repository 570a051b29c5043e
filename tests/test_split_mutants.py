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


def test_a_leave_out_split_counts_the_other_generators_images_it_drops_from_test(tmp_path):
    import csv
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from evalkit import write_class

    from deepsift.data.groups import group_key
    from deepsift.data.layout import read_dataset
    from deepsift.data.split import split_samples

    for j, src in enumerate(("flickr", "coco")):
        write_class(tmp_path / "ds" / "real" / src, 6, False, seed=j)
    for j, g in enumerate(("sd21", "dalle3", "mj")):
        write_class(tmp_path / "ds" / "fake" / g, 6, True, seed=50 + j, period=4 + j)
    samples = read_dataset(tmp_path / "ds").samples
    others = [s for s in samples if s.label == 1 and s.generator != "mj"]
    want = sum(split_of(group_key(s), 0.0, 0.5) == "test" for s in others)  # what lands in test: dropped
    assert 0 < want < len(others)
    summary = split_samples(samples, tmp_path / "out", val=0.0, test=0.5, leave_out_generator="mj")
    assert summary.dropped == want
    assert f"dropped {want} image(s) of other generators from test" in summary.line("images")
    with open(tmp_path / "out" / "splits.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == len(samples) - want
