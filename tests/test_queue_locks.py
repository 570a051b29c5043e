"""The claim's row locks on PostgreSQL, with the interleavings made deterministic (no sleeps, no threads).

``SKIP LOCKED``: a row held by another open transaction is passed over at once; the claiming session has a
short ``lock_timeout``, so a claim that waited on the row instead fails the test. The team re-read: a second
claim that read the fair pick before a first claim of the same team committed, and locks the team after it,
must not start a second job of that team (the claim is interleaved at a fixed statement by a cursor hook)."""
from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, func, select, update

from deepsift.challenges import queue
from deepsift.challenges.models import Submission, Team
from deepsift.server.db import Database, utcnow
from platformkit import csv_text, good_scores, host_challenge, join, register, submit


@pytest.fixture
def database_url(pg_server) -> str:
    """PostgreSQL only: the locks under test are PostgreSQL's (SQLite serialises claims with BEGIN IMMEDIATE)."""
    pg_server.reset_database()
    return pg_server.url


@pytest.fixture
def hosted(app, client, tmp_path):
    return host_challenge(app, client, tmp_path, bootstrap=0)


@pytest.fixture
def impatient(database_url):
    """A worker's database whose sessions give up waiting for a row lock after 2 s (instead of forever)."""
    db = Database(database_url)

    @event.listens_for(db.engine, "connect")
    def _lock_timeout(dbapi_conn: Any, _record: Any) -> None:
        autocommit = dbapi_conn.autocommit
        dbapi_conn.autocommit = True  # a plain SET would be undone by the pool's rollback
        dbapi_conn.execute("SET lock_timeout = '2s'")
        dbapi_conn.autocommit = autocommit

    yield db
    db.dispose()


def _teams(client, hosted, sizes: dict[str, int]) -> dict[str, list[str]]:
    """Queue ``sizes[team]`` jobs per team, team by team; their submission ids."""
    text = csv_text(good_scores(hosted))
    ids = {}
    for team, n in sizes.items():
        p = join(client, hosted.slug, register(client, f"user-{team.lower()}"), f"Team {team}")
        ids[team] = [submit(client, hosted, p, text).json()["id"] for _ in range(n)]
    return ids


def _in_hand(db: Database, sid: str) -> int:
    """How many jobs of ``sid``'s team hold a lease."""
    with db.session() as s:
        team = s.get(Submission, sid).team_id
        return s.scalar(select(func.count()).select_from(Submission).where(
            Submission.team_id == team, Submission.lease_token.is_not(None)))


def test_a_queued_job_locked_by_another_transaction_is_skipped_not_waited_for(app, client, hosted, impatient):
    """Team A's head job is row-locked elsewhere (an open transaction): the claim takes A's next job at once."""
    ids = _teams(client, hosted, {"A": 2, "B": 1})
    holder = app.state.db.new_session(write=True)
    try:
        holder.execute(select(Submission.id).where(Submission.id == ids["A"][0]).with_for_update())
        job = queue.claim(impatient, "w", lease_s=60)  # waiting on the lock would end in a lock timeout
        assert job is not None and job.submission_id == ids["A"][1]
    finally:
        holder.rollback()
        holder.close()
    assert _in_hand(app.state.db, ids["A"][0]) == 1


def test_a_team_locked_by_another_transaction_is_skipped_not_waited_for(app, client, hosted, impatient):
    """Team A's row is locked (a submit of A in progress locks it): the claim takes team B's job at once."""
    ids = _teams(client, hosted, {"A": 1, "B": 1})
    holder = app.state.db.new_session(write=True)
    try:
        team_a = holder.scalar(select(Submission.team_id).where(Submission.id == ids["A"][0]))
        holder.execute(select(Team.id).where(Team.id == team_a).with_for_update())
        job = queue.claim(impatient, "w", lease_s=60)
        assert job is not None and job.submission_id == ids["B"][0]
    finally:
        holder.rollback()
        holder.close()


def test_an_expired_job_locked_by_another_transaction_is_skipped_not_waited_for(app, client, hosted, impatient):
    """Two jobs whose workers died: while the first's row is locked elsewhere, the claim takes over the second."""
    ids = _teams(client, hosted, {"A": 1, "B": 1})
    db = app.state.db
    dead = [queue.claim(db, f"dead{i}", lease_s=60) for i in range(2)]
    assert [j.submission_id for j in dead] == [ids["A"][0], ids["B"][0]]
    with db.session(write=True) as s:  # both leases run out
        s.execute(update(Submission).values(lease_expires_at=utcnow()))
    holder = db.new_session(write=True)
    try:
        holder.execute(select(Submission.id).where(Submission.id == ids["A"][0]).with_for_update())
        job = queue.claim(impatient, "w", lease_s=60)
        assert job is not None and job.submission_id == ids["B"][0] and job.attempts == 2
    finally:
        holder.rollback()
        holder.close()


def test_a_claim_that_locks_a_team_after_another_claim_took_its_job_passes_the_team_over(app, client, hosted,
                                                                                         impatient):
    """Worker 2 reads the fair pick (team A's head job), then worker 1 claims that job and commits, then worker 2
    locks team A: the lock is free now, but A has a job in hand, so worker 2 takes team B's job, not A's next."""
    ids = _teams(client, hosted, {"A": 2, "B": 1})
    first: list[queue.Job | None] = []

    def interleave(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not first and "FOR UPDATE" in statement and "challenge_teams" in statement:  # worker 2 locks the team
            first.append(queue.claim(app.state.db, "w1", lease_s=60))  # worker 1's whole claim, committed

    event.listen(impatient.engine, "before_cursor_execute", interleave)
    second = queue.claim(impatient, "w2", lease_s=60)
    assert first and first[0] is not None and first[0].submission_id == ids["A"][0]
    assert second is not None and second.submission_id == ids["B"][0]
    assert _in_hand(app.state.db, ids["A"][0]) == 1  # never two jobs of one team at once
