"""A challenge, as a host writes it: YAML (``deepsift challenges create spec.yaml``) or JSON (admin API).

    slug: d3-detect
    title: Detect D3 fakes
    description: ...            # plain text, paragraphs separated by blank lines
    rules: ...
    image_format: png           # png | jpeg | webp: every test image re-encoded to this one format
    jpeg_quality: 95
    resize: null                # or a side in px: shorter side resized, centre-cropped square (hides sizes)
    max_team_size: 5
    phases:
      - slug: dev
        title: Development
        starts: 2025-01-01T00:00:00Z
        ends: 2025-03-01T00:00:00Z
        max_per_day: 5          # per team, UTC day; null: no limit
        max_total: 100
        counting: best          # best | last: which scored submission of a team is ranked
        ranking_metric: auroc   # f1 | accuracy | balanced_accuracy | ap | auroc | tpr@1%fpr | tpr@5%fpr | eer
        threshold: 0.5          # hard labels from scores: deepsift.decision (fake iff score >= threshold)
        bootstrap: 1000         # resamples for the 95 % interval beside the ranking metric
        public_fraction: 0.5    # share of the test set on the live (public) leaderboard
        train_generators: [sd14]  # generators of the training data: the test set's others are unseen
        rank_on: unseen         # all | seen | unseen: the images the ranking metric is computed on
        submissions: [predictions, model]
        model_time_limit_s: 600
        model_memory_mb: 4096
        testset:
          source: d3-test       # d3-test | folders | classes | d3-shards | labels
          path: /data/d3-test   # relative paths are relative to the spec file
          real: /data/real      # d3-shards: a fetch-real folder (or any folder of real images)
          transform: [jpeg, blur]   # d3-shards/folders: add one transformed copy of each image
          labels: key.csv       # labels: id,label[,generator][,transformed] (an answer key, no images)
          seed: 0
"""
from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..exceptions import InvalidInputError

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


def _check_slug(v: str) -> str:
    if not SLUG.match(v):
        raise ValueError("a slug is lower-case letters, digits and '-' (at most 64)")
    return v


Slug = Annotated[str, AfterValidator(_check_slug)]
RANKING_METRICS = ("f1", "accuracy", "balanced_accuracy", "ap", "auroc", "tpr@1%fpr", "tpr@5%fpr", "eer")
LOWER_IS_BETTER = frozenset({"eer"})
SOURCES = ("d3-test", "folders", "classes", "d3-shards", "labels")
SPLITS = ("seen", "unseen", "all")
"""The three figures of a phase that declares its training generators (real images count in each)."""


class TestSetSpec(BaseModel):
    """Where a phase's hidden test set comes from (server-side paths: YAML/CLI only)."""

    __test__ = False  # not a pytest test class
    model_config = ConfigDict(extra="forbid")

    source: Literal["d3-test", "folders", "classes", "d3-shards", "labels"]
    path: str | None = None
    real: str | None = None
    labels: str | None = None
    transform: list[str] | None = None
    seed: int = 0

    @model_validator(mode="after")
    def _needs(self) -> "TestSetSpec":
        if self.source == "labels" and not self.labels:
            raise ValueError("source 'labels' needs 'labels: FILE' (id,label[,generator][,transformed])")
        if self.source != "labels" and not self.path:
            raise ValueError(f"source {self.source!r} needs 'path'")
        if self.source == "d3-shards" and not self.real:
            raise ValueError("source 'd3-shards' needs 'real: FOLDER' (D3 shards hold no real images)")
        if self.transform:
            from ..data.augment import ROBUSTNESS_FAMILIES

            bad = [t for t in self.transform if t not in ROBUSTNESS_FAMILIES]
            if bad:
                raise ValueError(f"unknown transform(s) {bad}; known: {sorted(ROBUSTNESS_FAMILIES)}")
        return self

    def resolved(self, base: Path) -> "TestSetSpec":
        """Paths made absolute against ``base`` (the spec file's folder)."""
        def res(p: str | None) -> str | None:
            return None if p is None else str((base / os.path.expanduser(p)).resolve())

        return self.model_copy(update={"path": res(self.path), "real": res(self.real), "labels": res(self.labels)})


class PhaseSpec(BaseModel):
    """One phase: dates, quotas, ranking, what may be submitted, and its test set."""

    model_config = ConfigDict(extra="forbid")

    slug: Slug
    title: str = ""
    starts: dt.datetime
    ends: dt.datetime
    max_per_day: int | None = Field(None, ge=1)
    max_total: int | None = Field(None, ge=1)
    counting: Literal["best", "last"] = "best"
    ranking_metric: str = "auroc"
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    bootstrap: int = Field(1000, ge=0, le=100_000)
    public_fraction: float = Field(0.5, gt=0.0, lt=1.0)
    submissions: list[Literal["predictions", "model"]] = Field(default_factory=lambda: ["predictions", "model"])
    model_time_limit_s: float = Field(600.0, gt=0, le=86_400)
    model_memory_mb: int = Field(4096, ge=256, le=1_048_576)
    testset: TestSetSpec | None = None
    train_generators: list[Annotated[str, Field(min_length=1, max_length=100)]] | None = Field(
        None, max_length=1000,
        description="generators of the participants' training data: every other generator of the test set is "
                    "unseen, and every result and board shows seen / unseen / all side by side (null: no split)")
    rank_on: Literal["all", "seen", "unseen"] = Field(
        "all", description="the images the ranking metric is computed on: all, or the real images plus the fakes of "
                           "seen (or unseen) generators; seen/unseen need train_generators")

    @field_validator("ranking_metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        if v not in RANKING_METRICS:
            raise ValueError(f"ranking_metric must be one of {', '.join(RANKING_METRICS)}")
        return v

    @field_validator("starts", "ends")
    @classmethod
    def _aware(cls, v: dt.datetime) -> dt.datetime:
        return v.replace(tzinfo=dt.timezone.utc) if v.tzinfo is None else v.astimezone(dt.timezone.utc)

    @model_validator(mode="after")
    def _order(self) -> "PhaseSpec":
        if self.ends <= self.starts:
            raise ValueError("a phase ends after it starts")
        if not self.submissions:
            raise ValueError("a phase accepts predictions, models or both")
        if self.rank_on != "all" and self.train_generators is None:
            raise ValueError(f"rank_on {self.rank_on!r} needs train_generators (the generators seen in training)")
        if self.train_generators is not None:
            self.train_generators = sorted(set(self.train_generators))
        return self


class ChallengeSpec(BaseModel):
    """A whole challenge."""

    model_config = ConfigDict(extra="forbid")

    slug: Slug
    title: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=50_000)
    rules: str = Field("", max_length=50_000)
    image_format: Literal["png", "jpeg", "webp"] = "png"
    jpeg_quality: int = Field(95, ge=1, le=100)
    resize: int | None = Field(None, ge=16, le=4096)
    max_team_size: int = Field(10, ge=1, le=1000)
    published: bool = True
    phases: list[PhaseSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> "ChallengeSpec":
        slugs = [p.slug for p in self.phases]
        if len(set(slugs)) != len(slugs):
            raise ValueError(f"phase slugs repeat: {slugs}")
        return self


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(x) for x in err["loc"]) or "spec"
    return f"{where}: {err['msg']}"


def parse_spec(data: Any) -> ChallengeSpec:
    """A validated :class:`ChallengeSpec` from a dict; InvalidInputError naming the first bad field."""
    try:
        return ChallengeSpec.model_validate(data)
    except ValidationError as exc:
        raise InvalidInputError(f"challenge spec: {_first_error(exc)}") from None


def load_spec(path: str | os.PathLike) -> ChallengeSpec:
    """Read a YAML (or JSON) spec file; test-set paths become absolute against its folder."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{p}: cannot read ({exc})") from None
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except RecursionError:
        raise InvalidInputError(f"{p}: not valid YAML (nested too deeply)") from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"{p}: a challenge spec is a mapping (slug, title, phases, ...)")
    spec = parse_spec(data)
    for ph in spec.phases:
        if ph.testset is not None:
            ph.testset = ph.testset.resolved(p.parent)
    return spec
