"""Held-out records: the probe is fitted on some, the epoch chosen on others, the leave-out report scores a third set."""
from __future__ import annotations

import numpy as np
import pytest

import deepsift.train.leaveout as leaveout
import deepsift.train.loader as loader
from deepsift.cli import main
from deepsift.train.config import make_config
from deepsift.train.data import build_index
from deepsift.train.holdout import held_out, split_roles
from deepsift.train.probe import probe_accuracy
from trainkit import make_dataset, tiny_config, write_yaml


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("hdata"), 40)


def test_leave_out_report_scores_records_that_neither_fit_the_heads_nor_chose_the_epoch(tiny_data, tmp_path,
                                                                                         monkeypatch, capsys):
    shards, reals = tiny_data
    probed: list[set[str]] = []  # the records of each probe_pixels call: per-epoch fit, per-epoch score, saved heads
    reported: list = []
    real_probe, real_samples = loader.probe_pixels, leaveout.left_out_samples

    def spy_probe(files, records, *a, **k):
        probed.append({r.id for r in records})
        return real_probe(files, records, *a, **k)

    def spy_samples(*a, **k):
        reported.extend(real_samples(*a, **k))
        return reported

    monkeypatch.setattr(loader, "probe_pixels", spy_probe)
    monkeypatch.setattr(leaveout, "left_out_samples", spy_samples)
    cfg = write_yaml(tmp_path / "t.yaml", tiny_config(steps=2, holdout=8))
    assert main(["train", "--data", str(shards), "--real", str(reals), "--out", str(tmp_path / "logo"),
                 "--config", str(cfg), "--leave-out", "up-bilinear"]) == 0
    assert "up-bilinear (left out): auroc" in capsys.readouterr().out
    assert len(probed) == 3, probed
    fit, select, heads = probed
    assert fit and select and not fit & select  # the epoch is chosen on records the probe was not fitted on
    assert heads == fit | select
    report_recs = {s.id.split("/")[0] for s in reported if s.label == 0}
    seen_fakes = {s.id.split("/")[0] for s in reported if s.generator == "up-nearest"}
    unseen = {s.id.split("/")[0] for s in reported if s.generator == "up-bilinear"}
    assert report_recs and seen_fakes == report_recs and unseen
    assert not report_recs & heads, report_recs & heads  # the report never scores a record that shaped a figure
    assert not unseen & heads, unseen & heads
    index = build_index([str(shards)], real=str(reals), leave_out=["up-bilinear"])
    trained, _ = held_out(index, make_config(**tiny_config(steps=2, holdout=8, leave_out=["up-bilinear"])))
    assert not report_recs & {r.id for r in trained}  # and never a record the network trained on


def test_roles_are_disjoint_cover_the_held_out_records_and_follow_the_seed():
    recs = [f"r{i}" for i in range(10)]
    for report in (False, True):
        roles = split_roles(recs, seed=3, report=report)
        parts = [roles.fit, roles.select, roles.report]
        assert sorted(x for p in parts for x in p) == sorted(recs)
        assert all(len(set(a) & set(b)) == 0 for i, a in enumerate(parts) for b in parts[i + 1:])
        assert roles.fit and roles.select and bool(roles.report) == report
        assert roles.heads == roles.fit + roles.select
        assert split_roles(recs, seed=3, report=report) == roles
    assert (len(roles.fit), len(roles.select), len(roles.report)) == (4, 3, 3)
    assert split_roles(recs, seed=4, report=True) != roles
    smallest = split_roles(recs[:4], seed=0, report=True)  # split_holdout keeps at least 4
    assert min(len(smallest.fit), len(smallest.select), len(smallest.report)) >= 1


def test_the_probe_is_scored_on_the_records_it_was_given_to_score_not_on_those_it_was_fitted_on():
    fit_x = np.array([[-1.0, 0.0], [-1.2, 0.1], [1.0, 0.0], [1.1, -0.1]] * 3)
    fit_y = np.array([0, 0, 1, 1] * 3)
    score_x = np.array([[-1.0, 0.2], [-0.9, 0.0], [1.0, 0.1], [0.8, 0.0]])
    assert probe_accuracy(fit_x, fit_y, score_x, np.array([0, 0, 1, 1])) == 1.0
    # the same points labelled the other way round: a probe scored where it was fitted would still read 1.0
    assert probe_accuracy(fit_x, fit_y, score_x, np.array([1, 1, 0, 0])) == 0.0
    # balanced accuracy: the mean of the per-class rates
    assert probe_accuracy(fit_x, fit_y, score_x, np.array([0, 1, 1, 0])) == pytest.approx(0.5)
    assert probe_accuracy(fit_x, fit_y, score_x, np.array([0, 1, 0, 1])) == pytest.approx(0.5)
    assert probe_accuracy(fit_x, fit_y, score_x, np.array([0, 0, 0, 1])) == pytest.approx((1.0 + 2 / 3) / 2)
    assert probe_accuracy(fit_x, fit_y, score_x, np.array([1, 1, 1, 1])) is None  # one class only
