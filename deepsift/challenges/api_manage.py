"""The platform's JSON API for running a challenge day to day: team membership, submission
descriptions and board choice, moderation (hide, disqualify), announcements (see :mod:`.moderation`)."""
from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..server.deps import CsrfProtect, CurrentUser, DbSession, RequireUser, rate_limit
from ..server.models import User
from . import moderation, service, submissions, teams, views
from .api import E
from .schemas import (AnnouncementIn, AnnouncementOut, DisqualifyIn, HideIn, MemberIn, SubmissionOut, SubmissionUpdate,
                      TeamOut)

router = APIRouter(prefix="/api", tags=["challenges"], responses=E,
                   dependencies=[Depends(rate_limit("api", "api_rate"))])
C409 = {409: {"description": "not allowed in the team's state (e.g. it has submissions)"}}


# -- teams -----------------------------------------------------------------------------------------
@router.post("/challenges/{slug}/team/leave", response_model=TeamOut | None, dependencies=[CsrfProtect], responses=C409)
def leave(slug: str, user: RequireUser, session: DbSession) -> TeamOut | None:
    """Leave your team (the captain: only as its last member, or after handing over); null when the team is gone."""
    team = teams.leave_team(session, service.get_challenge(session, slug, user), user)
    return views.team_out(session, team) if team is not None else None


@router.post("/challenges/{slug}/team/remove", response_model=TeamOut, dependencies=[CsrfProtect], responses=C409)
def remove(slug: str, body: MemberIn, user: RequireUser, session: DbSession) -> TeamOut:
    """Remove a member from your team (its captain)."""
    ch = service.get_challenge(session, slug, user)
    return views.team_out(session, teams.remove_member(session, ch, user, body.username))


@router.post("/challenges/{slug}/team/captain", response_model=TeamOut, dependencies=[CsrfProtect])
def captain(slug: str, body: MemberIn, user: RequireUser, session: DbSession) -> TeamOut:
    """Make another member the captain (the captain)."""
    ch = service.get_challenge(session, slug, user)
    return views.team_out(session, teams.transfer_captaincy(session, ch, user, body.username))


# -- submissions -----------------------------------------------------------------------------------
@router.patch("/submissions/{sid}", response_model=SubmissionOut, dependencies=[CsrfProtect])
def describe(sid: str, body: SubmissionUpdate, user: RequireUser, session: DbSession) -> SubmissionOut:
    """Describe your submission (method name, short description, paper/code link) and choose whether the
    boards show it; your team's counting entry is picked among the shown ones."""
    sub = submissions.get_submission(session, sid, user)
    moderation.describe(session, sub, user, public=body.public, method_name=body.method_name,
                        method_description=body.method_description, method_url=body.method_url)
    return views.submission_out(session, sub, user)


@router.post("/submissions/{sid}/hide", response_model=SubmissionOut, dependencies=[CsrfProtect])
def hide(sid: str, body: HideIn, user: RequireUser, session: DbSession) -> SubmissionOut:
    """Hide a submission from every board, or show it again (the challenge's host); its team sees the reason."""
    sub = submissions.get_submission(session, sid, user)
    moderation.hide_submission(session, sub, user, body.hidden, body.reason)
    return views.submission_out(session, sub, user)


@router.post("/challenges/{slug}/teams/{team}/disqualify", response_model=TeamOut, dependencies=[CsrfProtect])
def disqualify(slug: str, team: str, body: DisqualifyIn, user: RequireUser, session: DbSession) -> TeamOut:
    """Disqualify a team with a reason shown on the boards (its rows stay, unranked; it submits no more),
    or reinstate it with ``disqualified: false`` (the challenge's host)."""
    ch = service.get_challenge(session, slug, user)
    service.require_host_of(ch, user)
    return views.team_out(session, moderation.disqualify(session, ch, user, team, body.reason, body.disqualified))


# -- announcements ---------------------------------------------------------------------------------
def _announcement_out(session: Session, a) -> AnnouncementOut:  # type: ignore[no-untyped-def]
    author = session.scalar(select(User.username).where(User.id == a.author_id)) if a.author_id else None
    return AnnouncementOut(id=a.id, title=a.title, body=a.body, author=author, created_at=a.created_at)


@router.get("/challenges/{slug}/announcements", response_model=list[AnnouncementOut])
def list_announcements(slug: str, user: CurrentUser, session: DbSession) -> list[AnnouncementOut]:
    """The host's announcements, newest first (whoever may see the challenge)."""
    ch = service.get_challenge(session, slug, user)
    return [_announcement_out(session, a) for a in moderation.announcements(session, ch)]


@router.post("/challenges/{slug}/announcements", response_model=AnnouncementOut, status_code=201,
             dependencies=[CsrfProtect])
def announce(slug: str, body: AnnouncementIn, user: RequireUser, session: DbSession) -> AnnouncementOut:
    """Post an announcement on the challenge page (its host)."""
    ch = service.get_challenge(session, slug, user)
    return _announcement_out(session, moderation.announce(session, ch, user, body.title, body.body))


@router.delete("/challenges/{slug}/announcements/{announcement_id}", status_code=204, response_class=Response,
               dependencies=[CsrfProtect])
def delete_announcement(slug: str, announcement_id: int, user: RequireUser, session: DbSession) -> Response:
    """Remove an announcement (the challenge's host)."""
    moderation.delete_announcement(session, service.get_challenge(session, slug, user), user, announcement_id)
    return Response(status_code=204)
