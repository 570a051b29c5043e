"""Submissions: quotas, uploads, the accept path (check, validate, queue), and who may see which.

A submission is accepted in one short write after its file was checked; a refused file leaves
nothing behind. Quotas count a team's queued, running and scored submissions in a phase (failed
runs are refunded, unless stopped at their time or memory limit: :func:`.models.counted`); per day
means per UTC calendar day. A team has at most N jobs waiting at once (:func:`.queue.check_backlog`).
A submission is seen by its team's members and the challenge's host only; private-part scores
only after the phase ends.
"""
from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..exceptions import ConflictError, InvalidInputError, NotFoundError
from ..server.db import Database, new_id, utcnow
from ..server.models import User
from ..server.storage import Storage, file_sha256, write_capped
from . import predictions, queue
from .models import Phase, Submission, SubmissionEvent, Team, TeamMember, counted
from .sandbox import parse_preprocessing
from .service import AREA, get_challenge, get_phase, is_host_of, phase_state, private_visible, team_of, testset_of
from .testsets import load_key


def quota(session: Session, ph: Phase, team: Team, now: dt.datetime | None = None) -> dict[str, int | None]:
    """Used and remaining submissions of a team in a phase (today = this UTC day); None = unlimited."""
    now = now or utcnow()
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    base = select(func.count()).select_from(Submission).where(
        Submission.phase_id == ph.id, Submission.team_id == team.id, counted())
    total = int(session.scalar(base) or 0)
    today = int(session.scalar(base.where(Submission.created_at >= day)) or 0)
    left = [x for x in ((ph.max_per_day - today) if ph.max_per_day else None,
                        (ph.max_total - total) if ph.max_total else None) if x is not None]
    return {"used_today": today, "used_total": total, "max_per_day": ph.max_per_day, "max_total": ph.max_total,
            "left": max(min(left), 0) if left else None}


def new_folder_id() -> str:
    """A random id that is also a safe folder name (starts with a letter)."""
    return "u" + new_id(12).replace("-", "x").replace("_", "y")


def prepare_upload(storage: Storage, stream: BinaryIO, filename: str, max_bytes: int) -> Path:
    """Store an upload as ``<new private folder>/upload<ext>`` (byte cap enforced while copying)."""
    folder = storage.folder(AREA, "uploads", new_folder_id())
    suffix = Path(filename or "").suffix.lower()
    if not re.fullmatch(r"\.[a-z0-9]{1,8}", suffix):
        suffix = ""
    dest = folder / f"upload{suffix}"
    try:
        write_capped(stream, dest, max_bytes)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return dest


def submit(db: Database, storage: Storage, *, user: User, challenge_slug: str, phase_slug: str, kind: str,
           upload: Path, filename: str, note: str = "", preprocessing: Any = None, client_key: str | None = None,
           now: dt.datetime | None = None, max_queued: int | None = None) -> Submission:
    """Accept a submission: checks, validation of the file, quota, then one short write that queues it.

    ``upload`` is the stored file (in its own private folder, which becomes the submission's).
    Nothing is created when any check fails (the folder is removed). ``client_key`` (the client's
    Idempotency-Key): a retried request returns the submission the first one created.
    """
    if "\x00" in f"{note}{filename}{preprocessing or ''}":
        shutil.rmtree(upload.parent, ignore_errors=True)
        raise InvalidInputError("text cannot contain NUL characters")
    if client_key is not None and not re.fullmatch(r"[A-Za-z0-9._:-]{8,64}", client_key):
        shutil.rmtree(upload.parent, ignore_errors=True)
        raise InvalidInputError("Idempotency-Key: 8-64 letters, digits, '.', '_', ':' or '-'")
    try:
        with db.session() as s:
            ch = get_challenge(s, challenge_slug, user)
            ph = get_phase(ch, phase_slug)
            team = team_of(s, ch, user)
            if team is not None and client_key is not None:
                earlier = s.scalar(select(Submission).where(Submission.team_id == team.id,
                                                            Submission.client_key == client_key))
                if earlier is not None:
                    shutil.rmtree(upload.parent, ignore_errors=True)
                    s.expunge(earlier)
                    return earlier
            _check_open(ph, user, now)
            if team is None:
                raise ConflictError("join or create a team of this challenge before submitting")
            ts = testset_of(s, ph)
            ph_id, team_id, ts_folder = ph.id, team.id, ts.folder
            spec: dict | None = None
            if kind == "predictions":
                if not ph.allow_predictions:
                    raise ConflictError("this phase takes models, not predictions")
            elif kind == "model":
                if not ph.allow_models:
                    raise ConflictError("this phase takes predictions, not models")
                if not ts.has_images:
                    raise ConflictError("this phase's test set has no images to run a model on")
                spec = parse_preprocessing(preprocessing).model_dump(mode="json")
                _check_onnx_header(upload, filename)
            else:
                raise InvalidInputError("kind is 'predictions' or 'model'")
            q = quota(s, ph, team, now)
            if q["left"] == 0:
                raise ConflictError(_quota_message(q))
        if kind == "predictions":  # parsed with no transaction open (a large file takes seconds)
            aligned = predictions.validate(upload, load_key(storage.root / ts_folder), filename)
            predictions.save_aligned(aligned, upload.parent / predictions.ALIGNED_FILE)

        def tx(w: Session) -> Submission:
            t = w.scalar(select(Team).where(Team.id == team_id).with_for_update())  # serialise a team's submits
            ph2 = w.get(Phase, ph_id)
            q2 = quota(w, ph2, t, now)  # type: ignore[arg-type]
            if q2["left"] == 0:
                raise ConflictError(_quota_message(q2))
            queue.check_backlog(w, team_id, max_queued)  # a team's waiting jobs are capped (fair queue)
            stamp = now or utcnow()
            sub = Submission(id=upload.parent.name, phase_id=ph_id, team_id=team_id, user_id=user.id, kind=kind,
                             note=(note or "")[:200], client_key=client_key,
                             filename=Path(filename or "upload").name[:200],
                             file_path=upload.relative_to(storage.root).as_posix(),
                             file_sha256=file_sha256(upload), file_bytes=upload.stat().st_size, spec=spec,
                             state="queued", created_at=stamp, queued_at=stamp,
                             late=stamp >= ph2.ends_at)  # only a host gets past _check_open then
            w.add(sub)
            w.flush()
            w.add(SubmissionEvent(submission_id=sub.id, at=stamp, state="queued", detail=f"by {user.username}"))
            w.flush()
            w.expunge(sub)
            return sub

        try:
            return db.run(tx, write=True, retries=3)
        except IntegrityError:  # the same Idempotency-Key raced in: the first one wins
            if client_key is None:
                raise
            with db.session() as s:
                earlier = s.scalar(select(Submission).where(Submission.team_id == team_id,
                                                            Submission.client_key == client_key))
                if earlier is None:
                    raise
                s.expunge(earlier)
            shutil.rmtree(upload.parent, ignore_errors=True)
            return earlier
    except BaseException:
        shutil.rmtree(upload.parent, ignore_errors=True)
        raise


def _check_open(ph: Phase, user: User, now: dt.datetime | None) -> None:
    state = phase_state(ph, now)
    if state != "open" and not is_host_of(ph.challenge, user):
        when = ph.starts_at if state == "upcoming" else ph.ends_at
        raise ConflictError(f"phase {ph.slug!r} is {'not open yet: it opens' if state == 'upcoming' else 'closed: it ended'} "
                            f"{when:%Y-%m-%d %H:%M} UTC")


def _check_onnx_header(path: Path, filename: str) -> None:
    """A cheap look at an uploaded model: non-empty and not obviously something else (the sandbox checks the rest)."""
    if Path(filename or "").suffix.lower() != ".onnx":
        raise InvalidInputError(f"{filename}: a model is an .onnx file")
    with open(path, "rb") as fh:
        head = fh.read(16)
    if len(head) < 8 or head[0] not in ONNX_FIRST_TAGS:
        raise InvalidInputError(f"{filename}: not an ONNX model (the file does not start like one)")


ONNX_FIRST_TAGS = frozenset({0x08, 0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72, 0xA2, 0xCA, 0xD2})
"""Protobuf tags that can open an ONNX ModelProto (fields 1-8, 14, 20, 25, 26 with their wire types)."""


def _quota_message(q: dict) -> str:
    if q["max_total"] is not None and q["used_total"] >= q["max_total"]:
        return (f"submission limit reached: {q['used_total']} of {q['max_total']} for this phase ({REFUND_NOTE})")
    return f"daily submission limit reached: {q['used_today']} of {q['max_per_day']} today (UTC; {REFUND_NOTE})"


REFUND_NOTE = "failed runs do not count, unless stopped at their time or memory limit"


def get_submission(session: Session, sid: str, user: User | None) -> Submission:
    """A submission the caller may see (its team's members and the challenge's host), else NotFoundError."""
    sub = session.get(Submission, sid)
    if sub is None or not can_see_submission(session, sub, user):
        raise NotFoundError("no such submission")
    return sub


def can_see_submission(session: Session, sub: Submission, user: User | None) -> bool:
    if user is None:
        return False
    ch = sub.phase.challenge
    if is_host_of(ch, user):
        return True
    return bool(session.scalar(select(TeamMember.id).where(TeamMember.team_id == sub.team_id,
                                                           TeamMember.user_id == user.id)))


def team_submissions(session: Session, ph: Phase, team: Team) -> list[Submission]:
    return list(session.scalars(select(Submission).where(Submission.phase_id == ph.id, Submission.team_id == team.id)
                                .order_by(Submission.created_at.desc())))


def all_submissions(session: Session, ph: Phase) -> list[Submission]:
    return list(session.scalars(select(Submission).where(Submission.phase_id == ph.id)
                                .order_by(Submission.created_at.desc())))


def events(session: Session, sub: Submission) -> list[SubmissionEvent]:
    return list(session.scalars(select(SubmissionEvent).where(SubmissionEvent.submission_id == sub.id)
                                .order_by(SubmissionEvent.at, SubmissionEvent.id)))


def scores_for(sub: Submission, user: User | None, now: dt.datetime | None = None) -> dict | None:
    """The submission's scores as ``user`` may see them: the private and ``all`` parts removed until the end."""
    if sub.scores is None:
        return None
    out = dict(sub.scores)
    if not private_visible(sub.phase, user, now):
        for part in ("private", "all"):
            out.pop(part, None)
        out["private_hidden_until"] = sub.phase.ends_at.isoformat()
    return out


def submission_file(storage: Storage, sub: Submission) -> Path:
    p = (storage.root / sub.file_path).resolve()
    if storage.root.resolve() not in p.parents or not p.is_file():
        raise NotFoundError("the file of this submission is gone")
    return p
