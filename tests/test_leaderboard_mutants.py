"""Leaderboard: what `scripts/mutation.sh leaderboard` found the ranking tests let through (benchmarks/README.md)."""
from __future__ import annotations

import numpy as np
import pytest

from platformkit import csv_text, host_challenge, join, register, run_worker, submit


def test_with_best_counting_a_later_better_submission_replaces_the_first(app, client, tmp_path):
    hosted = host_challenge(app, client, tmp_path, bootstrap=0)  # counting: best (the default)
    rng = np.random.default_rng(1)
    noisy = {n: float(rng.random()) for n in hosted.names}
    perfect = {n: float(0.1 + 0.8 * y) for n, y in zip(hosted.names, hosted.key.labels)}
    alice = join(client, hosted.slug, register(client, "alice"), "Team A")
    ids = []
    for scores in (noisy, perfect):  # the worse one first
        ids.append(submit(client, hosted, alice, csv_text(scores)).json()["id"])
        run_worker(app)
    subs = [client.get(f"/api/submissions/{i}", headers=hosted.host.auth).json() for i in ids]
    assert subs[1]["public_score"] > subs[0]["public_score"]
    row = client.get(f"/api/challenges/{hosted.slug}/phases/dev/leaderboard").json()["rows"][0]
    assert row["metrics"]["auroc"] == pytest.approx(subs[1]["public_score"], abs=1e-4)


def test_the_board_shows_the_method_a_team_described(app, client, tmp_path):
    hosted = host_challenge(app, client, tmp_path, bootstrap=0)
    scores = {n: float(0.1 + 0.8 * y) for n, y in zip(hosted.names, hosted.key.labels)}
    alice = join(client, hosted.slug, register(client, "alice"), "Team A")
    method = {"method_name": "CoDE", "method_description": "ViT-Tiny, contrastive",
              "method_url": "https://arxiv.org/abs/2407.20337"}
    assert submit(client, hosted, alice, csv_text(scores), **method).status_code < 300
    run_worker(app)
    row = client.get(f"/api/challenges/{hosted.slug}/phases/dev/leaderboard").json()["rows"][0]
    assert {k: row[k] for k in method} == method
