"""Pages' form posts for running a challenge: team membership, describing a submission, moderation,
announcements (the rules: :mod:`.teams`, :mod:`.moderation`). Each form carries the CSRF token."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from ..exceptions import NotFoundError, ServiceError
from ..server.deps import CsrfProtect, DbSession, RequireUser, rate_limit
from . import moderation, pages, service, submissions, teams

router = APIRouter(include_in_schema=False, dependencies=[Depends(rate_limit("api", "api_rate")), CsrfProtect])
Text = Annotated[str, Form(max_length=1000)]


def _team_action(request: Request, slug: str, user, session, fn) -> Response:  # type: ignore[no-untyped-def]
    try:
        fn(service.get_challenge(session, slug, user))
    except ServiceError as exc:
        session.rollback()
        return pages.challenge_page(request, slug, session, user, error=str(exc), status=exc.status_code)
    return RedirectResponse(f"/challenges/{slug}", status_code=303)


@router.post("/challenges/{slug}/team/leave")
def leave_form(request: Request, slug: str, user: RequireUser, session: DbSession) -> Response:
    return _team_action(request, slug, user, session, lambda ch: teams.leave_team(session, ch, user))


@router.post("/challenges/{slug}/team/remove")
def remove_form(request: Request, slug: str, user: RequireUser, session: DbSession, username: Text = "") -> Response:
    return _team_action(request, slug, user, session, lambda ch: teams.remove_member(session, ch, user, username))


@router.post("/challenges/{slug}/team/captain")
def captain_form(request: Request, slug: str, user: RequireUser, session: DbSession, username: Text = "") -> Response:
    return _team_action(request, slug, user, session, lambda ch: teams.transfer_captaincy(session, ch, user, username))


@router.post("/submissions/{sid}/describe")
def describe_form(request: Request, sid: str, user: RequireUser, session: DbSession, method_name: Text = "",
                  method_description: Text = "", method_url: Text = "",
                  public: Annotated[str, Form(max_length=5)] = "") -> Response:
    sub = submissions.get_submission(session, sid, user)
    moderation.describe(session, sub, user, public=public != "0", method_name=method_name,
                        method_description=method_description, method_url=method_url)
    return RedirectResponse(f"/submissions/{sid}", status_code=303)


def _admin_action(request: Request, slug: str, user, session, fn) -> Response:  # type: ignore[no-untyped-def]
    try:
        ch = service.get_challenge(session, slug, user)
        service.require_host_of(ch, user)
        fn(ch)
    except ServiceError as exc:
        session.rollback()
        return pages.admin_page(request, slug, user, session, error=str(exc), status=exc.status_code)
    return RedirectResponse(f"/challenges/{slug}/admin", status_code=303)


@router.post("/challenges/{slug}/admin/hide/{sid}")
def hide_form(request: Request, slug: str, sid: str, user: RequireUser, session: DbSession, reason: Text = "",
              hidden: Annotated[str, Form(max_length=5)] = "1") -> Response:
    def act(ch):  # type: ignore[no-untyped-def]
        sub = submissions.get_submission(session, sid, user)
        if sub.phase.challenge_id != ch.id:
            raise NotFoundError("no such submission in this challenge")
        moderation.hide_submission(session, sub, user, hidden == "1", reason)

    return _admin_action(request, slug, user, session, act)


@router.post("/challenges/{slug}/admin/disqualify")
def disqualify_form(request: Request, slug: str, user: RequireUser, session: DbSession, team: Text = "",
                    reason: Text = "", disqualified: Annotated[str, Form(max_length=5)] = "1") -> Response:
    return _admin_action(request, slug, user, session,
                         lambda ch: moderation.disqualify(session, ch, user, team, reason, disqualified == "1"))


@router.post("/challenges/{slug}/admin/announcements")
def announce_form(request: Request, slug: str, user: RequireUser, session: DbSession,
                  title: Annotated[str, Form(max_length=200)] = "",
                  body: Annotated[str, Form(max_length=20_000)] = "") -> Response:
    return _admin_action(request, slug, user, session, lambda ch: moderation.announce(session, ch, user, title, body))


@router.post("/challenges/{slug}/admin/announcements/{announcement_id}/delete")
def delete_announcement_form(request: Request, slug: str, announcement_id: int, user: RequireUser,
                             session: DbSession) -> Response:
    return _admin_action(request, slug, user, session,
                         lambda ch: moderation.delete_announcement(session, ch, user, announcement_id))
