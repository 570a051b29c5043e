"""Leaderboards: one row per team, its counting submission, sortable by any metric, with intervals.

Which submission counts (per phase): ``best`` = the team's best scored submission by the ranking
metric on the public part (earliest on ties), ``last`` = its latest scored one, among those the team
shows on the boards and the host has not hidden. A disqualified team's row stays, unranked, with
the host's reason. The private
leaderboard ranks the same counting submissions on the private part, so the choice never looks
at hidden labels. Ranks are competition ranks (1, 2, 2, 4); missing values sort last.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..exceptions import ForbiddenError, InvalidInputError
from ..server.db import utcnow
from ..server.models import User
from .models import Phase, Submission, Team
from .service import private_visible
from .spec import LOWER_IS_BETTER, RANKING_METRICS

SHOWN = ("f1", "accuracy", "ap", "auroc", "tpr@1%fpr")
SORTABLE = RANKING_METRICS


def columns(ph: Phase) -> list[str]:
    """Metric columns of a phase's leaderboard: the five standard ones plus the ranking metric."""
    cols = list(SHOWN)
    if ph.ranking_metric not in cols:
        cols.insert(0, ph.ranking_metric)
    return cols


def counting_submissions(session: Session, ph: Phase) -> list[Submission]:
    """Each team's counting submission (see the module docstring); scores loaded for those only."""
    light = session.execute(select(Submission.id, Submission.team_id, Submission.public_score)
                            .where(Submission.phase_id == ph.id, Submission.state == "scored",
                                   Submission.hidden.is_(False), Submission.public.is_(True))
                            .order_by(Submission.created_at, Submission.id)).all()
    best: dict[int, tuple[str, float | None]] = {}
    lower = ph.ranking_metric in LOWER_IS_BETTER
    for sid, team, score in light:
        cur = best.get(team)
        if cur is None or ph.counting == "last":
            best[team] = (sid, score)
        elif score is not None and (cur[1] is None or (score < cur[1] if lower else score > cur[1])):
            best[team] = (sid, score)
    ids = [sid for sid, _ in best.values()]
    return list(session.scalars(select(Submission).where(Submission.id.in_(ids)))) if ids else []


def build(session: Session, ph: Phase, *, part: str = "public", sort: str | None = None, order: str | None = None,
          user: User | None = None, now: dt.datetime | None = None) -> dict[str, Any]:
    """The leaderboard of ``part`` as a JSON-ready dict; ForbiddenError for the private part before the end."""
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
    subs = counting_submissions(session, ph)
    teams = {t: (n, d) for t, n, d in session.execute(select(Team.id, Team.name, Team.disqualified_reason)
                                                      .where(Team.challenge_id == ph.challenge_id)).all()}
    counts = dict(session.execute(select(Submission.team_id, func.count()).where(
        Submission.phase_id == ph.id, Submission.state == "scored").group_by(Submission.team_id)).all())
    cols = columns(ph)
    if sort not in cols:
        cols.append(sort)
    rows = []
    for s in subs:
        res = (s.scores or {}).get(part, {})
        overall = res.get("overall", {})
        ci = (res.get("ci") or {}).get(ph.ranking_metric)
        name, disqualified = teams.get(s.team_id, ("?", None))
        rows.append({"team": name, "metrics": {c: overall.get(c) for c in cols},
                     "ci95": ci, "intervals": "done" if s.intervals_done else "pending",
                     "submitted_at": s.created_at.isoformat(), "submissions": int(counts.get(s.team_id, 0)),
                     "n_images": overall.get("n"), "method_name": s.method_name or "",
                     "method_description": s.method_description or "", "method_url": s.method_url or "",
                     "disqualified": disqualified, "_t": s.created_at})

    def key(r: dict) -> tuple:
        v = r["metrics"].get(sort)
        missing = v is None
        return (r["disqualified"] is not None, missing, -(v or 0.0) if descending else (v or 0.0), r["_t"])

    rows.sort(key=key)
    prev, rank = None, 0
    for i, r in enumerate(rows, 1):
        v = r["metrics"].get(sort)
        if v != prev or i == 1:
            rank = i
        r["rank"] = rank if v is not None and r["disqualified"] is None else None
        prev = v
        del r["_t"]
    ch = ph.challenge
    return {"challenge": ch.slug, "phase": ph.slug, "part": part, "counting": ph.counting,
            "ranking_metric": ph.ranking_metric, "sort": sort, "order": "desc" if descending else "asc",
            "columns": cols, "rows": rows, "phase_ends_at": ph.ends_at.isoformat(),
            "generated_at": (now or utcnow()).isoformat()}


def to_csv(board: dict[str, Any]) -> str:
    """The leaderboard as CSV: rank, team, metrics..., ci95_low, ci95_high, submitted_at, submissions,
    method, method_url, disqualified."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["rank", "team", *board["columns"], "ci95_low", "ci95_high", "submitted_at", "submissions", "method",
                "method_url", "disqualified"])
    for r in board["rows"]:
        ci = r["ci95"] or [None, None]
        w.writerow([r["rank"], r["team"], *[_fmt(r["metrics"][c]) for c in board["columns"]], _fmt(ci[0]),
                    _fmt(ci[1]), r["submitted_at"], r["submissions"], r.get("method_name", ""),
                    r.get("method_url", ""), r.get("disqualified") or ""])
    return out.getvalue()


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.6f}"
