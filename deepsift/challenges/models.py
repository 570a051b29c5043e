"""The benchmark platform's tables: challenges, phases, test sets, teams, submissions and their events.

A submission row is also its scoring job: ``state`` (queued -> running -> scored | failed) plus a
lease (``lease_token``, ``lease_expires_at``) held by the worker scoring it. Every change of state
is one update of this row, in the same transaction as one :class:`SubmissionEvent` saying why.
Hidden labels never live in the database: a test set's answer key is a file in private storage.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import (JSON, BigInteger, Boolean, ColumnElement, Float, ForeignKey, Index, Integer, String, Text,
                        UniqueConstraint, false, or_, true)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..server.db import Base, UTCDateTime, new_id, utcnow

STATES = ("queued", "running", "scored", "failed")
COUNTED_STATES = ("queued", "running", "scored")
"""States that use up a team's quota; a failed submission is refunded unless ``charged`` (see :func:`counted`)."""


class Challenge(Base):
    __tablename__ = "challenge_challenges"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    rules: Mapped[str] = mapped_column(Text, default="")
    host_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    published: Mapped[bool] = mapped_column(Boolean, default=True)
    max_team_size: Mapped[int] = mapped_column(Integer, default=10)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    phases: Mapped[list["Phase"]] = relationship(back_populates="challenge", order_by="Phase.starts_at",
                                                 cascade="all, delete-orphan")


class Phase(Base):
    __tablename__ = "challenge_phases"
    __table_args__ = (UniqueConstraint("challenge_id", "slug"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    challenge_id: Mapped[int] = mapped_column(ForeignKey("challenge_challenges.id", ondelete="CASCADE"), index=True)
    slug: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(200))
    starts_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    max_per_day: Mapped[int | None] = mapped_column(Integer, default=None)
    max_total: Mapped[int | None] = mapped_column(Integer, default=None)
    counting: Mapped[str] = mapped_column(String(8), default="best")  # best | last
    ranking_metric: Mapped[str] = mapped_column(String(20), default="auroc")
    threshold: Mapped[float] = mapped_column(Float, default=0.5)
    bootstrap: Mapped[int] = mapped_column(Integer, default=1000)
    public_fraction: Mapped[float] = mapped_column(Float, default=0.5)
    allow_predictions: Mapped[bool] = mapped_column(Boolean, default=True)
    allow_models: Mapped[bool] = mapped_column(Boolean, default=True)
    model_time_limit_s: Mapped[float] = mapped_column(Float, default=600.0)
    model_memory_mb: Mapped[int] = mapped_column(Integer, default=4096)
    train_generators: Mapped[list | None] = mapped_column(JSON, default=None)  # None: no seen/unseen split
    rank_on: Mapped[str] = mapped_column(String(8), default="all", server_default="all")  # all | seen | unseen

    challenge: Mapped[Challenge] = relationship(back_populates="phases")
    testset: Mapped["TestSet | None"] = relationship(back_populates="phase", uselist=False,
                                                    cascade="all, delete-orphan")


class TestSet(Base):
    __tablename__ = "challenge_testsets"
    __test__ = False  # not a pytest test class

    id: Mapped[int] = mapped_column(primary_key=True)
    phase_id: Mapped[int] = mapped_column(ForeignKey("challenge_phases.id", ondelete="CASCADE"), unique=True)
    folder: Mapped[str] = mapped_column(String(200))  # storage-relative folder of key, images, archive
    n_images: Mapped[int] = mapped_column(Integer)
    n_public: Mapped[int] = mapped_column(Integer)
    image_format: Mapped[str] = mapped_column(String(8))  # png | jpeg | webp | as-is
    has_images: Mapped[bool] = mapped_column(Boolean, default=True)
    archive_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    archive_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    key_sha256: Mapped[str] = mapped_column(String(64))
    summary: Mapped[dict] = mapped_column(JSON, default=dict)  # counts per generator/transformation/part (hosts)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    phase: Mapped[Phase] = relationship(back_populates="testset")


class Team(Base):
    __tablename__ = "challenge_teams"
    __table_args__ = (UniqueConstraint("challenge_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    challenge_id: Mapped[int] = mapped_column(ForeignKey("challenge_challenges.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(60))
    invite_code: Mapped[str] = mapped_column(String(40), default=new_id)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    captain_id: Mapped[int | None] = mapped_column(Integer, default=None)  # users.id (its creator at first)
    disqualified_reason: Mapped[str | None] = mapped_column(String(500), default=None)  # set by the host
    disqualified_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)

    members: Mapped[list["TeamMember"]] = relationship(back_populates="team", cascade="all, delete-orphan")


class TeamMember(Base):
    __tablename__ = "challenge_team_members"
    __table_args__ = (UniqueConstraint("challenge_id", "user_id"),)  # one team per user per challenge

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("challenge_teams.id", ondelete="CASCADE"), index=True)
    challenge_id: Mapped[int] = mapped_column(ForeignKey("challenge_challenges.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    joined_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    team: Mapped[Team] = relationship(back_populates="members")


class Submission(Base):
    __tablename__ = "challenge_submissions"
    __table_args__ = (Index("ix_challenge_submissions_queue", "state", "queued_at"),
                      Index("ix_challenge_submissions_team_phase", "team_id", "phase_id"),
                      UniqueConstraint("team_id", "client_key", name="uq_challenge_submissions_client_key"))

    id: Mapped[str] = mapped_column(String(24), primary_key=True, default=new_id)
    phase_id: Mapped[int] = mapped_column(ForeignKey("challenge_phases.id", ondelete="CASCADE"), index=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("challenge_teams.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    kind: Mapped[str] = mapped_column(String(12))  # predictions | model
    note: Mapped[str] = mapped_column(String(200), default="")
    client_key: Mapped[str | None] = mapped_column(String(64), default=None)  # Idempotency-Key: a retry is no duplicate
    filename: Mapped[str] = mapped_column(String(200))  # as uploaded (display only)
    file_path: Mapped[str] = mapped_column(String(300))  # storage-relative
    file_sha256: Mapped[str] = mapped_column(String(64))
    file_bytes: Mapped[int] = mapped_column(BigInteger)
    spec: Mapped[dict | None] = mapped_column(JSON, default=None)  # model preprocessing spec
    state: Mapped[str] = mapped_column(String(10), default="queued")
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    queued_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(120), default=None)
    lease_token: Mapped[str | None] = mapped_column(String(40), default=None)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    public_score: Mapped[float | None] = mapped_column(Float, default=None)  # ranking metric, public part
    private_score: Mapped[float | None] = mapped_column(Float, default=None)
    scores: Mapped[dict | None] = mapped_column(JSON, default=None)  # see deepsift.challenges.scoring
    intervals_done: Mapped[bool] = mapped_column(Boolean, default=False)
    charged: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())  # failed, yet counted
    baseline: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())  # host-marked: shown, unranked
    late: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())  # accepted after the phase ended
    hidden: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())  # by the host: off every board
    hidden_reason: Mapped[str | None] = mapped_column(String(500), default=None)
    public: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())  # the team's choice: on the boards
    method_name: Mapped[str] = mapped_column(String(100), default="", server_default="")
    method_description: Mapped[str] = mapped_column(String(1000), default="", server_default="")
    method_url: Mapped[str] = mapped_column(String(500), default="", server_default="")  # http(s) only

    phase: Mapped[Phase] = relationship()
    team: Mapped[Team] = relationship()


class SubmissionEvent(Base):
    __tablename__ = "challenge_submission_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    submission_id: Mapped[str] = mapped_column(ForeignKey("challenge_submissions.id", ondelete="CASCADE"), index=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    state: Mapped[str] = mapped_column(String(16))  # queued | running | scored | intervals | failed | requeued
    detail: Mapped[str | None] = mapped_column(Text, default=None)
    worker: Mapped[str | None] = mapped_column(String(120), default=None)


def counted() -> ColumnElement[bool]:
    """The quota rule as SQL: queued, running and scored submissions count, and failed ones marked ``charged``
    (the run used its whole time or memory limit: see :func:`deepsift.challenges.queue.charged_failure`)."""
    return or_(Submission.state.in_(COUNTED_STATES), Submission.charged.is_(True))


class Announcement(Base):
    __tablename__ = "challenge_announcements"

    id: Mapped[int] = mapped_column(primary_key=True)
    challenge_id: Mapped[int] = mapped_column(ForeignKey("challenge_challenges.id", ondelete="CASCADE"), index=True)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
