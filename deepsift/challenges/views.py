"""ORM rows -> API shapes, applying who-may-see-what (shared by the JSON API and the pages)."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..server.db import utcnow
from ..server.models import User
from . import queue, scoring, service, submissions
from .leaderboard import entry_flags
from .models import COUNTED_STATES, Challenge, Phase, Submission, Team, TestSet
from .schemas import ChallengeOut, ChallengeSummary, EventOut, PhaseOut, SubmissionOut, TeamOut, TestSetOut


def host_name(session: Session, ch: Challenge) -> str:
    return session.scalar(select(User.username).where(User.id == ch.host_id)) or "?"


def phase_out(session: Session, ph: Phase, team: Team | None, now: dt.datetime | None = None) -> PhaseOut:
    ts = session.scalar(select(TestSet).where(TestSet.phase_id == ph.id))
    return PhaseOut(
        slug=ph.slug, title=ph.title, state=service.phase_state(ph, now), starts_at=ph.starts_at, ends_at=ph.ends_at,
        max_per_day=ph.max_per_day, max_total=ph.max_total, counting=ph.counting, ranking_metric=ph.ranking_metric,
        threshold=ph.threshold, bootstrap=ph.bootstrap, public_fraction=ph.public_fraction,
        submissions=[k for k, ok in (("predictions", ph.allow_predictions), ("model", ph.allow_models)) if ok],
        model_time_limit_s=ph.model_time_limit_s, model_memory_mb=ph.model_memory_mb,
        train_generators=ph.train_generators, rank_on=ph.rank_on or "all",
        n_images=ts.n_images if ts else None, image_format=ts.image_format if ts else None,
        download_bytes=ts.archive_bytes if ts else None, download_sha256=ts.archive_sha256 if ts else None,
        quota=submissions.quota(session, ph, team, now) if team is not None else None)


def team_out(session: Session, team: Team) -> TeamOut:
    from .teams import captain_name

    return TeamOut(name=team.name, members=service.member_names(session, team), invite_code=team.invite_code,
                   captain=captain_name(session, team), disqualified=team.disqualified_reason)


def challenge_out(session: Session, ch: Challenge, user: User | None) -> ChallengeOut:
    team = service.team_of(session, ch, user)
    return ChallengeOut(slug=ch.slug, title=ch.title, description=ch.description, rules=ch.rules,
                        host=host_name(session, ch), published=ch.published, max_team_size=ch.max_team_size,
                        phases=[phase_out(session, ph, team) for ph in ch.phases],
                        team=team_out(session, team) if team else None, is_host=service.is_host_of(ch, user))


def challenge_summary(session: Session, ch: Challenge) -> ChallengeSummary:
    return ChallengeSummary(slug=ch.slug, title=ch.title, host=host_name(session, ch), published=ch.published,
                            phases=[p.slug for p in ch.phases], created_at=ch.created_at)


def submission_out(session: Session, sub: Submission, user: User | None, events: bool = False,
                   now: dt.datetime | None = None) -> SubmissionOut:
    ph = sub.phase
    private = service.private_visible(ph, user, now)
    shown = (lambda v: v) if private else scoring.published  # rounded while the phase runs (labels must not leak)
    # clamped: workers on other machines stamp with their own clocks
    wait = max((sub.started_at - sub.queued_at).total_seconds(), 0.0) if sub.started_at else None
    run = max((sub.finished_at - sub.started_at).total_seconds(), 0.0) if sub.finished_at and sub.started_at else None
    return SubmissionOut(
        id=sub.id, challenge=ph.challenge.slug, phase=ph.slug, team=sub.team.name, kind=sub.kind,  # type: ignore[arg-type]
        filename=sub.filename, note=sub.note, state=sub.state, reason=sub.reason,  # type: ignore[arg-type]
        position=queue.position(session, sub), attempts=sub.attempts, created_at=sub.created_at,
        started_at=sub.started_at, finished_at=sub.finished_at, wait_seconds=wait, run_seconds=run,
        ranking_metric=ph.ranking_metric, public_score=shown(sub.public_score),
        private_score=sub.private_score if private else None,
        intervals=("done" if sub.intervals_done else "pending") if sub.state == "scored" else None,
        scores=shown(submissions.scores_for(sub, user, now)), counts_toward_quota=sub.state in COUNTED_STATES or bool(sub.charged),
        flags=entry_flags(sub, ph),
        events=[EventOut(at=e.at, state=e.state, detail=e.detail, worker=e.worker)
                for e in submissions.events(session, sub)] if events else None,
        method_name=sub.method_name or "", method_description=sub.method_description or "",
        method_url=sub.method_url or "", public=sub.public is not False, hidden=bool(sub.hidden),
        hidden_reason=sub.hidden_reason)


def testset_out(ts: TestSet) -> TestSetOut:
    return TestSetOut(n_images=ts.n_images, n_public=ts.n_public, has_images=ts.has_images,
                      image_format=ts.image_format, archive_bytes=ts.archive_bytes, archive_sha256=ts.archive_sha256,
                      key_sha256=ts.key_sha256, summary=ts.summary or {}, created_at=ts.created_at)


def now() -> dt.datetime:
    return utcnow()
