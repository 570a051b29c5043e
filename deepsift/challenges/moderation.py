"""Moderation and what a submission says about itself.

Hosts (and administrators, over every challenge) hide a submission (off every board, its team
still sees it and why), disqualify a team with a reason shown on the boards (its entries stay
visible, unranked; it can no longer submit), post announcements on the challenge page. A team
describes each of its submissions (method name, short description, an http(s) link to the paper
or code) and chooses which are shown on the boards: the team's counting entry is picked among
those (as on EvalAI, a participant chooses which entry represents them).
"""
from __future__ import annotations

from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..exceptions import ConflictError, ForbiddenError, InvalidInputError, NotFoundError
from ..server.db import utcnow
from ..server.models import User
from .models import Announcement, Challenge, Submission, SubmissionEvent, Team, TeamMember
from .service import require_host_of

MAX_NAME, MAX_DESCRIPTION, MAX_URL, MAX_REASON = 100, 1000, 500, 500


def _text(value: str, field: str, limit: int, lines: bool = False) -> str:
    text = (value or "").strip() if lines else " ".join((value or "").split())
    if "\x00" in text:
        raise InvalidInputError("text cannot contain NUL characters")
    if len(text) > limit:
        raise InvalidInputError(f"{field}: at most {limit} characters")
    return text


def check_url(url: str) -> str:
    """An http(s) link to a paper or code ('' for none), else InvalidInputError."""
    url = (url or "").strip()
    if not url:
        return ""
    if len(url) > MAX_URL or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise InvalidInputError(f"link: an http(s) URL of at most {MAX_URL} characters, without spaces")
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        host = None
        parts = None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not host:
        raise InvalidInputError("link: an http:// or https:// address, e.g. https://arxiv.org/abs/2407.20337")
    return url


def check_entry(method_name: str | None = None, method_description: str | None = None,
                method_url: str | None = None) -> dict[str, str]:
    """The given description fields, normalised and checked (InvalidInputError on the first bad one)."""
    out = {}
    if method_name is not None:
        out["method_name"] = _text(method_name, "method name", MAX_NAME)
    if method_description is not None:
        out["method_description"] = _text(method_description, "description", MAX_DESCRIPTION, lines=True)
    if method_url is not None:
        out["method_url"] = check_url(method_url)
    return out


def describe(session: Session, sub: Submission, user: User, *, public: bool | None = None,
             **fields: str | None) -> Submission:
    """A team member sets a submission's method name / description / link and whether the boards show it."""
    member = session.scalar(select(TeamMember.id).where(TeamMember.team_id == sub.team_id,
                                                        TeamMember.user_id == user.id))
    if member is None:
        raise ForbiddenError("only the submission's team may describe it")
    for k, v in check_entry(**fields).items():
        setattr(sub, k, v)
    if public is not None:
        sub.public = public
    session.flush()
    return sub


def hide_submission(session: Session, sub: Submission, user: User, hidden: bool, reason: str = "") -> Submission:
    """The host hides a submission from every board (or shows it again); its team sees why."""
    require_host_of(sub.phase.challenge, user)
    reason = _text(reason, "reason", MAX_REASON)
    sub.hidden, sub.hidden_reason = hidden, (reason or None) if hidden else None
    session.add(SubmissionEvent(submission_id=sub.id, at=utcnow(), state="hidden" if hidden else "shown",
                                detail=f"by {user.username}" + (f": {reason}" if reason and hidden else "")))
    session.flush()
    return sub


def get_team(session: Session, ch: Challenge, name: str) -> Team:
    team = session.scalar(select(Team).where(Team.challenge_id == ch.id, Team.name == (name or "").strip()))
    if team is None:
        raise NotFoundError(f"no team {name!r} in this challenge")
    return team


def disqualify(session: Session, ch: Challenge, user: User, team_name: str, reason: str,
               disqualified: bool = True) -> Team:
    """The host disqualifies a team (a reason is required and shown on the boards) or reinstates it."""
    require_host_of(ch, user)
    team = get_team(session, ch, team_name)
    if disqualified:
        reason = _text(reason, "reason", MAX_REASON)
        if len(reason) < 3:
            raise InvalidInputError("give the reason for the disqualification (it is shown on the boards)")
        team.disqualified_reason, team.disqualified_at = reason, utcnow()
    else:
        team.disqualified_reason, team.disqualified_at = None, None
    session.flush()
    return team


def check_not_disqualified(team: Team | None) -> None:
    """ConflictError when the team was disqualified (it submits no more)."""
    if team is not None and team.disqualified_reason:
        raise ConflictError(f"your team was disqualified: {team.disqualified_reason}")


def announcements(session: Session, ch: Challenge) -> list[Announcement]:
    """A challenge's announcements, newest first."""
    return list(session.scalars(select(Announcement).where(Announcement.challenge_id == ch.id)
                                .order_by(Announcement.created_at.desc(), Announcement.id.desc())))


def announce(session: Session, ch: Challenge, user: User, title: str, body: str) -> Announcement:
    """The host posts an announcement on the challenge page."""
    require_host_of(ch, user)
    title = _text(title, "title", 200)
    body = _text(body, "text", 20_000, lines=True)
    if not title:
        raise InvalidInputError("an announcement needs a title")
    row = Announcement(challenge_id=ch.id, author_id=user.id, title=title, body=body, created_at=utcnow())
    session.add(row)
    session.flush()
    return row


def delete_announcement(session: Session, ch: Challenge, user: User, announcement_id: int) -> None:
    """The host removes one of the challenge's announcements."""
    require_host_of(ch, user)
    row = session.get(Announcement, announcement_id)
    if row is None or row.challenge_id != ch.id:
        raise NotFoundError("no such announcement")
    session.delete(row)
    session.flush()
