"""The platform's JSON API (``/api/...``): the product; the pages and the CLI client are its clients."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, Header, Query, Request, UploadFile
from fastapi.responses import FileResponse, PlainTextResponse, Response
from pydantic import ValidationError

from ..exceptions import ConflictError, InvalidInputError, NotFoundError
from ..server.deps import CsrfProtect, CurrentUser, DbSession, ReadDbSession, RequireHost, RequireUser, rate_limit
from ..server.storage import ArchiveLimits, extract_archive, write_capped
from . import leaderboard as lb
from . import service, submissions, views
from .models import Submission
from .schemas import (BaselineMark, ChallengeOut, ChallengeSummary, ChallengeUpdate, Leaderboard, QueueHealth,
                      SubmissionOut, TeamCreate, TeamJoin, TeamOut, TestSetOut)
from .spec import ChallengeSpec, PhaseSpec, TestSetSpec, parse_spec

E = {401: {"description": "not authenticated"}, 403: {"description": "not allowed"},
     404: {"description": "not found, or not yours to see"}, 422: {"description": "invalid input"},
     429: {"description": "rate limited"}}
router = APIRouter(prefix="/api", tags=["challenges"], responses=E,
                   dependencies=[Depends(rate_limit("api", "api_rate"))])


def _storage(request: Request):  # type: ignore[no-untyped-def]
    return request.app.state.storage


def _cs(request: Request):  # type: ignore[no-untyped-def]
    return request.app.state.challenges


# -- challenges ------------------------------------------------------------------------------------
@router.get("/challenges", response_model=list[ChallengeSummary])
def list_challenges(session: DbSession, user: CurrentUser) -> list[ChallengeSummary]:
    """Published challenges (and the caller's own unpublished ones)."""
    return [views.challenge_summary(session, c) for c in service.list_challenges(session, user)]


@router.post("/challenges", response_model=ChallengeOut, status_code=201, dependencies=[CsrfProtect],
             responses={409: {"description": "slug taken"}})
def create_challenge(spec: ChallengeSpec, user: RequireHost, session: DbSession) -> ChallengeOut:
    """Create a challenge (hosts). Test sets are uploaded per phase afterwards (``.../testset``)."""
    if any(p.testset is not None for p in spec.phases):
        raise InvalidInputError("over the API, upload each phase's test set to "
                                "/api/challenges/{slug}/phases/{phase}/testset (server paths are not accepted)")
    ch = service.create_challenge(session, parse_spec(spec.model_dump()), user)
    session.flush()
    return views.challenge_out(session, ch, user)


@router.get("/challenges/{slug}", response_model=ChallengeOut)
def get_challenge(slug: str, session: DbSession, user: CurrentUser) -> ChallengeOut:
    """A challenge: rules, phases (dates, limits, ranking), your team and quota."""
    return views.challenge_out(session, service.get_challenge(session, slug, user), user)


@router.patch("/challenges/{slug}", response_model=ChallengeOut, dependencies=[CsrfProtect])
def update_challenge(slug: str, body: ChallengeUpdate, user: RequireUser, session: DbSession) -> ChallengeOut:
    """Change a challenge's texts or visibility (its host)."""
    ch = service.get_challenge(session, slug, user)
    service.require_host_of(ch, user)
    for field, value in body.model_dump(exclude_none=True).items():
        setattr(ch, field, value)
    return views.challenge_out(session, ch, user)


@router.put("/challenges/{slug}/phases/{phase}", response_model=ChallengeOut, dependencies=[CsrfProtect],
            responses={409: {"description": "a scoring rule of a phase with submissions, or a split test set's share"}})
def put_phase(slug: str, phase: str, body: PhaseSpec, user: RequireUser, session: DbSession) -> ChallengeOut:
    """Create or change a phase: dates, limits, counting, ranking (its host). The test set is separate."""
    ch = service.get_challenge(session, slug, user)
    service.require_host_of(ch, user)
    if body.slug != phase:
        raise InvalidInputError(f"the body's slug {body.slug!r} differs from the path's {phase!r}")
    if body.testset is not None:
        raise InvalidInputError("upload the test set to .../testset")
    try:
        ph = service.get_phase(ch, phase)
    except NotFoundError:  # a new phase
        from .models import Phase

        ph = Phase(challenge=ch, slug=phase)
        session.add(ph)
    service.check_phase_edit(session, ph, body)
    service.apply_phase(ph, body)
    session.flush()
    session.refresh(ch)
    return views.challenge_out(session, ch, user)


# -- test sets -------------------------------------------------------------------------------------
@router.post("/challenges/{slug}/phases/{phase}/testset", response_model=TestSetOut, status_code=201,
             dependencies=[CsrfProtect], responses={409: {"description": "phase has submissions"},
                                                   413: {"description": "upload too large"}})
def upload_testset(request: Request, slug: str, phase: str, user: RequireUser, session: ReadDbSession,
                   file: Annotated[UploadFile, File(description="zip/tar of the D3 test layout or of labelled folders "
                                                                "(real/ + one folder per generator, or real/ + "
                                                                "fake/<generator>/), or an answer key "
                                                                "CSV/JSON (id,label[,generator][,transformed])")],
                   source: Annotated[Literal["auto", "d3-test", "folders", "classes", "labels"], Form()] = "auto",
                   image_format: Annotated[Literal["png", "jpeg", "webp"], Form()] = "png",
                   jpeg_quality: Annotated[int, Form(ge=1, le=100)] = 95,
                   resize: Annotated[int | None, Form(ge=16, le=4096)] = None,
                   transform: Annotated[str, Form(max_length=200)] = "",
                   seed: Annotated[int, Form(ge=0, le=2**31)] = 0) -> TestSetOut:
    """Import a phase's hidden test set from an upload (its host); replaces the old one until submissions exist."""
    from ..evaluate.datasets import detect_layout
    from .testsets import collect

    ch = service.get_challenge(session, slug, user)
    service.require_host_of(ch, user)
    service.get_phase(ch, phase)
    storage, cs = _storage(request), _cs(request)
    work = storage.folder(service.AREA, "incoming", submissions.new_folder_id())
    try:
        suffix = "".join(Path(file.filename or "upload").suffixes[-2:]).lower()[:12]
        upload = work / ("upload" + suffix)
        write_capped(file.file, upload, int(cs.max_testset_upload_mb * (1 << 20)))
        transforms = [t.strip() for t in transform.split(",") if t.strip()] or None
        if source == "labels" or suffix in (".csv", ".json", ".jsonl"):
            spec = TestSetSpec(source="labels", labels=str(upload), seed=seed)
        else:
            root = work / "x"
            limits = ArchiveLimits(max_files=request.app.state.settings.max_archive_files,
                                   max_total_bytes=int(cs.max_testset_upload_mb * (1 << 20)) * 8)
            extract_archive(upload, root, limits)
            subs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
            if len(subs) == 1 and not (root / "real").is_dir() and not (root / "augm").is_dir() \
                    and not (root / "no_augm").is_dir():
                root = subs[0]  # an archive of one top folder
            layout = detect_layout(root) if source == "auto" else source
            if layout not in ("d3-test", "folders", "classes"):
                raise InvalidInputError(f"the archive holds a {layout!r} layout; expected the D3 test layout "
                                        "{augm,no_augm}/{real,gen_*}, real/ + one folder per generator, or "
                                        "real/ + fake/<generator>/")
            try:
                spec = TestSetSpec(source=layout, path=str(root), transform=transforms, seed=seed)
            except ValidationError as exc:
                raise InvalidInputError(exc.errors()[0]["msg"]) from None
        items = collect(spec)
        session.rollback()  # end the read transaction before the long import
        ts = service.import_testset(request.app.state.db, storage, slug, phase, items, image_format=image_format,
                                    jpeg_quality=jpeg_quality, resize=resize, seed=seed, threads=cs.import_threads,
                                    progress=False)
        return views.testset_out(ts)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@router.get("/challenges/{slug}/phases/{phase}/testset", response_model=TestSetOut)
def get_testset(slug: str, phase: str, user: RequireUser, session: DbSession) -> TestSetOut:
    """The test set's size and make-up per generator and part (its host)."""
    ch = service.get_challenge(session, slug, user)
    service.require_host_of(ch, user)
    return views.testset_out(service.testset_of(session, service.get_phase(ch, phase)))


@router.get("/challenges/{slug}/phases/{phase}/testset/key", response_class=PlainTextResponse,
            responses={200: {"content": {"text/csv": {}}, "description": "id,label,generator,transformed,part"}})
def get_key(request: Request, slug: str, phase: str, user: RequireUser, session: DbSession) -> Response:
    """The answer key as CSV (its host only: e.g. for ``deepsift eval scores --labels``)."""
    import tempfile

    from .testsets import load_key, write_key_csv

    ch = service.get_challenge(session, slug, user)
    service.require_host_of(ch, user)
    ts = service.testset_of(session, service.get_phase(ch, phase))
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "key.csv"
        write_key_csv(load_key(_storage(request).root / ts.folder), out)
        return Response(out.read_text(), media_type="text/csv")


@router.get("/challenges/{slug}/phases/{phase}/download", response_class=FileResponse,
            responses={200: {"content": {"application/zip": {}}, "description": "the unlabelled test images"}})
def download(request: Request, slug: str, phase: str, user: RequireUser, session: DbSession) -> FileResponse:
    """The phase's unlabelled test archive: images with random names, one format, no labels."""
    ch = service.get_challenge(session, slug, user)
    ph = service.get_phase(ch, phase)
    if service.phase_state(ph) == "upcoming" and not service.is_host_of(ch, user):
        raise ConflictError(f"phase {phase!r} opens {ph.starts_at:%Y-%m-%d %H:%M} UTC; its test set is not out yet")
    path = service.archive_path(_storage(request), service.testset_of(session, ph))
    return FileResponse(path, media_type="application/zip", filename=f"{slug}-{phase}-testset.zip")


# -- teams -----------------------------------------------------------------------------------------
@router.post("/challenges/{slug}/teams", response_model=TeamOut, status_code=201, dependencies=[CsrfProtect],
             responses={409: {"description": "name taken or already in a team"}})
def create_team(slug: str, body: TeamCreate, user: RequireUser, session: DbSession) -> TeamOut:
    """Create a team and join it."""
    ch = service.get_challenge(session, slug, user)
    return views.team_out(session, service.create_team(session, ch, user, body.name))


@router.post("/challenges/{slug}/teams/join", response_model=TeamOut, dependencies=[CsrfProtect],
             responses={409: {"description": "already in a team, or the team is full"}})
def join_team(slug: str, body: TeamJoin, user: RequireUser, session: DbSession) -> TeamOut:
    """Join a team with its invite code."""
    ch = service.get_challenge(session, slug, user)
    return views.team_out(session, service.join_team(session, ch, user, body.invite_code))


@router.get("/challenges/{slug}/team", response_model=TeamOut)
def my_team(slug: str, user: RequireUser, session: DbSession) -> TeamOut:
    """The caller's team in this challenge."""
    ch = service.get_challenge(session, slug, user)
    team = service.team_of(session, ch, user)
    if team is None:
        raise NotFoundError("you are not in a team of this challenge")
    return views.team_out(session, team)


# -- submissions -----------------------------------------------------------------------------------
@router.post("/challenges/{slug}/phases/{phase}/submissions", response_model=SubmissionOut, status_code=201,
             dependencies=[CsrfProtect, Depends(rate_limit("submit", "submit_rate", per_user=True))],
             responses={409: {"description": "phase closed, no team, or quota used up"},
                        413: {"description": "file too large"}})
def submit(request: Request, slug: str, phase: str, user: RequireUser, session: ReadDbSession,
           file: Annotated[UploadFile, File(description="predictions (.csv id,score[,label] / .json / .jsonl) "
                                                        "or an ONNX model (.onnx)")],
           kind: Annotated[Literal["predictions", "model"], Form()] = "predictions",
           note: Annotated[str, Form(max_length=200)] = "",
           preprocessing: Annotated[str, Form(max_length=10_000, description="model only: preprocessing spec "
                                                                               "JSON (input_size, mean, std, crop, "
                                                                               "output...)")] = "",
           idempotency_key: Annotated[str | None, Header(max_length=64, description="a retried request with the same "
                                                     "key returns the first one's submission")] = None,
           method_name: Annotated[str, Form(max_length=100, description="the method's name, shown on the boards")] = "",
           method_description: Annotated[str, Form(max_length=1000, description="a short description")] = "",
           method_url: Annotated[str, Form(max_length=500, description="http(s) link to the paper or code")] = "",
           public: Annotated[bool, Form(description="show it on the boards (your team's counting entry is "
                                                    "picked among the shown ones)")] = True) -> SubmissionOut:
    """Submit predictions or a model. The file is checked first: a bad one is refused (422) and not counted."""
    from . import moderation
    from .predictions import check_suffix

    entry = moderation.check_entry(method_name, method_description, method_url)
    moderation.check_not_disqualified(service.team_of(session, service.get_challenge(session, slug, user), user))
    session.rollback()  # no read transaction held over the upload
    cs = _cs(request)
    if kind == "predictions":
        check_suffix(file.filename or "")
    cap = cs.max_predictions_mb if kind == "predictions" else cs.max_model_mb
    storage = _storage(request)
    upload = submissions.prepare_upload(storage, file.file, file.filename or "upload", int(cap * (1 << 20)))
    sub = submissions.submit(request.app.state.db, storage, user=user, challenge_slug=slug, phase_slug=phase, kind=kind,
                         upload=upload, filename=file.filename or "upload", note=note,
                         preprocessing=preprocessing or None, client_key=idempotency_key,
                         max_queued=cs.max_queued_per_team)
    if any(entry.values()) or not public:
        with request.app.state.db.session(write=True) as w:
            row = w.get(Submission, sub.id)
            for k, v in entry.items():
                setattr(row, k, v)
            row.public = public  # type: ignore[union-attr]
    session.rollback()  # a fresh read: the description just written, and a worker may have it already
    return views.submission_out(session, session.get(Submission, sub.id), user)


@router.get("/challenges/{slug}/phases/{phase}/submissions", response_model=list[SubmissionOut])
def list_submissions(slug: str, phase: str, user: RequireUser, session: DbSession,
                     all_teams: Annotated[bool, Query(alias="all", description="every team's (host only)")] = False
                     ) -> list[SubmissionOut]:
    """Your team's submissions in a phase, newest first (hosts: ``all=true`` for every team's)."""
    ch = service.get_challenge(session, slug, user)
    ph = service.get_phase(ch, phase)
    if all_teams:
        service.require_host_of(ch, user)
        subs = submissions.all_submissions(session, ph)
    else:
        team = service.team_of(session, ch, user)
        subs = submissions.team_submissions(session, ph, team) if team else []
    return [views.submission_out(session, s, user) for s in subs]


@router.get("/submissions/{sid}", response_model=SubmissionOut)
def get_submission(sid: str, user: RequireUser, session: DbSession) -> SubmissionOut:
    """One submission: state, queue position, timings, scores you may see, events."""
    return views.submission_out(session, submissions.get_submission(session, sid, user), user, events=True)


@router.get("/submissions/{sid}/file", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}, "description": "the uploaded file"}})
def submission_file(request: Request, sid: str, user: RequireUser, session: DbSession) -> FileResponse:
    """The submitted file (its team and the host)."""
    sub = submissions.get_submission(session, sid, user)
    return FileResponse(submissions.submission_file(_storage(request), sub), media_type="application/octet-stream",
                        filename=sub.filename)


@router.post("/submissions/{sid}/requeue", response_model=SubmissionOut, dependencies=[CsrfProtect])
def requeue(sid: str, user: RequireUser, session: DbSession) -> SubmissionOut:
    """Score a submission again from scratch (the challenge's host)."""
    from . import queue

    sub = submissions.get_submission(session, sid, user)
    service.require_host_of(sub.phase.challenge, user)
    queue.requeue(session, sub, user.username)
    session.flush()
    return views.submission_out(session, sub, user)


@router.post("/submissions/{sid}/baseline", response_model=SubmissionOut, dependencies=[CsrfProtect])
def mark_baseline(sid: str, body: BaselineMark, user: RequireUser, session: DbSession) -> SubmissionOut:
    """Show a submission on the boards as a baseline, never ranked (the challenge's host), or undo it."""
    sub = submissions.get_submission(session, sid, user)
    service.require_host_of(sub.phase.challenge, user)
    sub.baseline = body.baseline
    session.flush()
    return views.submission_out(session, sub, user)


@router.get("/queue", response_model=QueueHealth)
def queue_health(session: DbSession) -> QueueHealth:
    """The scoring queue now (counts only): is anything stuck?"""
    from . import queue

    return QueueHealth(**queue.health(session))


# -- leaderboards ----------------------------------------------------------------------------------
@router.get("/challenges/{slug}/phases/{phase}/leaderboard", response_model=Leaderboard,
            responses={200: {"content": {"text/csv": {}}}})
def leaderboard(slug: str, phase: str, session: DbSession, user: CurrentUser,
                part: Annotated[Literal["public", "private"], Query()] = "public",
                sort: Annotated[str | None, Query(max_length=20, description="any metric column")] = None,
                order: Annotated[Literal["asc", "desc"] | None, Query()] = None,
                format: Annotated[Literal["json", "csv"], Query()] = "json") -> Response | dict:
    """The leaderboard: the public part live; the private part after the phase ends. No login needed."""
    ch = service.get_challenge(session, slug, user)
    board = lb.build(session, service.get_phase(ch, phase), part=part, sort=sort, order=order, user=user)
    if format == "csv":
        return Response(lb.to_csv(board), media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{slug}-{phase}-{part}.csv"'})
    return board
