"""Team membership after creation: leave, remove a member, hand over the captaincy.

A team's creator is its captain (teams from before captains: their first member). Only the
captain removes members or hands the captaincy to another member; the captain leaves only as
the last member (the team then goes) or after handing it over. Once a team has submitted in a
challenge its members stay (as on EvalAI): leaving would give the same person a fresh quota in a
new team; the host can still disqualify the team.
"""
from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..exceptions import ConflictError, ForbiddenError, NotFoundError
from ..server.models import User
from .models import Challenge, Submission, Team, TeamMember
from .service import team_of


def captain_id(session: Session, team: Team) -> int | None:
    """The captain's user id: the stored one, else (older teams) the first member's."""
    if team.captain_id is not None:
        return team.captain_id
    return session.scalar(select(TeamMember.user_id).where(TeamMember.team_id == team.id)
                          .order_by(TeamMember.joined_at, TeamMember.id).limit(1))


def captain_name(session: Session, team: Team) -> str | None:
    """The captain's username (None for an empty team)."""
    uid = captain_id(session, team)
    return session.scalar(select(User.username).where(User.id == uid)) if uid is not None else None


def _my_team(session: Session, ch: Challenge, user: User) -> Team:
    team = team_of(session, ch, user)
    if team is None:
        raise NotFoundError("you are not in a team of this challenge")
    locked = session.scalar(select(Team).where(Team.id == team.id).with_for_update())  # one change at a time
    return locked or team


def _has_submissions(session: Session, team: Team) -> bool:
    return bool(session.scalar(select(func.count()).select_from(Submission).where(Submission.team_id == team.id)))


def _member(session: Session, team: Team, username: str) -> TeamMember:
    row = session.scalar(select(TeamMember).join(User, User.id == TeamMember.user_id)
                         .where(TeamMember.team_id == team.id, User.username == (username or "").strip().lower()))
    if row is None:
        raise NotFoundError(f"your team has no member {username!r}")
    return row


def _require_captain(session: Session, team: Team, user: User) -> None:
    if captain_id(session, team) != user.id:
        raise ForbiddenError("only the team's captain may do this")


def leave_team(session: Session, ch: Challenge, user: User) -> Team | None:
    """Leave one's team; returns it, or None when it was the last member (the team is gone)."""
    team = _my_team(session, ch, user)
    if _has_submissions(session, team):
        raise ConflictError("your team has submissions in this challenge: its members stay in it")
    others = [m for m in team.members if m.user_id != user.id]
    if others and captain_id(session, team) == user.id:
        raise ConflictError("you are the captain: hand the captaincy to another member first")
    if not others:
        session.delete(team)  # with its one membership
        session.flush()
        return None
    session.delete(_member(session, team, user.username))
    session.flush()
    session.refresh(team)
    return team


def remove_member(session: Session, ch: Challenge, user: User, username: str) -> Team:
    """The captain removes another member of the team."""
    team = _my_team(session, ch, user)
    _require_captain(session, team, user)
    row = _member(session, team, username)
    if row.user_id == user.id:
        raise ConflictError("to leave the team yourself, hand over the captaincy and leave")
    if _has_submissions(session, team):
        raise ConflictError("your team has submissions in this challenge: its members stay in it")
    session.delete(row)
    session.flush()
    session.refresh(team)
    return team


def transfer_captaincy(session: Session, ch: Challenge, user: User, username: str) -> Team:
    """The captain makes another member the captain."""
    team = _my_team(session, ch, user)
    _require_captain(session, team, user)
    team.captain_id = _member(session, team, username).user_id
    session.flush()
    return team
