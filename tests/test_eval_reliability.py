"""The report's ⚠ mark sits only on figures that are unreliable by their own uncertainty, and the rule is stated."""
from __future__ import annotations

import numpy as np
import pytest

from deepsift.evaluate.metrics import compute_metrics
from deepsift.evaluate.reliability import MAX_WIDTH, MIN_GROUPS, RULE_TEXT, unreliable_reason
from deepsift.evaluate.runs import run_scores


def _scores(rng: np.random.Generator, n: int, centre: float, spread: float = 0.05) -> np.ndarray:
    return np.clip(rng.normal(centre, spread, n), 0.0, 1.0)


def _set(gens: dict[str, tuple[int, float]], n_real: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list]:
    """Reals around 0.2; each generator ``name -> (n, centre of its scores)``."""
    rng = np.random.default_rng(seed)
    y, s, g = [np.zeros(n_real)], [_scores(rng, n_real, 0.2, 0.1)], ["real"] * n_real
    for name, (n, centre) in gens.items():
        y.append(np.ones(n))
        s.append(_scores(rng, n, centre, 0.1))
        g += [name] * n
    return np.concatenate(y), np.concatenate(s), g


def _table_rows(md: str) -> list[str]:
    return [r for r in md.splitlines() if r.startswith("|") and not r.startswith("|---")]


def test_a_large_clear_set_has_no_mark(tmp_path) -> None:
    y, s, g = _set({"gen_a": (200, 0.8), "gen_b": (200, 0.85), "gen_c": (200, 0.9)})
    report, summary = run_scores(y, {"det": (y, s, g)}, threshold=0.5, bootstrap=200)
    md = report.write(tmp_path / "rep")["md"].read_text()
    rows = _table_rows(md)
    assert len(rows) >= 5 and not [r for r in rows if "⚠" in r]
    assert not any("unreliable" in line for line in summary)
    for m in report.results["scores"]["det"].values():
        assert all(m.unreliable(k) is None for k in m.values)
    assert RULE_TEXT in md  # the rule is stated beside the tables


def test_a_row_with_a_wide_interval_is_marked_and_a_clear_small_row_is_not(tmp_path) -> None:
    # gen_wide: 20 fakes that overlap the reals (AUROC ~0.7, interval ~0.24 wide); gen_clear: 25 fakes far apart
    y, s, g = _set({"gen_big": (200, 0.9), "gen_wide": (20, 0.27), "gen_clear": (25, 0.95)})
    report, _ = run_scores(y, {"det": (y, s, g)}, threshold=0.5, bootstrap=200)
    res = report.results["scores"]["det"]
    wide, clear, big = res["gen_wide"], res["gen_clear"], res["gen_big"]
    assert wide.values["auroc"].high - wide.values["auroc"].low > MAX_WIDTH
    assert "wide" in wide.unreliable("auroc") and wide.to_dict()["metrics"]["auroc"]["unreliable"]
    assert clear.n_fake < 30 and clear.unreliable("auroc") is None  # few images, but a clear figure
    assert big.unreliable("auroc") is None
    md = report.write(tmp_path / "rep")["md"].read_text()
    glance = {r.split("|")[1].strip().split(" (")[0]: r for r in _table_rows(md) if "(n=" in r}
    assert "⚠" in glance["gen_wide"] and "⚠" not in glance["gen_clear"] and "⚠" not in glance["gen_big"]


def test_tpr_at_low_fpr_needs_enough_reals() -> None:
    rng = np.random.default_rng(1)
    for n_real, marked in ((99, True), (100, False)):
        y = np.r_[np.zeros(n_real), np.ones(400)]
        s = np.r_[_scores(rng, n_real, 0.1), _scores(rng, 400, 0.9)]
        m = compute_metrics(y, s)
        assert (m.unreliable("tpr@1%fpr") is not None) is marked, n_real
        assert m.unreliable("auroc") is None and m.unreliable("tpr@5%fpr") is None
    assert unreliable_reason("tpr@5%fpr", 1.0, None, None, 19, 400) is not None
    assert unreliable_reason("tpr@5%fpr", 1.0, None, None, 20, 400) is None


def test_the_edges_of_the_rule() -> None:
    # the interval's width: just over the limit is marked, just under is not (many images: Wilson is narrow)
    assert unreliable_reason("auroc", 0.9, 0.8, 0.8 + MAX_WIDTH + 0.001, 5000, 5000) is not None
    assert unreliable_reason("auroc", 0.9, 0.8, 0.8 + MAX_WIDTH - 0.001, 5000, 5000) is None
    # a degenerate bootstrap interval cannot hide a handful of images: 1.0 [1.0, 1.0] on 8 fakes is marked
    assert unreliable_reason("auroc", 1.0, 1.0, 1.0, 500, 8) is not None
    # the floor (a perfect score's Wilson width) alone marks a figure on fewer than 16 images of its class
    assert unreliable_reason("acc_fake", 1.0, 1.0, 1.0, 500, 15) is not None
    assert unreliable_reason("acc_fake", 1.0, 1.0, 1.0, 500, 16) is None
    # without a bootstrap, AUROC's own analytic interval (Hanley-McNeil) decides
    assert unreliable_reason("auroc", 0.7, None, None, 300, 20) is not None
    assert unreliable_reason("auroc", 0.7, None, None, 300, 60) is None
    # AUROC rests on the smaller class; the real accuracy on the reals alone
    assert unreliable_reason("auroc", 0.95, None, None, 10, 5000) is not None
    assert unreliable_reason("acc_real", 0.95, None, None, 5000, 10) is None
    # groups: fewer than MIN_GROUPS of a class marks every defined figure; an undefined figure is never marked
    assert unreliable_reason("auroc", 0.99, None, None, 5000, 5000, MIN_GROUPS - 1, 50) is not None
    assert unreliable_reason("auroc", 0.99, None, None, 5000, 5000, MIN_GROUPS, 50) is None
    assert unreliable_reason("auroc", None, None, None, 0, 5) is None
    # grouped, no bootstrap: the analytic interval counts the groups (the independent units), not the images
    assert unreliable_reason("auroc", 0.8, None, None, 1000, 1000) is None
    assert unreliable_reason("auroc", 0.8, None, None, 1000, 1000, 25, 25) is not None
    assert unreliable_reason("auroc", 0.8, 0.75, 0.85, 1000, 1000, 25, 25) is None  # a cluster bootstrap decides


@pytest.mark.parametrize("n_groups, marked", [(MIN_GROUPS - 1, True), (MIN_GROUPS, False)])
def test_grouped_samples_with_few_groups_are_marked(n_groups: int, marked: bool) -> None:
    rng = np.random.default_rng(2)
    n = 20 * n_groups
    y = np.r_[np.zeros(n), np.ones(n)]
    s = np.r_[_scores(rng, n, 0.1), _scores(rng, n, 0.9)]
    groups = [f"r{i % n_groups}" for i in range(n)] + [f"f{i % n_groups}" for i in range(n)]
    m = compute_metrics(y, s, groups=groups, bootstrap=100)
    assert (m.unreliable("auroc") is not None) is marked
    assert ("unreliable" in m.to_dict()["metrics"]["auroc"]) is marked
