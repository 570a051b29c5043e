"""The scoring queue: submission rows claimed with a lease, kept alive by heartbeats, finished once.

* ``claim``: a running/scored job with unfinished work whose lease ran out (its worker died) is
  taken over first; otherwise a queued job, picked fairly: at most one job in hand per team, and
  round-robin between teams (the team served longest ago goes first, with its oldest job), so one
  team's many or slow jobs never make another team wait behind all of them. The job becomes this
  worker's: a new random ``lease_token`` and an expiry. On PostgreSQL rows are picked with ``FOR
  UPDATE SKIP LOCKED`` (the team row too), so any number of workers on any number of machines claim
  different jobs without waiting on each other; on SQLite the claim runs in a ``BEGIN IMMEDIATE``
  transaction (one writer at a time), which is just as safe.
* ``check_backlog``: a team has at most N jobs waiting (a setting), refused at submit time.
* ``heartbeat``: pushes the expiry out; it returns False once the lease is lost.
* ``finish`` / ``fail`` / ``set_intervals``: one conditional update ``WHERE id = ? AND
  lease_token = ?`` plus one event row, in one transaction: a worker that lost its lease (it was
  presumed dead and the job went to another) cannot write anything, so a job is scored once.
* A job claimed ``max_attempts`` times without finishing fails (refunded), so one poisonous
  submission cannot stall the queue forever. A run stopped at its time or memory limit fails
  *charged* (it counts against the quota: :func:`charged_failure`), so looping models are not free.
"""
from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select, update

from ..exceptions import ConflictError
from ..server.db import Database, utcnow
from .models import Submission, SubmissionEvent, Team


@dataclass(frozen=True)
class Job:
    """A claimed job: which submission, the lease that proves ownership, and what is left to do."""

    submission_id: str
    lease_token: str
    stage: str  # "score" (queued/running) or "intervals" (scored, intervals missing)
    attempts: int


def _expired(now: dt.datetime) -> Any:
    """Started jobs whose worker stopped renewing the lease (it died): taken over first."""
    return and_(Submission.state.in_(("running", "scored")), Submission.lease_token.is_not(None),
                Submission.lease_expires_at < now)


def claim(db: Database, worker: str, lease_s: float, max_attempts: int = 3) -> Job | None:
    """Take a job (see the module docstring): a takeover first, else the fair pick of :func:`_next_queued`."""

    def tx(s: Any) -> Job | None:
        now = utcnow()
        while True:
            row = s.execute(select(Submission.id, Submission.state, Submission.attempts)
                            .where(_expired(now)).order_by(Submission.queued_at, Submission.id).limit(1)
                            .with_for_update(skip_locked=True)).first()
            if row is None:
                sid = _next_queued(s)
                if sid is None:
                    return None
                row = (sid, "queued", s.scalar(select(Submission.attempts).where(Submission.id == sid)))
            sid, state, attempts = row
            if state == "running" and attempts >= max_attempts:  # died mid-job too often: give up, refund
                s.execute(update(Submission).where(Submission.id == sid).values(
                    state="failed", finished_at=now, lease_token=None, lease_expires_at=None,
                    reason=f"scoring stopped {attempts} times without finishing (the worker died or was cut off)"))
                s.add(SubmissionEvent(submission_id=sid, at=now, state="failed", worker=worker,
                                      detail="too many attempts"))
                continue
            token = secrets.token_hex(16)
            stage = "intervals" if state == "scored" else "score"
            values: dict[str, Any] = dict(lease_token=token, lease_expires_at=now + dt.timedelta(seconds=lease_s),
                                          heartbeat_at=now, worker=worker)
            if stage == "score":
                values.update(state="running", attempts=Submission.attempts + 1,
                              started_at=func.coalesce(Submission.started_at, now))
            s.execute(update(Submission).where(Submission.id == sid).values(**values))
            s.add(SubmissionEvent(submission_id=sid, at=now, state="running" if stage == "score" else "intervals",
                                  worker=worker, detail=None if state == "queued" else f"taken over ({state}, lease expired)"))
            return Job(sid, token, stage, attempts + (stage == "score"))

    return db.run(tx, write=True)


def _busy_teams() -> Any:
    """Teams with a job in hand (a live or expired lease): they get no second one until it ends."""
    return select(Submission.team_id).where(Submission.lease_token.is_not(None))


def _next_queued(s: Any) -> str | None:
    """The fair pick among queued jobs, locked for this claim: round-robin between teams.

    A team with a job in hand waits; among the others, the team served longest ago (or never) goes
    first, with its oldest job; ties by the age of that job. The team row is locked (``FOR UPDATE
    SKIP LOCKED``, as ``submit`` locks it) and the team re-checked, so two workers on PostgreSQL never
    start two jobs of one team; on SQLite the claim's ``BEGIN IMMEDIATE`` already serialises claims.
    """
    served = (select(Submission.team_id, func.max(Submission.started_at).label("last"))
              .group_by(Submission.team_id).subquery())
    skipped: set[int] = set()
    while True:
        q = (select(Submission.id, Submission.team_id).outerjoin(served, served.c.team_id == Submission.team_id)
             .where(Submission.state == "queued", Submission.team_id.not_in(_busy_teams()))
             .order_by(served.c.last.is_not(None), served.c.last, Submission.queued_at, Submission.id).limit(1))
        if skipped:
            q = q.where(Submission.team_id.not_in(skipped))
        row = s.execute(q).first()
        if row is None:
            return None
        sid, team_id = row
        if s.get_bind().dialect.name == "postgresql":
            locked = s.scalar(select(Team.id).where(Team.id == team_id).with_for_update(skip_locked=True))
            busy = s.scalar(select(func.count()).select_from(_busy_teams().where(
                Submission.team_id == team_id).subquery()))  # re-read after the lock: another claim may have committed
            if locked is None or busy:
                skipped.add(team_id)
                continue
            sid = s.scalar(select(Submission.id).where(Submission.team_id == team_id, Submission.state == "queued")
                           .order_by(Submission.queued_at, Submission.id).limit(1).with_for_update(skip_locked=True))
            if sid is None:
                skipped.add(team_id)
                continue
        return sid


def heartbeat(db: Database, job: Job, lease_s: float) -> bool:
    """Extend the lease; False when it was lost (the job is someone else's now)."""

    def tx(s: Any) -> bool:
        now = utcnow()
        res = s.execute(update(Submission).where(Submission.id == job.submission_id,
                                                 Submission.lease_token == job.lease_token)
                        .values(lease_expires_at=now + dt.timedelta(seconds=lease_s), heartbeat_at=now))
        return res.rowcount == 1

    return db.run(tx, write=True)


def finish(db: Database, job: Job, scores: dict, public_score: float | None, private_score: float | None,
           keep_lease: bool) -> bool:
    """Record the score (state ``scored``) if this worker still holds the lease; True when written.

    ``keep_lease``: the intervals are still to compute, so the lease stays with this worker.
    """
    values: dict[str, Any] = dict(state="scored", scores=scores, public_score=public_score,
                                  private_score=private_score, finished_at=utcnow(), reason=None)
    if not keep_lease:
        values.update(lease_token=None, lease_expires_at=None, intervals_done=True)
    return _transition(db, job, "running", values, "scored")


def set_intervals(db: Database, job: Job, scores: dict) -> bool:
    """Store the scores with their intervals and release the lease (if still held)."""
    values = dict(scores=scores, intervals_done=True, lease_token=None, lease_expires_at=None)
    return _transition(db, job, "scored", values, "intervals done")


def fail(db: Database, job: Job, reason: str) -> bool:
    """Mark the job failed with ``reason``, if still ours: refunded unless :func:`charged_failure` says otherwise."""
    values = dict(state="failed", reason=reason[:4000], finished_at=utcnow(), lease_token=None,
                  lease_expires_at=None, charged=charged_failure(reason))
    return _transition(db, job, "running", values, "failed", detail=reason[:4000])


LIMIT_WORDS = ("time limit", "out of memory", "memory limit")
"""Words of the sandbox's failure reasons (:mod:`deepsift.challenges.sandbox`) for a run stopped at a limit."""


def charged_failure(reason: str) -> bool:
    """The quota rule for a failed run, in one place: charged when it was stopped at its time or memory limit
    (it held a worker for the whole allowance), refunded otherwise (a crash, a bad output, a dead worker)."""
    text = (reason or "").lower().lstrip()
    return text.startswith(("time", "memory")) or any(w in text for w in LIMIT_WORDS)  # "time: ...", "memory: ..."


def check_backlog(s: Any, team_id: int, limit: int | None) -> None:
    """Refuse a new submission (ConflictError) while the team already has ``limit`` jobs waiting or running."""
    if not limit:
        return
    waiting = s.scalar(select(func.count()).select_from(Submission).where(
        Submission.team_id == team_id, Submission.state.in_(("queued", "running")))) or 0
    if waiting >= limit:
        raise ConflictError(f"your team has {waiting} submissions waiting to be scored (at most {limit} at a time, "
                            "so every team gets its turn); submit again when one is done")


def _transition(db: Database, job: Job, from_state: str, values: dict[str, Any], event: str,
                detail: str | None = None) -> bool:
    """Apply ``values`` if the job is in ``from_state`` and this worker still holds its lease; log ``event``."""

    def tx(s: Any) -> bool:
        res = s.execute(update(Submission).where(Submission.id == job.submission_id,
                                                 Submission.lease_token == job.lease_token,
                                                 Submission.state == from_state).values(**values))
        if res.rowcount != 1:
            return False
        s.add(SubmissionEvent(submission_id=job.submission_id, at=values.get("finished_at", utcnow()),
                              state=event, detail=detail, worker=_worker(s, job)))
        return True

    return db.run(tx, write=True)


def _worker(s: Any, job: Job) -> str | None:
    return s.scalar(select(Submission.worker).where(Submission.id == job.submission_id))


def position(s: Any, sub: Submission) -> int | None:
    """Where ``sub`` stands in the fair order (1 = next; None unless queued): the queued jobs dealt out
    round-robin, each round one job per team, the team served longest ago first (as :func:`claim` takes them)."""
    if sub.state != "queued":
        return None
    served = dict(s.execute(select(Submission.team_id, func.max(Submission.started_at))
                            .group_by(Submission.team_id)).all())
    waiting: dict[int, list[tuple[Any, str]]] = {}
    for sid, team, at in s.execute(select(Submission.id, Submission.team_id, Submission.queued_at)
                                   .where(Submission.state == "queued")):
        waiting.setdefault(team, []).append((at, sid))
    for jobs in waiting.values():
        jobs.sort()
    teams = sorted(waiting, key=lambda t: (served.get(t) is not None, served.get(t) or waiting[t][0][0],
                                           waiting[t][0]))
    mine = next((k for k, (_, sid) in enumerate(waiting.get(sub.team_id, [])) if sid == sub.id), None)  # its round
    if mine is None:  # taken by a worker since ``sub`` was read
        return None
    before = teams[:teams.index(sub.team_id)]
    ahead = sum(min(len(waiting[t]), mine) for t in teams) + sum(len(waiting[t]) > mine for t in before)
    return ahead + 1


def requeue(s: Any, sub: Submission, by: str) -> None:
    """Put a submission back in the queue (a host's rescore), clearing its result."""
    now = utcnow()
    sub.state, sub.reason, sub.queued_at = "queued", None, now
    sub.lease_token = sub.lease_expires_at = None
    sub.scores = sub.public_score = sub.private_score = None
    sub.intervals_done, sub.attempts, sub.started_at, sub.finished_at = False, 0, None, None
    s.add(SubmissionEvent(submission_id=sub.id, at=now, state="queued", detail=f"requeued by {by}"))


def health(s: Any) -> dict[str, Any]:
    """What the queue looks like now: waiting and running jobs, the oldest wait, busy workers."""
    now = utcnow()
    queued = s.scalar(select(func.count()).select_from(Submission).where(Submission.state == "queued")) or 0
    oldest = s.scalar(select(func.min(Submission.queued_at)).where(Submission.state == "queued"))
    running = s.execute(select(Submission.worker).where(Submission.lease_token.is_not(None),
                                                        Submission.lease_expires_at >= now)).scalars().all()
    return {"queued": int(queued), "running": len(running),
            "oldest_queued_seconds": max((now - oldest).total_seconds(), 0.0) if oldest else None,
            "busy_workers": len(set(running))}
