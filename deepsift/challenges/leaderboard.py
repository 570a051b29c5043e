"""Leaderboards: one row per team, its counting submission, sortable by any metric, with intervals.

Which submission counts (per phase): ``best`` = the team's best scored submission by the ranking
metric on the public part (earliest on ties), ``last`` = its latest scored one, among those the team
shows on the boards and the host has not hidden. A disqualified team's row stays, unranked, with
the host's reason. The private
leaderboard ranks the same counting submissions on the private part, so the choice never looks
at hidden labels. Ranks are competition ranks (1, 2, 2, 4) of the values as shown; missing
values sort last. A phase with training generators (``train_generators``) shows each metric on the
seen, unseen and all images side by side (``split``) and ranks on its ``rank_on`` figures
(``metrics``). Only regular entries compete: the host's and late ones stay off the boards
unless the host marks one as a baseline (shown, flagged, never ranked); every row carries its
flags (:func:`entry_flags`).
"""
from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..exceptions import ForbiddenError, InvalidInputError
from ..output import csv_safe
from ..server.db import utcnow
from ..server.models import User
from .models import Phase, Submission, Team
from .scoring import DISPLAY_DIGITS, published, ranking_ci
from .service import private_visible
from .spec import LOWER_IS_BETTER, RANKING_METRICS, SPLITS

SHOWN = ("f1", "accuracy", "ap", "auroc", "tpr@1%fpr")
SORTABLE = RANKING_METRICS


def columns(ph: Phase) -> list[str]:
    """Metric columns of a phase's leaderboard: the five standard ones plus the ranking metric."""
    cols = list(SHOWN)
    if ph.ranking_metric not in cols:
        cols.insert(0, ph.ranking_metric)
    return cols


def entry_flags(sub: Submission, ph: Phase) -> list[str]:
    """The flags of an entry, shown on every board: ``host`` (submitted by the challenge's host),
    ``baseline`` (marked by the host: shown, never ranked), ``late`` (accepted after the phase ended) and
    ``disqualified`` (its team was disqualified)."""
    flags = []
    if sub.user_id is not None and sub.user_id == ph.challenge.host_id:
        flags.append("host")
    if sub.baseline:
        flags.append("baseline")
    if sub.late:
        flags.append("late")
    if _disqualified(sub.team):
        flags.append("disqualified")
    return flags


def _disqualified(team: Team) -> bool:
    """Whether a team is disqualified (moderation sets ``disqualified``/``disqualified_at`` on the team, if any)."""
    return bool(getattr(team, "disqualified_reason", None) or getattr(team, "disqualified_at", None))


def counting_submissions(session: Session, ph: Phase) -> list[Submission]:
    """Each team's counting submission (see the module docstring); scores loaded for those only.

    Only regular entries compete: the host's and late ones are off the ranking (a baseline the host
    marks is shown beside it, see :func:`baselines`); hidden entries, and those the team keeps off the
    boards, are not shown at all.
    """
    light = session.execute(select(Submission.id, Submission.team_id, Submission.public_score, Submission.user_id,
                                   Submission.late, Submission.baseline)
                            .where(Submission.phase_id == ph.id, Submission.state == "scored",
                                   Submission.hidden.is_(False), Submission.public.is_(True))
                            .order_by(Submission.created_at, Submission.id)).all()
    best: dict[int, tuple[str, float | None]] = {}
    lower = ph.ranking_metric in LOWER_IS_BETTER
    host = ph.challenge.host_id
    for sid, team, score, user_id, late, baseline in light:
        if baseline or late or user_id == host:
            continue
        cur = best.get(team)
        if cur is None or ph.counting == "last":
            best[team] = (sid, score)
        elif score is not None and (cur[1] is None or (score < cur[1] if lower else score > cur[1])):
            best[team] = (sid, score)
    ids = [sid for sid, _ in best.values()]
    return list(session.scalars(select(Submission).where(Submission.id.in_(ids)))) if ids else []


def baselines(session: Session, ph: Phase) -> list[Submission]:
    """The scored submissions the host marked as baselines (shown on the boards, never ranked)."""
    return list(session.scalars(select(Submission).where(Submission.phase_id == ph.id, Submission.state == "scored",
                                                         Submission.baseline.is_(True))))


def build(session: Session, ph: Phase, *, part: str = "public", sort: str | None = None, order: str | None = None,
          user: User | None = None, now: dt.datetime | None = None) -> dict[str, Any]:
    """The leaderboard of ``part`` as a JSON-ready dict; ForbiddenError for the private part before the end.

    Metrics are shown rounded (:data:`.scoring.DISPLAY_DIGITS`) and ranked as shown: equal shown values
    share a rank (competition ranking, 1-1-3). Flagged rows (baselines, disqualified teams) sit at their
    place by value with no rank, and the ranks of the others skip them.
    """
    if part not in ("public", "private"):
        raise InvalidInputError("part is 'public' or 'private'")
    if part == "private" and not private_visible(ph, user, now):
        raise ForbiddenError(f"the private leaderboard opens when the phase ends ({ph.ends_at:%Y-%m-%d %H:%M} UTC)")
    sort = sort or ph.ranking_metric
    if sort not in SORTABLE:
        raise InvalidInputError(f"sort is one of {', '.join(SORTABLE)}")
    if order not in (None, "asc", "desc"):
        raise InvalidInputError("order is 'asc' or 'desc'")
    descending = (order or ("asc" if sort in LOWER_IS_BETTER else "desc")) == "desc"
    subs = counting_submissions(session, ph) + baselines(session, ph)
    teams = {t: (n, d) for t, n, d in session.execute(select(Team.id, Team.name, Team.disqualified_reason)
                                                      .where(Team.challenge_id == ph.challenge_id)).all()}
    counts = dict(session.execute(select(Submission.team_id, func.count()).where(
        Submission.phase_id == ph.id, Submission.state == "scored").group_by(Submission.team_id)).all())
    cols = columns(ph)
    if sort not in cols:
        cols.append(sort)
    split, rank_on = ph.train_generators is not None, ph.rank_on or "all"
    rows = []
    for s in subs:
        res = (s.scores or {}).get(part, {})
        overall = res.get("overall", {})
        ci = ranking_ci(s.scores, part) if s.scores else None
        figures = {on: (overall if on == "all" else (res.get("split") or {}).get(on) or {}) for on in SPLITS}
        name, disqualified = teams.get(s.team_id, ("?", None))
        row = {"team": name, "metrics": {c: published(figures[rank_on].get(c)) for c in cols},
               "ci95": published(ci), "intervals": "done" if s.intervals_done else "pending",
               "submitted_at": s.created_at.isoformat(), "submissions": int(counts.get(s.team_id, 0)),
               "n_images": figures[rank_on].get("n"), "flags": entry_flags(s, ph), "_t": s.created_at,
               "method_name": s.method_name or "", "method_description": s.method_description or "",
               "method_url": s.method_url or "", "disqualified": disqualified}
        if split:
            row["split"] = {on: {c: published(figures[on].get(c)) for c in cols} for on in SPLITS}
        rows.append(row)

    def key(r: dict) -> tuple:
        v = r["metrics"].get(sort)
        missing = v is None
        return (r["disqualified"] is not None, missing, -(v or 0.0) if descending else (v or 0.0), r["_t"])

    rows.sort(key=key)
    prev, rank, place = None, 0, 0
    for r in rows:
        v = r["metrics"].get(sort)
        ranked = v is not None and not ({"baseline", "disqualified"} & set(r["flags"]))
        if ranked:
            place += 1
            if v != prev:
                rank, prev = place, v
        r["rank"] = rank if ranked else None
        del r["_t"]
    ch = ph.challenge
    return {"challenge": ch.slug, "phase": ph.slug, "part": part, "counting": ph.counting,
            "ranking_metric": ph.ranking_metric, "sort": sort, "order": "desc" if descending else "asc",
            "columns": cols, "rows": rows, "phase_ends_at": ph.ends_at.isoformat(),
            "generated_at": (now or utcnow()).isoformat(), "rank_on": rank_on,
            "splits": list(SPLITS) if split else None, "train_generators": ph.train_generators}


def to_csv(board: dict[str, Any]) -> str:
    """The leaderboard as CSV: rank, team, metrics..., ci95_low, ci95_high, submitted_at, submissions, flags,
    method, method_url, disqualified (the host's reason).

    Text cells that start like a formula (= + - @ tab CR) get a leading ``'`` (:func:`~deepsift.output.csv_safe`).
    With a seen/unseen split, each metric is three columns side by side: ``<metric>_seen``,
    ``<metric>_unseen``, ``<metric>_all`` (the interval is the ranking metric's on ``rank_on``).
    """
    out = io.StringIO()
    w = csv.writer(out)
    splits = board.get("splits")
    heads = [f"{c}_{on}" for c in board["columns"] for on in splits] if splits else board["columns"]
    w.writerow(["rank", "team", *heads, "ci95_low", "ci95_high", "submitted_at", "submissions", "flags", "method",
                "method_url", "disqualified"])
    for r in board["rows"]:
        ci = r["ci95"] or [None, None]
        values = [r["split"][on][c] for c in board["columns"] for on in splits] if splits else \
            [r["metrics"][c] for c in board["columns"]]
        text = [csv_safe(t) for t in (r["team"], r.get("method_name", ""), r.get("method_url", ""),
                                      r.get("disqualified") or "")]  # typed by participants and hosts
        w.writerow(["" if r["rank"] is None else r["rank"], text[0], *[_fmt(v) for v in values],
                    _fmt(ci[0]), _fmt(ci[1]), r["submitted_at"], r["submissions"], " ".join(r["flags"]), *text[1:]])
    return out.getvalue()


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.{DISPLAY_DIGITS}f}"
