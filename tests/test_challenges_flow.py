"""The platform end to end through its JSON API and a real worker, on SQLite and PostgreSQL."""
from __future__ import annotations

import csv
import datetime as dt
import io

import numpy as np
import pytest
from sqlalchemy import select, update

from deepsift.challenges.models import Phase, Submission, SubmissionEvent
from platformkit import (archive_names, csv_text, elsa_json, good_scores, host_challenge, join, register, run_worker,
                         submit)


@pytest.fixture
def hosted(app, client, tmp_path):
    return host_challenge(app, client, tmp_path)


def test_participant_downloads_submits_and_is_scored(app, client, hosted):
    alice = join(client, hosted.slug, register(client, "alice"), "Team A")
    r = client.get(f"/api/challenges/{hosted.slug}/phases/dev/download", headers=alice.auth)
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    names = archive_names(r.content)
    assert sorted(names) == sorted(hosted.names)
    r = submit(client, hosted, alice, csv_text(good_scores(hosted, 0.05)))
    assert r.status_code == 201, r.text
    sub = r.json()
    assert sub["state"] == "queued" and sub["position"] == 1 and sub["counts_toward_quota"]
    assert run_worker(app) == 1
    sub = client.get(f"/api/submissions/{sub['id']}", headers=alice.auth).json()
    assert sub["state"] == "scored" and sub["position"] is None and sub["intervals"] == "done"
    assert sub["public_score"] == pytest.approx(1.0) and sub["private_score"] is None  # private: after the end
    assert sub["wait_seconds"] >= 0 and sub["run_seconds"] >= 0
    assert [e["state"] for e in sub["events"]] == ["queued", "running", "scored", "intervals done"]
    pub = sub["scores"]["public"]
    assert set(pub["generators"]) == {"gen_a", "gen_b"} and pub["roc"][0] == [0.0, 0.0]
    for m in ("f1", "accuracy", "ap", "auroc", "tpr@1%fpr"):
        assert pub["overall"][m] == pytest.approx(1.0)
    assert "private" not in sub["scores"] and "all" not in sub["scores"]
    lo, hi = pub["ci"]["auroc"]
    assert lo <= 1.0 <= hi + 1e-12
    board = client.get(f"/api/challenges/{hosted.slug}/phases/dev/leaderboard").json()
    assert [(r["rank"], r["team"]) for r in board["rows"]] == [(1, "Team A")]
    assert board["rows"][0]["ci95"] is not None


def test_queue_positions_follow_submission_order(app, client, hosted):
    a = join(client, hosted.slug, register(client, "alice"), "Team A")
    b = join(client, hosted.slug, register(client, "bob"), "Team B")
    ids = [submit(client, hosted, p, csv_text(good_scores(hosted))).json()["id"] for p in (a, b, a)]
    positions = [client.get(f"/api/submissions/{i}", headers=(a if k != 1 else b).auth).json()["position"]
                 for k, i in enumerate(ids)]
    assert positions == [1, 2, 3]
    health = client.get("/api/queue").json()
    assert health["queued"] == 3 and health["running"] == 0 and health["oldest_queued_seconds"] >= 0
    run_worker(app)
    assert {client.get(f"/api/submissions/{i}", headers=a.auth if k != 1 else b.auth).json()["state"]
            for k, i in enumerate(ids)} == {"scored"}


def test_quotas_count_scored_and_queued_but_refund_failures(app, client, tmp_path):
    """max_per_day 3, max_total 4: a rejected file and a failed run do not use any of it."""
    hosted = host_challenge(app, client, tmp_path, max_per_day=3, max_total=4)
    alice = join(client, hosted.slug, register(client, "alice"), "Team A")
    good = csv_text(good_scores(hosted))
    assert submit(client, hosted, alice, "id,score\nnope,1\n").status_code == 422  # rejected: not counted
    ids = [submit(client, hosted, alice, good).json()["id"] for _ in range(3)]
    r = submit(client, hosted, alice, good)
    assert r.status_code == 409 and "daily submission limit reached: 3 of 3" in r.json()["detail"]
    # a run that fails (here: its aligned scores vanished) is refunded
    with app.state.db.session(write=True) as s:
        sub = s.get(Submission, ids[0])
        (app.state.storage.root / sub.file_path).with_name("aligned.npz").unlink()
    run_worker(app)
    failed = client.get(f"/api/submissions/{ids[0]}", headers=alice.auth).json()
    assert failed["state"] == "failed" and failed["reason"] and not failed["counts_toward_quota"]
    info = client.get(f"/api/challenges/{hosted.slug}", headers=alice.auth).json()["phases"][0]["quota"]
    assert info == {"used_today": 2, "used_total": 2, "max_per_day": 3, "max_total": 4, "left": 1}
    assert submit(client, hosted, alice, good).status_code == 201
    # the next UTC day: the daily count starts again, the total does not
    with app.state.db.session(write=True) as s:
        for sub in s.scalars(select(Submission)):
            sub.created_at -= dt.timedelta(days=1)
    assert submit(client, hosted, alice, good).status_code == 201
    r = submit(client, hosted, alice, good)
    assert r.status_code == 409 and "4 of 4" in r.json()["detail"]


def test_best_or_last_submission_counts(app, client, tmp_path):
    hosted = host_challenge(app, client, tmp_path, counting="last", ranking_metric="ap")
    alice = join(client, hosted.slug, register(client, "alice"), "Team A")
    bob = join(client, hosted.slug, register(client, "bob"), "Team B")
    perfect, noisy = good_scores(hosted), good_scores(hosted, noise=0.6, seed=3)
    submit(client, hosted, alice, csv_text(perfect))
    submit(client, hosted, alice, csv_text(noisy))  # last: counts, although worse
    submit(client, hosted, bob, csv_text(good_scores(hosted, noise=0.3, seed=1)))
    run_worker(app)
    board = client.get(f"/api/challenges/{hosted.slug}/phases/dev/leaderboard").json()
    alice_row = next(r for r in board["rows"] if r["team"] == "Team A")
    assert alice_row["metrics"]["ap"] < 1.0 and alice_row["submissions"] == 2
    with app.state.db.session(write=True) as s:
        s.execute(update(Phase).values(counting="best"))
    board = client.get(f"/api/challenges/{hosted.slug}/phases/dev/leaderboard").json()
    assert board["rows"][0]["team"] == "Team A" and board["rows"][0]["metrics"]["ap"] == pytest.approx(1.0)


def test_leaderboard_sorts_by_any_metric_and_exports_csv(app, client, hosted):
    teams = []
    for i, noise in enumerate((0.0, 0.4, 0.8)):
        p = join(client, hosted.slug, register(client, f"user{i}"), f"Team {i}")
        submit(client, hosted, p, csv_text(good_scores(hosted, noise, seed=i)))
        teams.append(p)
    run_worker(app)
    url = f"/api/challenges/{hosted.slug}/phases/dev/leaderboard"
    for metric in ("auroc", "f1", "ap", "accuracy", "tpr@1%fpr", "eer"):
        board = client.get(url, params={"sort": metric}).json()
        values = [r["metrics"][metric] for r in board["rows"]]
        lower_better = metric == "eer"
        assert values == sorted(values, reverse=not lower_better), metric
        asc = client.get(url, params={"sort": metric, "order": "asc"}).json()
        assert [r["metrics"][metric] for r in asc["rows"]] == sorted(values)
    assert client.get(url, params={"sort": "nonsense"}).status_code == 422
    text = client.get(url, params={"format": "csv"}).text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["team"] for r in rows] == [r["team"] for r in client.get(url).json()["rows"]]
    assert {"rank", "auroc", "f1", "ap", "accuracy", "tpr@1%fpr", "ci95_low", "ci95_high"} <= set(rows[0])


def test_private_part_opens_at_the_end(app, client, hosted):
    alice = join(client, hosted.slug, register(client, "alice"), "Team A")
    sid = submit(client, hosted, alice, csv_text(good_scores(hosted))).json()["id"]
    run_worker(app)
    url = f"/api/challenges/{hosted.slug}/phases/dev/leaderboard"
    assert client.get(url, params={"part": "private"}).status_code == 403
    assert client.get(url, params={"part": "private"}, headers=alice.auth).status_code == 403
    assert client.get(url, params={"part": "private"}, headers=hosted.host.auth).status_code == 200  # its host
    with app.state.db.session(write=True) as s:
        s.execute(update(Phase).values(ends_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)))
    board = client.get(url, params={"part": "private"}).json()
    assert board["rows"][0]["team"] == "Team A" and board["rows"][0]["metrics"]["auroc"] == pytest.approx(1.0)
    sub = client.get(f"/api/submissions/{sid}", headers=alice.auth).json()
    assert sub["private_score"] == pytest.approx(1.0) and "private" in sub["scores"]
    assert submit(client, hosted, alice, csv_text(good_scores(hosted))).status_code == 409  # closed


def test_every_accepted_format_scores_the_same(app, client, hosted):
    import json

    alice = join(client, hosted.slug, register(client, "alice"), "Team A")
    scores = good_scores(hosted, 0.3, seed=2)
    jsonl = "".join(json.dumps({"id": k, "score": v}) + "\n" for k, v in scores.items())
    rows = json.dumps([{"file": k, "probability": v} for k, v in scores.items()])
    ids = [submit(client, hosted, alice, csv_text(scores)).json()["id"],
           submit(client, hosted, alice, jsonl, "p.jsonl").json()["id"],
           submit(client, hosted, alice, rows, "p.json").json()["id"]]
    elsa = submit(client, hosted, alice, elsa_json(scores), "elsa.json")
    assert elsa.status_code == 201, elsa.text
    run_worker(app)
    got = [client.get(f"/api/submissions/{i}", headers=alice.auth).json()["scores"]["public"]["overall"] for i in ids]
    assert got[0]["auroc"] == pytest.approx(got[1]["auroc"], abs=1e-6) == pytest.approx(got[2]["auroc"], abs=1e-6)
    e = client.get(f"/api/submissions/{elsa.json()['id']}", headers=alice.auth).json()["scores"]["public"]["overall"]
    assert e["f1"] == pytest.approx(got[0]["f1"])  # ELSA hard labels = the rule applied to the same scores


def test_a_label_column_gives_the_hard_labels(app, client, hosted):
    alice = join(client, hosted.slug, register(client, "alice"), "Team A")
    scores = good_scores(hosted)
    flipped = {k: 1 - int(v >= 0.5) for k, v in scores.items()}  # ranking perfect, decisions all wrong
    sid = submit(client, hosted, alice, csv_text(scores, flipped)).json()["id"]
    run_worker(app)
    res = client.get(f"/api/submissions/{sid}", headers=alice.auth).json()["scores"]
    assert res["hard_labels"] == "submitted"
    assert res["public"]["overall"]["auroc"] == pytest.approx(1.0) and res["public"]["overall"]["accuracy"] == 0.0


def test_transformations_are_reported_apart(app, client, tmp_path):
    hosted = host_challenge(app, client, tmp_path, source="d3-test", n=4)
    alice = join(client, hosted.slug, register(client, "alice"), "Team A")
    sid = submit(client, hosted, alice, csv_text(good_scores(hosted, 0.2))).json()["id"]
    run_worker(app)
    pub = client.get(f"/api/submissions/{sid}", headers=alice.auth).json()["scores"]["public"]
    key = hosted.key
    n_with = int((key.transformed & key.public).sum())
    assert pub["transformations"]["with"]["n"] == n_with and pub["transformations"]["without"]["n"] == \
        int((~key.transformed & key.public).sum())
    assert set(pub["generators"]) == {"gen_0", "gen_1"}


def test_host_can_requeue_and_a_scored_submission_is_scored_once(app, client, hosted):
    alice = join(client, hosted.slug, register(client, "alice"), "Team A")
    sid = submit(client, hosted, alice, csv_text(good_scores(hosted))).json()["id"]
    run_worker(app)
    assert run_worker(app) == 0  # nothing left: a scored job is not taken again
    assert client.post(f"/api/submissions/{sid}/requeue", headers=alice.auth).status_code == 403
    r = client.post(f"/api/submissions/{sid}/requeue", headers=hosted.host.auth)
    assert r.status_code == 200 and r.json()["state"] == "queued"
    run_worker(app)
    with app.state.db.session() as s:
        states = s.scalars(select(SubmissionEvent.state).where(SubmissionEvent.submission_id == sid)
                           .order_by(SubmissionEvent.id)).all()
    assert states.count("scored") == 2 and states[-1] == "intervals done"  # once per (re)queueing


def test_retried_submit_with_the_same_idempotency_key_is_one_submission(app, client, hosted):
    alice = join(client, hosted.slug, register(client, "alice"), "Team A")
    text = csv_text(good_scores(hosted))
    a = client.post(
        f"/api/challenges/{hosted.slug}/phases/dev/submissions", files={"file": ("p.csv", text)},
        headers={**alice.auth, "Idempotency-Key": "retry-key-0001"})
    b = client.post(f"/api/challenges/{hosted.slug}/phases/dev/submissions", files={"file": ("p.csv", text)},
                    headers={**alice.auth, "Idempotency-Key": "retry-key-0001"})
    assert a.status_code == 201 and b.status_code == 201 and a.json()["id"] == b.json()["id"]
    mine = client.get(f"/api/challenges/{hosted.slug}/phases/dev/submissions", headers=alice.auth).json()
    assert len(mine) == 1


def test_teams_invite_codes_and_sizes(app, client, hosted):
    a = register(client, "alice")
    b = register(client, "bob")
    team = client.post(f"/api/challenges/{hosted.slug}/teams", json={"name": "Team A"}, headers=a.auth).json()
    assert client.post(f"/api/challenges/{hosted.slug}/teams", json={"name": "team a"}, headers=b.auth).status_code == 409
    assert client.post(f"/api/challenges/{hosted.slug}/teams/join", json={"invite_code": "wrong"},
                       headers=b.auth).status_code == 404
    r = client.post(f"/api/challenges/{hosted.slug}/teams/join", json={"invite_code": team["invite_code"]},
                    headers=b.auth)
    assert r.status_code == 200 and r.json()["members"] == ["alice", "bob"]
    assert client.post(f"/api/challenges/{hosted.slug}/teams", json={"name": "Other"}, headers=b.auth).status_code == 409
    sid = submit(client, hosted, a, csv_text(good_scores(hosted))).json()["id"]
    assert client.get(f"/api/submissions/{sid}", headers=b.auth).status_code == 200  # team mates see it


def test_scores_equal_deepsift_eval_scores_on_the_same_files(app, client, hosted, tmp_path, capsys):
    """One implementation: the platform's numbers are `deepsift eval scores`'s on the key and the file."""
    from deepsift.cli import main
    from deepsift.challenges.testsets import write_key_csv

    alice = join(client, hosted.slug, register(client, "alice"), "Team A")
    scores = good_scores(hosted, noise=0.35, seed=7)
    text = csv_text(scores)
    sid = submit(client, hosted, alice, text).json()["id"]
    run_worker(app)
    with app.state.db.session(write=True) as s:  # the end: everything visible
        s.execute(update(Phase).values(ends_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)))
    res = client.get(f"/api/submissions/{sid}", headers=alice.auth).json()["scores"]["all"]
    key_csv, pred_csv = tmp_path / "labels.csv", tmp_path / "preds.csv"
    write_key_csv(hosted.key, key_csv)
    pred_csv.write_text(text)
    out = tmp_path / "report"
    assert main(["eval", "scores", "--labels", str(key_csv), "--scores", str(pred_csv), "--report", str(out)]) == 0
    import json

    ev = json.loads((out / "metrics.json").read_text())["scores"]["preds"]
    for m in ("f1", "accuracy", "ap", "auroc", "tpr@1%fpr", "eer", "balanced_accuracy"):
        assert res["overall"][m] == pytest.approx(ev["all"]["metrics"][m]["value"], abs=1e-12), m
        for g in ("gen_a", "gen_b"):
            assert res["generators"][g][m] == pytest.approx(ev[g]["metrics"][m]["value"], abs=1e-12), (g, m)
    assert not np.isnan(res["overall"]["auroc"])
