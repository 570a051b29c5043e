"""The integrity of a ranking: what a board publishes cannot decode hidden labels, the rules cannot change
under the submissions, host and late entries are marked and unranked, ties and the counting choice."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from deepsift.challenges import scoring
from deepsift.challenges.testsets import Key
from platformkit import csv_text, good_scores, host_challenge, join, register, run_worker, submit


def _key(n_real: int = 40, n_fake: int = 40, n_private: int = 20) -> Key:
    labels = np.r_[np.zeros(n_real), np.ones(n_fake), np.arange(n_private) % 2].astype(np.int8)
    n = labels.size
    return Key(pa.array([f"i{k}" for k in range(n)]), labels,
               np.array(["real" if y == 0 else "gen_a" for y in labels], dtype=object), np.zeros(n, bool),
               np.arange(n) < n_real + n_fake)


def _scores_for_order(order: list[int], n: int) -> np.ndarray:
    """Distinct scores that rank the images of ``order`` first to last (the rest at the bottom)."""
    s = np.zeros(n)
    s[order] = np.linspace(1.0, 0.5, len(order))
    return s


def test_the_published_roc_cannot_be_inverted():
    """One submission with distinct scores: its published ROC has <= 20 points, and a second submission
    that ranks one fake and one real the other way round publishes the very same curve: the curve cannot
    tell which of the two images is the fake, so it cannot give back the labels."""
    key = _key()
    public = np.flatnonzero(key.public)
    rng = np.random.default_rng(0)
    order = [int(i) for i in rng.permutation(public)]
    first = scoring.score(key, _scores_for_order(order, len(key)), None)["public"]["roc"]
    assert len(first) <= 20 < key.public.sum() + 1  # not one point per image
    n_real = int((key.labels[public] == 0).sum())
    seen = {int(np.floor(f * n_real)) for f in scoring.ROC_GRID}  # the reals whose step the grid reads
    r = next(k for k in range(n_real - 1) if k not in seen)
    reals = [i for i in order if key.labels[i] == 0]
    # move the first fake ranked below the r-th real to just above it
    pos = order.index(reals[r])
    fake = next(i for i in order[pos + 1:] if key.labels[i] == 1)
    swapped = [i for i in order if i != fake]
    swapped.insert(pos, fake)
    assert swapped != order and key.labels[swapped].tolist() != key.labels[order].tolist()
    second = scoring.score(key, _scores_for_order(swapped, len(key)), None)["public"]["roc"]
    assert second == first


def test_the_roc_grid_reads_the_curve_at_fixed_fprs():
    fpr = np.array([0.0, 0.0, 0.5, 0.5, 1.0])
    tpr = np.array([0.0, 0.4, 0.4, 0.8, 1.0])
    got = scoring.roc_on_grid(fpr, tpr, (0.0, 0.25, 0.5, 0.75, 1.0))
    # at a step: its top; between steps: along the curve (flat from (0, .4) to (.5, .4), then .8 -> 1 linearly)
    assert got == pytest.approx([0.4, 0.4, 0.8, 0.9, 1.0])


def test_participants_see_a_coarse_roc_and_rounded_metrics(app, client, tmp_path):
    hosted = host_challenge(app, client, tmp_path, n=12, bootstrap=0)
    alice = join(client, hosted.slug, register(client, "alice"), "Team A")
    scores = good_scores(hosted, noise=0.4, seed=3)
    sid = submit(client, hosted, alice, csv_text(scores)).json()["id"]
    run_worker(app)
    sub = client.get(f"/api/submissions/{sid}", headers=alice.auth).json()
    pub = sub["scores"]["public"]
    assert len(pub["roc"]) <= 20
    values = [v for v in pub["overall"].values() if isinstance(v, float)] + [sub["public_score"]]
    assert values and all(v == round(v, scoring.DISPLAY_DIGITS) for v in values)
    assert any(v != round(v, 2) for v in values)  # rounded to 4 decimals, not coarser
    host = client.get(f"/api/submissions/{sid}", headers=hosted.host.auth).json()
    assert host["public_score"] == pytest.approx(sub["public_score"], abs=1e-4)


def _phase_body(client, hosted, **changes) -> dict:
    ph = client.get(f"/api/challenges/{hosted.slug}", headers=hosted.host.auth).json()["phases"][0]
    body = {k: ph[k] for k in ("slug", "title", "max_per_day", "max_total", "counting", "ranking_metric",
                               "threshold", "bootstrap", "public_fraction", "submissions", "model_time_limit_s",
                               "model_memory_mb")}
    body.update(starts=ph["starts_at"], ends=ph["ends_at"], **changes)
    return body


def _put_phase(client, hosted, **changes):
    return client.put(f"/api/challenges/{hosted.slug}/phases/{hosted.phase}", json=_phase_body(client, hosted, **changes),
                      headers=hosted.host.auth)


def test_scoring_rules_are_fixed_once_a_phase_has_submissions(app, client, tmp_path):
    hosted = host_challenge(app, client, tmp_path, bootstrap=0)
    assert _put_phase(client, hosted, ranking_metric="ap").status_code == 200  # no submissions yet: free
    alice = join(client, hosted.slug, register(client, "alice"), "Team A")
    assert submit(client, hosted, alice, csv_text(good_scores(hosted))).status_code == 201
    for change in ({"ranking_metric": "eer"}, {"threshold": 0.7}, {"ranking_metric": "auroc", "threshold": 0.2}):
        r = _put_phase(client, hosted, **change)
        assert r.status_code == 409, change
        assert "has submissions" in r.json()["detail"] and "can no longer change" in r.json()["detail"]
    r = _put_phase(client, hosted, title="Renamed", max_per_day=5)  # not a scoring rule: still editable
    assert r.status_code == 200 and r.json()["phases"][0]["title"] == "Renamed"
    ph = client.get(f"/api/challenges/{hosted.slug}").json()["phases"][0]
    assert (ph["ranking_metric"], ph["threshold"]) == ("ap", 0.5)


def test_the_public_share_is_fixed_once_the_test_set_is_split(app, client, tmp_path):
    hosted = host_challenge(app, client, tmp_path, bootstrap=0)
    r = _put_phase(client, hosted, public_fraction=0.3)
    assert r.status_code == 409 and "already split" in r.json()["detail"]
    ph = client.get(f"/api/challenges/{hosted.slug}").json()["phases"][0]
    assert ph["public_fraction"] == 0.5  # what is shown is what was applied
