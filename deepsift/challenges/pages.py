"""Server-rendered pages of the platform: list, challenge, submit, my submissions, result, leaderboards, admin."""
from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import RedirectResponse, Response
from markupsafe import Markup, escape
from sqlalchemy import select

from ..exceptions import ForbiddenError, InvalidInputError, ServiceError
from ..server.deps import CsrfProtect, CurrentUser, DbSession, ReadDbSession, RequireUser, rate_limit
from ..server.web import embeddable_headers, render
from . import api, leaderboard as lb
from . import service, submissions, views
from .models import TestSet
from .spec import LOWER_IS_BETTER

router = APIRouter(include_in_schema=False, dependencies=[Depends(rate_limit("api", "api_rate"))])
METRIC_LABELS = {"f1": "F1", "accuracy": "Accuracy", "balanced_accuracy": "Balanced acc.", "ap": "AP",
                 "auroc": "AUROC", "tpr@1%fpr": "TPR@1%FPR", "tpr@5%fpr": "TPR@5%FPR", "eer": "EER",
                 "acc_real": "Acc. real", "acc_fake": "Acc. fake", "ece": "ECE"}
TABLE_METRICS = ("n", "f1", "accuracy", "ap", "auroc", "tpr@1%fpr", "eer")


def roc_svg(points: list[list[float]] | None, size: int = 280) -> Markup:
    """A ROC curve as inline SVG (no script, no external file)."""
    if not points:
        return Markup("<p class='muted'>No ROC curve (one class only).</p>")
    pad, inner = 38, size - 48
    pts = " ".join(f"{pad + x * inner:.1f},{size - pad - y * inner:.1f}" for x, y in points)
    ticks = "".join(
        f"<text x='{pad + t * inner:.0f}' y='{size - pad + 14}' font-size='10' text-anchor='middle'>{t:g}</text>"
        f"<text x='{pad - 4}' y='{size - pad - t * inner + 3:.0f}' font-size='10' text-anchor='end'>{t:g}</text>"
        for t in (0, 0.5, 1))
    return Markup(
        f"<svg role='img' aria-label='ROC curve' width='{size}' height='{size}' viewBox='0 0 {size} {size}'>"
        f"<rect x='{pad}' y='{size - pad - inner}' width='{inner}' height='{inner}' fill='none' stroke='#d9dee6'/>"
        f"<line x1='{pad}' y1='{size - pad}' x2='{pad + inner}' y2='{size - pad - inner}' stroke='#d9dee6' "
        f"stroke-dasharray='4 3'/><polyline fill='none' stroke='#1f5fbf' stroke-width='2' points='{pts}'/>{ticks}"
        f"<text x='{pad + inner / 2}' y='{size - 2}' font-size='11' text-anchor='middle'>false-positive rate</text>"
        f"<text x='10' y='{size / 2}' font-size='11' text-anchor='middle' transform='rotate(-90 10 {size / 2})'>"
        f"true-positive rate</text></svg>")


def fmt(v: object, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def paragraphs(text: str) -> Markup:
    """Plain text (blank-line separated paragraphs) as HTML, escaped."""
    parts = [p.strip() for p in (text or "").split("\n\n") if p.strip()]
    return Markup("".join(f"<p>{escape(p)}</p>" for p in parts))


def _ctx(**kw: object) -> dict:
    return {"fmt": fmt, "labels": METRIC_LABELS, "table_metrics": TABLE_METRICS, "paragraphs": paragraphs, **kw}


@router.get("/challenges")
def list_page(request: Request, session: DbSession, user: CurrentUser) -> Response:
    items = [views.challenge_out(session, c, user) for c in service.list_challenges(session, user)]
    return render(request, "challenges/list.html", _ctx(challenges=items))


@router.get("/challenges/{slug}")
def challenge_page(request: Request, slug: str, session: DbSession, user: CurrentUser,
                   error: str | None = None, status: int = 200) -> Response:
    from . import moderation

    row = service.get_challenge(session, slug, user)
    ch = views.challenge_out(session, row, user)
    return render(request, "challenges/challenge.html",
                  _ctx(ch=ch, error=error, announcements=moderation.announcements(session, row),
                       me=user.username if user else None), status)


@router.post("/challenges/{slug}/team", dependencies=[CsrfProtect])
def team_form(request: Request, slug: str, user: RequireUser, session: DbSession,
              name: Annotated[str, Form(max_length=100)] = "", invite_code: Annotated[str, Form(max_length=100)] = "",
              action: Annotated[str, Form(max_length=10)] = "create") -> Response:
    ch = service.get_challenge(session, slug, user)
    try:
        if action == "join":
            service.join_team(session, ch, user, invite_code)
        else:
            service.create_team(session, ch, user, name)
    except ServiceError as exc:
        session.rollback()
        return challenge_page(request, slug, session, user, error=str(exc), status=exc.status_code)
    return RedirectResponse(f"/challenges/{slug}", status_code=303)


@router.get("/challenges/{slug}/phases/{phase}/submit")
def submit_page(request: Request, slug: str, phase: str, user: RequireUser, session: DbSession,
                error: str | None = None, status: int = 200) -> Response:
    ch = service.get_challenge(session, slug, user)
    ph = service.get_phase(ch, phase)
    team = service.team_of(session, ch, user)
    return render(request, "challenges/submit.html",
                  _ctx(ch=views.challenge_out(session, ch, user), ph=views.phase_out(session, ph, team), team=team,
                       error=error), status)


@router.post("/challenges/{slug}/phases/{phase}/submit",
             dependencies=[CsrfProtect, Depends(rate_limit("submit", "submit_rate", True))])
def submit_form(request: Request, slug: str, phase: str, user: RequireUser, session: ReadDbSession,
                file: Annotated[UploadFile, File()], kind: Annotated[str, Form(max_length=12)] = "predictions",
                note: Annotated[str, Form(max_length=200)] = "",
                preprocessing: Annotated[str, Form(max_length=10_000)] = "",
                method_name: Annotated[str, Form(max_length=100)] = "",
                method_description: Annotated[str, Form(max_length=1000)] = "",
                method_url: Annotated[str, Form(max_length=500)] = "",
                public: Annotated[str, Form(max_length=5)] = "") -> Response:
    try:
        if kind not in ("predictions", "model"):
            raise InvalidInputError("choose predictions or model")
        sub = api.submit(request, slug, phase, user, session, file, kind, note, preprocessing, None,  # type: ignore[arg-type]
                         method_name=method_name, method_description=method_description, method_url=method_url,
                         public=public != "0")
    except ServiceError as exc:
        session.rollback()
        return submit_page(request, slug, phase, user, session, error=str(exc), status=exc.status_code)
    return RedirectResponse(f"/submissions/{sub.id}", status_code=303)


@router.get("/challenges/{slug}/submissions")
def my_submissions(request: Request, slug: str, user: RequireUser, session: DbSession) -> Response:
    ch = service.get_challenge(session, slug, user)
    team = service.team_of(session, ch, user)
    by_phase = [(ph, [views.submission_out(session, s, user) for s in submissions.team_submissions(session, ph, team)]
                 if team else []) for ph in ch.phases]
    from . import queue

    return render(request, "challenges/submissions.html",
                  _ctx(ch=views.challenge_out(session, ch, user), by_phase=by_phase, team=team,
                       health=queue.health(session)))


@router.get("/submissions/{sid}")
def result_page(request: Request, sid: str, user: RequireUser, session: DbSession) -> Response:
    row = submissions.get_submission(session, sid, user)
    sub = views.submission_out(session, row, user, events=True)
    from .models import TeamMember

    mine = session.scalar(select(TeamMember.id).where(TeamMember.team_id == row.team_id,
                                                      TeamMember.user_id == user.id)) is not None
    return render(request, "challenges/result.html", _ctx(sub=sub, roc_svg=roc_svg, mine=mine))


def _board(session, slug, phase, user, part, sort, order):  # type: ignore[no-untyped-def]
    ch = service.get_challenge(session, slug, user)
    ph = service.get_phase(ch, phase)
    board = lb.build(session, ph, part=part, sort=sort, order=order, user=user)
    return ch, ph, board


@router.get("/challenges/{slug}/phases/{phase}/leaderboard")
def leaderboard_page(request: Request, slug: str, phase: str, session: DbSession, user: CurrentUser,
                     part: str = "public", sort: str | None = None, order: str | None = None) -> Response:
    ch, ph, board = _board(session, slug, phase, user, part, sort, order)
    links = {c: f"?part={part}&sort={quote(c)}&order=" + (
        ("asc" if board["order"] == "desc" else "desc") if c == board["sort"] else
        ("asc" if c in LOWER_IS_BETTER else "desc")) for c in board["columns"]}
    return render(request, "challenges/leaderboard.html",
                  _ctx(ch=ch, ph=ph, board=board, links=links, private_ok=service.private_visible(ph, user),
                       base=str(request.base_url).rstrip("/")))


@router.get("/embed/{slug}/{phase}/leaderboard")
def embed_page(request: Request, slug: str, phase: str, session: DbSession, part: str = "public",
               sort: str | None = None, order: str | None = None) -> Response:
    """Read-only leaderboard for other sites' iframes: no login, no script, no forms, no cookies needed."""
    ch, ph, board = _board(session, slug, phase, None, part, sort, order)
    return render(request, "challenges/embed.html", _ctx(ch=ch, ph=ph, board=board), headers=embeddable_headers())


# -- hosts -----------------------------------------------------------------------------------------
@router.get("/challenges/{slug}/admin")
def admin_page(request: Request, slug: str, user: RequireUser, session: DbSession, error: str | None = None,
               status: int = 200) -> Response:
    ch = service.get_challenge(session, slug, user)
    service.require_host_of(ch, user)
    phases = []
    for ph in ch.phases:
        ts = session.scalar(select(TestSet).where(TestSet.phase_id == ph.id))
        phases.append((ph, views.testset_out(ts) if ts else None,
                       [views.submission_out(session, s, user) for s in submissions.all_submissions(session, ph)]))
    from . import queue

    from . import moderation
    from .models import Team

    teams = list(session.scalars(select(Team).where(Team.challenge_id == ch.id).order_by(Team.name)))
    return render(request, "challenges/admin.html",
                  _ctx(ch=views.challenge_out(session, ch, user), phases=phases, error=error,
                       health=queue.health(session), teams=teams,
                       announcements=moderation.announcements(session, ch)), status)


@router.post("/challenges/{slug}/admin/requeue/{sid}", dependencies=[CsrfProtect])
def admin_requeue(slug: str, sid: str, user: RequireUser, session: DbSession) -> Response:
    api.requeue(sid, user, session)
    return RedirectResponse(f"/challenges/{slug}/admin", status_code=303)


@router.post("/challenges/{slug}/admin/baseline/{sid}", dependencies=[CsrfProtect])
def admin_baseline(slug: str, sid: str, user: RequireUser, session: DbSession,
                   baseline: Annotated[str, Form(max_length=5)] = "1") -> Response:
    from .schemas import BaselineMark

    api.mark_baseline(sid, BaselineMark(baseline=baseline == "1"), user, session)
    return RedirectResponse(f"/challenges/{slug}/admin", status_code=303)


@router.post("/challenges/{slug}/admin/phases/{phase}/testset", dependencies=[CsrfProtect])
def admin_testset(request: Request, slug: str, phase: str, user: RequireUser, session: ReadDbSession,
                  file: Annotated[UploadFile, File()], image_format: Annotated[str, Form(max_length=5)] = "png",
                  seed: Annotated[int, Form(ge=0, le=2**31)] = 0) -> Response:
    try:
        if image_format not in ("png", "jpeg", "webp"):
            raise InvalidInputError("image format: png, jpeg or webp")
        api.upload_testset(request, slug, phase, user, session, file, "auto", image_format, 95, None, "", seed)  # type: ignore[arg-type]
    except ServiceError as exc:
        session.rollback()
        return admin_page(request, slug, user, session, error=str(exc), status=exc.status_code)
    return RedirectResponse(f"/challenges/{slug}/admin", status_code=303)


@router.get("/host/new")
def new_challenge_page(request: Request, user: RequireUser, error: str | None = None, spec: str = "",
                       status: int = 200) -> Response:
    if not user.is_host:
        raise ForbiddenError("only hosts create challenges")
    return render(request, "challenges/new.html", _ctx(error=error, spec=spec), status)


@router.post("/host/new", dependencies=[CsrfProtect])
def new_challenge_form(request: Request, user: RequireUser, session: DbSession,
                       spec: Annotated[str, Form(max_length=200_000)]) -> Response:
    import yaml

    from .spec import parse_spec

    if not user.is_host:  # before any parsing: a participant's text is never read
        raise ForbiddenError("only hosts create challenges")
    try:
        try:
            data = yaml.safe_load(spec)
        except yaml.YAMLError as exc:
            raise InvalidInputError(f"not valid YAML: {str(exc).splitlines()[0]}") from None
        except RecursionError:  # [[[[...]]]]: within the field's size, deeper than the YAML parser can go
            raise InvalidInputError("not valid YAML: nested too deeply") from None
        if not isinstance(data, dict):
            raise InvalidInputError("a challenge spec is a mapping (slug, title, phases, ...)")
        parsed = parse_spec(data)
        if any(p.testset is not None for p in parsed.phases):
            raise InvalidInputError("leave out 'testset': upload each phase's test set on the admin page")
        ch = service.create_challenge(session, parsed, user)
    except ServiceError as exc:
        session.rollback()
        return new_challenge_page(request, user, error=str(exc), spec=spec, status=exc.status_code)
    return RedirectResponse(f"/challenges/{ch.slug}/admin", status_code=303)
