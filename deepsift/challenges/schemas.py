"""Request and response shapes of the platform's JSON API (they make up its OpenAPI schema)."""
from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, Field


class PhaseOut(BaseModel):
    slug: str
    title: str
    state: Literal["upcoming", "open", "ended"]
    starts_at: dt.datetime
    ends_at: dt.datetime
    max_per_day: int | None
    max_total: int | None
    counting: str
    ranking_metric: str
    threshold: float
    bootstrap: int
    public_fraction: float
    submissions: list[str]
    model_time_limit_s: float
    model_memory_mb: int
    train_generators: list[str] | None = Field(None, description="generators of the training data (null: no "
                                                                  "seen/unseen split)")
    rank_on: str = Field("all", description="all | seen | unseen: the images the ranking metric is computed on")
    n_images: int | None = Field(None, description="test images (None: no test set yet)")
    image_format: str | None = None
    download_bytes: int | None = None
    download_sha256: str | None = None
    quota: dict[str, int | None] | None = Field(None, description="your team's used and remaining submissions")


class ChallengeSummary(BaseModel):
    slug: str
    title: str
    host: str
    published: bool
    phases: list[str]
    created_at: dt.datetime


class TeamOut(BaseModel):
    name: str
    members: list[str]
    invite_code: str = Field(description="give it to people who should join this team")
    captain: str | None = Field(None, description="removes members and hands over the captaincy")
    disqualified: str | None = Field(None, description="the host's reason, when the team was disqualified")


class ChallengeOut(BaseModel):
    slug: str
    title: str
    description: str
    rules: str
    host: str
    published: bool
    max_team_size: int
    phases: list[PhaseOut]
    team: TeamOut | None = Field(None, description="your team in this challenge")
    is_host: bool = False


class ChallengeUpdate(BaseModel):
    title: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=50_000)
    rules: str | None = Field(None, max_length=50_000)
    published: bool | None = None
    max_team_size: int | None = Field(None, ge=1, le=1000)


class TeamCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)


class TeamJoin(BaseModel):
    invite_code: str = Field(min_length=1, max_length=100)


class EventOut(BaseModel):
    at: dt.datetime
    state: str
    detail: str | None
    worker: str | None


class SubmissionOut(BaseModel):
    id: str
    challenge: str
    phase: str
    team: str
    kind: Literal["predictions", "model"]
    filename: str
    note: str
    state: Literal["queued", "running", "scored", "failed"]
    reason: str | None = Field(None, description="why it failed")
    position: int | None = Field(None, description="place in the queue while queued (1 = next)")
    attempts: int
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    wait_seconds: float | None = Field(None, description="queued -> started")
    run_seconds: float | None = Field(None, description="started -> finished")
    ranking_metric: str
    public_score: float | None
    private_score: float | None = Field(None, description="after the phase ends (hosts: always)")
    intervals: Literal["pending", "done"] | None = None
    scores: dict[str, Any] | None = Field(None, description="metrics per part: overall, per generator, "
                                                            "with/without transformations, ROC, intervals")
    counts_toward_quota: bool
    flags: list[str] = Field(default_factory=list, description="host, baseline, late, disqualified (as on the boards)")
    events: list[EventOut] | None = None
    method_name: str = ""
    method_description: str = ""
    method_url: str = Field("", description="link to the paper or code (http/https)")
    public: bool = Field(True, description="shown on the boards (the team's counting entry is chosen among these)")
    hidden: bool = Field(False, description="hidden from every board by the host")
    hidden_reason: str | None = None


class TestSetOut(BaseModel):
    n_images: int
    n_public: int
    has_images: bool
    image_format: str
    archive_bytes: int | None
    archive_sha256: str | None
    key_sha256: str
    summary: dict[str, Any]
    created_at: dt.datetime


class LeaderboardRow(BaseModel):
    rank: int | None
    team: str
    metrics: dict[str, float | None] = Field(description="on the images the phase ranks on (rank_on)")
    split: dict[str, dict[str, float | None]] | None = Field(
        None, description="with training generators: the metrics on the seen, unseen and all images")
    ci95: list[float] | None = Field(None, description="bootstrap 95 % interval of the ranking metric (on rank_on)")
    intervals: Literal["pending", "done"]
    submitted_at: str
    submissions: int
    n_images: int | None
    method_name: str = ""
    method_description: str = ""
    method_url: str = ""
    disqualified: str | None = Field(None, description="the host's reason: shown, not ranked")
    flags: list[str] = Field(default_factory=list, description="host, baseline, late, disqualified: a row with "
                                                                "baseline or disqualified has no rank")


class BaselineMark(BaseModel):
    baseline: bool = Field(True, description="shown on the boards as a baseline (never ranked), or not")


class Leaderboard(BaseModel):
    challenge: str
    phase: str
    part: Literal["public", "private"]
    counting: str
    ranking_metric: str
    sort: str
    order: Literal["asc", "desc"]
    columns: list[str]
    rows: list[LeaderboardRow]
    phase_ends_at: str
    generated_at: str
    rank_on: str = Field("all", description="all | seen | unseen: the images ranks are computed on")
    splits: list[str] | None = Field(None, description="['seen', 'unseen', 'all'] when the phase has training "
                                                       "generators (see each row's split), else null")
    train_generators: list[str] | None = None


class QueueHealth(BaseModel):
    queued: int = Field(description="submissions waiting")
    running: int = Field(description="jobs held by a live worker")
    oldest_queued_seconds: float | None = Field(description="how long the oldest waiting one has waited")
    busy_workers: int


class SubmissionUpdate(BaseModel):
    method_name: str | None = Field(None, max_length=100)
    method_description: str | None = Field(None, max_length=1000)
    method_url: str | None = Field(None, max_length=500, description="http(s) link to the paper or code; '' for none")
    public: bool | None = Field(None, description="show it on the boards")


class HideIn(BaseModel):
    hidden: bool = True
    reason: str = Field("", max_length=500)


class DisqualifyIn(BaseModel):
    disqualified: bool = True
    reason: str = Field("", max_length=500, description="shown on the boards")


class MemberIn(BaseModel):
    username: str = Field(min_length=1, max_length=100)


class AnnouncementIn(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    body: str = Field("", max_length=20_000)


class AnnouncementOut(BaseModel):
    id: int
    title: str
    body: str
    author: str | None
    created_at: dt.datetime
