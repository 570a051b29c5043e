"""The scoring queue under concurrency and faults: leases, takeovers, killed workers, a restarted PostgreSQL."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, update

from deepsift.challenges import queue
from deepsift.challenges.models import Submission, SubmissionEvent
from deepsift.server.db import Database, utcnow
from platformkit import csv_text, good_scores, host_challenge, join, register, submit
from serverkit import LineWaiter, LiveServer, start_worker


@pytest.fixture
def hosted(app, client, tmp_path):
    return host_challenge(app, client, tmp_path, bootstrap=0)


def _events(db: Database, sid: str) -> list[tuple[str, str | None]]:
    with db.session() as s:
        return [(e.state, e.worker) for e in s.scalars(select(SubmissionEvent).where(
            SubmissionEvent.submission_id == sid).order_by(SubmissionEvent.id))]


def test_concurrent_workers_never_claim_one_job_twice(app, client, hosted, database_url):
    """Four workers, each with its own engine, on 4 teams x 3 jobs: every job claimed exactly once, and a
    team never has two jobs in hand at once (the fair queue's rule holds under concurrency)."""
    text = csv_text(good_scores(hosted))
    ids = set()
    for i in range(4):
        p = join(client, hosted.slug, register(client, f"user{i}"), f"Team {i}")
        ids |= {submit(client, hosted, p, text).json()["id"] for _ in range(3)}
    claimed: list[tuple[str, str]] = []
    in_hand: list[int] = []
    lock = threading.Lock()

    def claimer(name: str) -> None:
        db = Database(database_url)  # its own engine and pool, like another machine
        try:
            while (job := queue.claim(db, name, lease_s=60)) is not None:
                with db.session() as s:
                    team = s.get(Submission, job.submission_id).team_id
                    held = s.scalar(select(func.count()).select_from(Submission).where(
                        Submission.team_id == team, Submission.lease_token.is_not(None)))
                with lock:
                    claimed.append((job.submission_id, name))
                    in_hand.append(held)
                assert queue.finish(db, job, {"x": 1}, 0.5, 0.5, keep_lease=False)
        finally:
            db.dispose()

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(sid for sid, _ in claimed) == sorted(ids)  # each exactly once
    assert set(in_hand) == {1}  # while a worker held a team's job, no other job of that team was in hand


def test_a_worker_that_lost_its_lease_cannot_write(app, client, hosted):
    alice = join(client, hosted.slug, register(client, "alice"), "Team A")
    sid = submit(client, hosted, alice, csv_text(good_scores(hosted))).json()["id"]
    db = app.state.db
    first = queue.claim(db, "slow", lease_s=60)
    assert first is not None and first.submission_id == sid
    assert queue.claim(db, "other", lease_s=60) is None  # leased: nobody else takes it
    with db.session(write=True) as s:  # the lease runs out (the worker hung)
        s.execute(update(Submission).values(lease_expires_at=utcnow()))
    second = queue.claim(db, "fast", lease_s=60)
    assert second is not None and second.submission_id == sid and second.attempts == 2
    assert not queue.heartbeat(db, first, 60)
    assert not queue.finish(db, first, {"x": 1}, 0.1, 0.1, keep_lease=False)
    assert not queue.fail(db, first, "late")
    assert queue.finish(db, second, {"x": 2}, 0.9, 0.8, keep_lease=False)
    with db.session() as s:
        sub = s.get(Submission, sid)
        assert (sub.state, sub.scores, sub.public_score, sub.lease_token) == ("scored", {"x": 2}, 0.9, None)
    assert [st for st, _ in _events(db, sid)].count("scored") == 1


def test_a_job_that_keeps_killing_its_workers_fails_refunded(app, client, hosted):
    alice = join(client, hosted.slug, register(client, "alice"), "Team A")
    sid = submit(client, hosted, alice, csv_text(good_scores(hosted))).json()["id"]
    db = app.state.db
    for _ in range(3):
        assert queue.claim(db, "w", lease_s=60, max_attempts=3) is not None
        with db.session(write=True) as s:
            s.execute(update(Submission).values(lease_expires_at=utcnow()))
    assert queue.claim(db, "w", lease_s=60, max_attempts=3) is None
    sub = client.get(f"/api/submissions/{sid}", headers=alice.auth).json()
    assert sub["state"] == "failed" and "3 times" in sub["reason"] and not sub["counts_toward_quota"]


def test_a_worker_killed_mid_job_is_finished_by_another_scored_once(app, client, hosted, server_settings, tmp_path):
    """Worker 1 takes the job and is stuck inside it (its input is a FIFO nobody writes yet); SIGKILL;
    worker 2 takes the job over when the lease runs out and scores it; one score, two attempts."""
    alice = join(client, hosted.slug, register(client, "alice"), "Team A")
    sid = submit(client, hosted, alice, csv_text(good_scores(hosted))).json()["id"]
    db = app.state.db
    with db.session() as s:
        aligned = app.state.storage.root / Path(s.get(Submission, sid).file_path).parent / "aligned.npz"
    real = aligned.with_name("real.npz")
    aligned.rename(real)
    os.mkfifo(aligned)  # reading it blocks: worker 1 is mid-job for as long as we like
    url, data, lease = server_settings.db_url, server_settings.data_dir, {"DEEPSIFT_CHALLENGES_LEASE_SECONDS": "2"}
    out = LineWaiter()
    w1 = start_worker(url, data, "w1", out, lease)
    w2 = None
    try:
        out.wait_line(rf"^\[w1\] deepsift: job {sid} taken by w1 \(score, attempt 1\)", 180, "worker 1 to take the job")
        with db.session() as s:
            assert s.get(Submission, sid).state == "running"
        w2 = start_worker(url, data, "w2", out, lease)  # starts meanwhile; the job is leased to w1
        out.wait_line(rf"^\[w1\] deepsift: job {sid}: heartbeat by w1", 60, "worker 1 to heartbeat inside the job")
        with db.session() as s:
            sub = s.get(Submission, sid)
            assert sub.state == "running" and sub.worker == "w1" and sub.heartbeat_at > sub.started_at
        w1.send_signal(signal.SIGKILL)
        w1.wait(10)
        os.replace(real, aligned)  # the input is fine again; only the worker died
        out.wait_line(rf"^\[w2\] deepsift: job {sid} scored by w2", 180, "worker 2 to score the job")
    finally:
        for p in (w1, w2):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:  # a failed test: worker 1 may still be stuck in the FIFO
                    p.kill()
                    p.wait(10)
    assert out.wait_ended(30), "a worker's output stayed open"
    assert f"[w2] deepsift: job {sid} taken by w2 (score, attempt 2)" in out.lines, out.tail()
    with db.session() as s:
        sub = s.get(Submission, sid)
        assert (sub.state, sub.attempts, sub.worker) == ("scored", 2, "w2")
        assert sub.public_score == pytest.approx(1.0)
    ev = _events(db, sid)
    assert [st for st, _ in ev].count("scored") == 1
    assert [w for st, w in ev if st == "running"] == ["w1", "w2"]


SCORED = re.compile(r"deepsift: job (\S+) (?:scored by|taken by \S+ \(intervals)")
"""A worker's line saying that a job is scored: it scored it, or it took it over for the intervals."""


def test_postgresql_restarted_under_load_server_and_workers_recover(pg_server, tmp_path):
    """Clients keep submitting and polling through the server (uvicorn) while PostgreSQL is down for a while,
    then back; two `deepsift challenges worker` processes keep scoring. Worker "held" is inside a model job
    through the whole downtime (the model file is a FIFO that is written only while PostgreSQL is down), so
    its final write meets the downtime; worker "poll" looks for jobs through it, long enough that the
    database's own retries run out. Nobody restarts anything else: no worker exits, the held job is saved by
    its worker at its first attempt, and every accepted submission is scored once."""
    from deepsift.challenges.client import Client
    from deepsift.server import create_app
    from serverkit import make_settings
    from test_challenges_models import SPEC, detector_model

    pg_server.reset_database()
    data = tmp_path / "data"
    app = create_app(make_settings(pg_server.url, data))
    from fastapi.testclient import TestClient

    c = TestClient(app)  # set-up through the API, before the server starts
    hosted = host_challenge(app, c, tmp_path, bootstrap=20)
    users = [join(c, hosted.slug, register(c, f"user{i}"), f"Team {i}") for i in range(3)]
    holder = join(c, hosted.slug, register(c, "holder"), "Team H")
    model = detector_model(tmp_path / "m.onnx").read_bytes()
    r = c.post(f"/api/challenges/{hosted.slug}/phases/dev/submissions", files={"file": ("m.onnx", model)},
               data={"kind": "model", "preprocessing": SPEC}, headers=holder.auth)
    assert r.status_code == 201, r.text
    held = r.json()["id"]
    with app.state.db.session() as s:
        fifo = app.state.storage.root / s.get(Submission, held).file_path
    fifo.unlink()
    os.mkfifo(fifo)  # reading the model blocks: the worker is inside the job until the test writes it
    preds = tmp_path / "p.csv"
    preds.write_text(csv_text(good_scores(hosted, 0.2)))
    out = LineWaiter()
    # a lease longer than the downtime: the held job stays its worker's; a short one for the other's takeovers
    held_env = {"DEEPSIFT_CHALLENGES_LEASE_SECONDS": "60", "DEEPSIFT_CHALLENGES_ALLOW_UNCONFINED_MODELS": "true"}
    workers = {"held": start_worker(pg_server.url, data, "held", out, held_env)}
    accepted: list[str] = []
    more = threading.Condition()  # notified at each accepted submission
    errors: list[str] = []
    stop = threading.Event()
    with LiveServer(app) as srv:
        def client_loop(p) -> None:  # type: ignore[no-untyped-def]
            with Client(srv.url, p.token, retries=12) as cl:
                while not stop.is_set():
                    try:
                        sid = cl.submit(hosted.slug, "dev", preds)["id"]
                        with more:
                            accepted.append(sid)
                            more.notify_all()
                        cl.leaderboard(hosted.slug, "dev")
                    except Exception as exc:  # noqa: BLE001 - recorded, asserted below
                        errors.append(repr(exc))
                    stop.wait(0.2)  # pace the load; ends at once when stopped

        threads = [threading.Thread(target=client_loop, args=(u,)) for u in users]
        db = Database(pg_server.url)
        down = False
        try:
            out.wait_line(rf"^\[held\] deepsift: job {held} taken by held \(score, attempt 1\)", 120,
                          "worker held to take the model job")
            workers["poll"] = start_worker(pg_server.url, data, "poll", out, {"DEEPSIFT_CHALLENGES_LEASE_SECONDS": "3"})
            out.wait_line(r"^\[poll\] worker poll: ready", 120, "worker poll to start")
            for t in threads:
                t.start()
            with more:
                assert more.wait_for(lambda: len(accepted) >= 6, 180), "no 6 submissions before the restart"
            pg_server.stop("immediate")  # like a crash
            down = True
            n_down = len(out.lines)

            def poll_waited(lines: list[str]) -> bool:  # a claim used up db.run's retries: the worker says it waits
                return workers["poll"].poll() is not None or any(  # (or it exited: asserted just below)
                    ln.startswith("[poll] deepsift: database unavailable (") for ln in lines[n_down:])

            out.wait(poll_waited, 60, "worker poll to wait for the database")
            assert workers["poll"].poll() is None, f"worker poll exited while the database was down:\n{out.tail()}"
            w = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO if worker held were not reading it
            try:
                assert os.write(w, model) == len(model)  # the model is smaller than a pipe's buffer
            finally:
                os.close(w)
            saving = out.wait_line(rf"^\[held\] deepsift: job {held}: scores computed by held, saving them", 120,
                                   "worker held to run the model and save its scores")
            n_saving = out.lines.index(saving.string)
            pg_server.start()  # the saving meets the downtime; its retries outlast it
            down = False
            end = out.wait_line(rf"^\[held\] deepsift: job {held} (scored by held|interrupted by the database)", 60,
                                "worker held to save the model's scores or give up")
            assert "scored by held" in end[0], f"the held job's scores were lost to the downtime:\n{out.tail()}"
            retried = out.lines[n_saving:out.lines.index(end.string)]
            assert any(ln.startswith("[held] deepsift: database unavailable or busy (") for ln in retried), retried
            with more:
                n_before = len(accepted)
                assert more.wait_for(lambda: len(accepted) >= n_before + 6, 180), "no 6 submissions after the restart"
            stop.set()
            for t in threads:
                t.join(60)
            assert httpx.get(srv.url + "/healthz").status_code == 200

            def all_scored(lines: list[str]) -> bool:  # a job taken for its intervals was scored (its scoring
                done = {m[1] for m in map(SCORED.search, lines) if m}  # worker may have lost its answer to the restart)
                return done >= {*accepted, held}

            out.wait(all_scored, 240, "every accepted submission to be scored")
            with db.session() as s:
                states = dict(s.execute(select(Submission.id, Submission.state)).all())
                assert s.get(Submission, held).attempts == 1
            assert set(states) == {*accepted, held} and set(states.values()) == {"scored"}, states
            with db.session() as s:
                scored_events = s.scalars(select(SubmissionEvent.submission_id).where(
                    SubmissionEvent.state == "scored")).all()
            assert sorted(scored_events) == sorted([*accepted, held])  # each once
            assert len(set(accepted)) == len(accepted)  # no duplicate from a retried submit
            assert [n for n, w in workers.items() if w.poll() is not None] == []  # no worker exited
        finally:
            stop.set()
            if down:
                pg_server.start()
            db.dispose()
            for t in threads:
                if t.is_alive():
                    t.join(60)
            for w in workers.values():
                if w.poll() is None:
                    w.send_signal(signal.SIGTERM)
                try:
                    w.wait(30)
                except subprocess.TimeoutExpired:  # a failed test: worker held may still be stuck in the FIFO
                    w.kill()
                    w.wait(10)
    app.state.db.dispose()
    assert not errors, errors[:3]
    assert all(w.returncode == 0 for w in workers.values())
