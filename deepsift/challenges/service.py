"""The platform's rules, free of FastAPI: challenges, phases, test sets, teams, quotas, submissions, visibility.

Who sees what (checked on every read, ids are random and never enough on their own):

* a challenge's host sees everything of it; other users see published challenges only;
* a team's submissions, files and scores are seen by its members and the host, nobody else;
* public-part scores and the public leaderboard are live; private-part scores (and the ``all``
  part) only after the phase ends (hosts: always); labels never leave the server.

Submissions, quotas and their visibility: :mod:`deepsift.challenges.submissions`.
"""
from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path
from typing import Iterable

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..exceptions import ConflictError, ForbiddenError, InvalidInputError, NotFoundError
from ..server.db import Database, new_id, utcnow
from ..server.models import User
from ..server.storage import Storage
from .models import Challenge, Phase, Submission, Team, TeamMember, TestSet
from .spec import ChallengeSpec, PhaseSpec
from .testsets import ARCHIVE_FILE, ImportResult, Item, build_testset, load_key

TEAM_NAME = re.compile(r"^[\w][\w .-]{1,58}[\w.]$")
SCRIPT_MIXES = ({"LATIN", "CJK", "HIRAGANA", "KATAKANA"}, {"LATIN", "CJK", "HANGUL"}, {"LATIN", "CJK", "BOPOMOFO"})
"""Scripts one team name may mix (Unicode's "highly restrictive" profile); any other mix, such as a Cyrillic
"е" inside "Team A", is how a team would pass itself off as another on the boards."""


def scripts_of(name: str) -> set[str]:
    """The scripts of the letters of ``name`` (the first word of each letter's Unicode name: LATIN, CYRILLIC, ...)."""
    import unicodedata

    out = set()
    for ch in name:
        if ch.isalpha():
            word = unicodedata.name(ch, "UNKNOWN").split()[0]
            out.add("KATAKANA" if word.startswith("KATAKANA") else word)
    return out


def team_name(raw: str) -> str:
    """A team name as stored: NFKC-normalised, spaces collapsed; InvalidInputError unless valid and of one script."""
    import unicodedata

    name = " ".join(unicodedata.normalize("NFKC", raw or "").split())
    if not TEAM_NAME.match(name):
        raise InvalidInputError("a team name is 3-60 letters, digits, spaces, '.', '-' or '_'")
    scripts = scripts_of(name)
    if len(scripts) > 1 and not any(scripts <= mix for mix in SCRIPT_MIXES):
        raise InvalidInputError(f"a team name is written in one script; this one mixes {', '.join(sorted(scripts)).lower()}"
                                " letters (which can make it look like another team's)")
    return name


AREA = "challenges"


# -- challenges and phases -------------------------------------------------------------------------
def create_challenge(session: Session, spec: ChallengeSpec, host: User) -> Challenge:
    """A new challenge with its phases (test sets are imported separately); ConflictError if the slug is taken."""
    if not host.is_host:
        raise ForbiddenError("only hosts create challenges")
    if session.scalar(select(Challenge.id).where(Challenge.slug == spec.slug)):
        raise ConflictError(f"a challenge {spec.slug!r} exists already")
    ch = Challenge(slug=spec.slug, title=spec.title, description=spec.description, rules=spec.rules,
                   host_id=host.id, published=spec.published, max_team_size=spec.max_team_size, created_at=utcnow())
    session.add(ch)
    for ps in spec.phases:
        session.add(_phase_row(ch, ps))
    try:
        session.flush()
    except IntegrityError:
        raise ConflictError(f"a challenge {spec.slug!r} exists already") from None
    return ch


def _phase_row(ch: Challenge, ps: PhaseSpec) -> Phase:
    ph = Phase(challenge=ch, slug=ps.slug)
    apply_phase(ph, ps)
    return ph


def apply_phase(ph: Phase, ps: PhaseSpec) -> None:
    """Copy a phase spec's settings onto a phase row."""
    ph.title = ps.title or ps.slug
    ph.starts_at, ph.ends_at = ps.starts, ps.ends
    ph.max_per_day, ph.max_total = ps.max_per_day, ps.max_total
    ph.counting, ph.ranking_metric, ph.threshold = ps.counting, ps.ranking_metric, ps.threshold
    ph.bootstrap, ph.public_fraction = ps.bootstrap, ps.public_fraction
    ph.allow_predictions, ph.allow_models = "predictions" in ps.submissions, "model" in ps.submissions
    ph.model_time_limit_s, ph.model_memory_mb = ps.model_time_limit_s, ps.model_memory_mb
    ph.train_generators, ph.rank_on = ps.train_generators, ps.rank_on


SCORING_FIELDS = ("ranking_metric", "threshold", "train_generators", "rank_on")
"""Phase settings every score depends on: fixed once the phase has submissions (one rule per board)."""


def check_phase_edit(session: Session, ph: Phase, ps: PhaseSpec) -> None:
    """Refuse (ConflictError) an edit that would leave a board under two rules.

    Once a phase has submissions, its ranking metric, threshold, training generators and ``rank_on``
    are fixed (old scores would stay under the old rule and "best" would pick by a metric they were
    not chosen by); the public share is fixed once the test set is split (a new value would be shown
    but not applied). A ``rank_on`` its test set cannot serve is refused (:func:`check_split`).
    """
    if ph.id is None:
        return
    new = {f: getattr(ps, f) for f in SCORING_FIELDS}
    changed = [f for f in SCORING_FIELDS if getattr(ph, f) != new[f]]
    if changed and session.scalar(select(func.count()).select_from(Submission).where(Submission.phase_id == ph.id)):
        raise ConflictError(f"phase {ph.slug!r} has submissions: its {' and '.join(changed)} can no longer change "
                            "(every score on its boards is under one rule); create a new phase instead")
    if ph.public_fraction != ps.public_fraction and session.scalar(select(TestSet.id).where(TestSet.phase_id == ph.id)):
        raise ConflictError(f"phase {ph.slug!r}'s test set is already split {ph.public_fraction:g} public; the public "
                            "share can change only before the test set is uploaded (create a new phase instead)")
    ts = session.scalar(select(TestSet).where(TestSet.phase_id == ph.id))
    fakes = (ts.summary or {}).get("fake_generators") if ts is not None else None
    if fakes is not None:
        check_split(fakes, ps.train_generators, ps.rank_on, ph.slug)


def check_split(fake_generators: Iterable[str], train: list[str] | None, rank_on: str, phase: str) -> None:
    """Refuse (InvalidInputError) a test set that has no fake of the kind a phase ranks on (rank_on seen/unseen)."""
    if train is None or rank_on == "all":
        return
    fakes = sorted(set(fake_generators))
    kind = [g for g in fakes if (g in train) == (rank_on == "seen")]
    if not kind:
        raise InvalidInputError(
            f"phase {phase!r} ranks on {rank_on} generators, but its test set has none: its generators "
            f"{', '.join(fakes) or '(none)'} are all {'unseen' if rank_on == 'seen' else 'seen'} (train_generators: "
            f"{', '.join(train) or '(none)'}); add images of a{'' if rank_on == 'seen' else 'n'} {rank_on} "
            "generator or change rank_on")


def get_challenge(session: Session, slug: str, user: User | None) -> Challenge:
    """A challenge the caller may see (published, or hosted by them), else NotFoundError."""
    ch = session.scalar(select(Challenge).where(Challenge.slug == slug))
    if ch is None or not (ch.published or is_host_of(ch, user)):
        raise NotFoundError(f"no challenge {slug!r}")
    return ch


def list_challenges(session: Session, user: User | None) -> list[Challenge]:
    """Published challenges, plus the caller's own unpublished ones, newest first."""
    q = select(Challenge).order_by(Challenge.created_at.desc())
    return [c for c in session.scalars(q) if c.published or is_host_of(c, user)]


def is_host_of(ch: Challenge, user: User | None) -> bool:
    """The challenge's host, or an administrator (who hosts every challenge)."""
    return user is not None and user.is_host and (ch.host_id == user.id or user.is_admin)


def require_host_of(ch: Challenge, user: User | None) -> None:
    if not is_host_of(ch, user):
        raise ForbiddenError("only this challenge's host may do this")


def get_phase(ch: Challenge, slug: str) -> Phase:
    for ph in ch.phases:
        if ph.slug == slug:
            return ph
    raise NotFoundError(f"challenge {ch.slug!r} has no phase {slug!r}")


def phase_state(ph: Phase, now: dt.datetime | None = None) -> str:
    """``upcoming``, ``open`` or ``ended``."""
    now = now or utcnow()
    return "upcoming" if now < ph.starts_at else "open" if now < ph.ends_at else "ended"


def private_visible(ph: Phase, user: User | None, now: dt.datetime | None = None) -> bool:
    """May ``user`` see private-part scores of this phase? After the end, or its host at any time."""
    return phase_state(ph, now) == "ended" or is_host_of(ph.challenge, user)


# -- test sets -------------------------------------------------------------------------------------
def testset_folder(storage: Storage, ch: Challenge, ph: Phase) -> Path:
    return storage.folder(AREA, ch.slug, ph.slug)


def import_testset(db: Database, storage: Storage, challenge_slug: str, phase_slug: str, items: list[Item], *,
                   image_format: str = "png", jpeg_quality: int = 95, resize: int | None = None, seed: int = 0,
                   threads: int = 4, progress: bool | None = None) -> TestSet:
    """Build a phase's test set from ``items`` and make it current (the old one is removed afterwards).

    The (slow) build runs outside any transaction; the switch is one short write. ``progress``: a
    progress bar on stderr (None: when stderr is a terminal; a server passes False).
    """
    with db.session() as s:
        ch = s.scalar(select(Challenge).where(Challenge.slug == challenge_slug))
        if ch is None:
            raise NotFoundError(f"no challenge {challenge_slug!r}")
        ph = get_phase(ch, phase_slug)
        fraction = ph.public_fraction
        check_split((it.generator for it in items if it.label == 1), ph.train_generators, ph.rank_on, ph.slug)
    dest = testset_folder(storage, ch, ph) / f"testset-{new_id(6).replace('-', 'x').replace('_', 'y')}"
    result = build_testset(items, dest, image_format=image_format, jpeg_quality=jpeg_quality, resize=resize,
                           public_fraction=fraction, seed=seed, threads=threads, progress=progress)
    old_folder = None
    try:
        with db.session(write=True) as s:
            ph = s.scalar(select(Phase).join(Challenge).where(Challenge.slug == challenge_slug,
                                                               Phase.slug == phase_slug))
            ts = s.scalar(select(TestSet).where(TestSet.phase_id == ph.id))  # type: ignore[union-attr]
            if ts is not None:
                if s.scalar(select(func.count()).select_from(Submission).where(Submission.phase_id == ph.id)):  # type: ignore[union-attr]
                    raise ConflictError("this phase has submissions: its test set can no longer change")
                old_folder = ts.folder
            else:
                ts = TestSet(phase_id=ph.id)  # type: ignore[union-attr]
                s.add(ts)
            _fill_testset(ts, result, storage, image_format if result.has_images else "none")
            s.flush()
            s.expunge(ts)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    if old_folder:
        shutil.rmtree(storage.root / old_folder, ignore_errors=True)
    return ts


def _fill_testset(ts: TestSet, r: ImportResult, storage: Storage, fmt: str) -> None:
    ts.folder = r.folder.relative_to(storage.root).as_posix()
    ts.n_images, ts.n_public, ts.has_images = r.n_images, r.n_public, r.has_images
    ts.image_format, ts.key_sha256 = fmt, r.key_sha256
    ts.archive_sha256, ts.archive_bytes = r.archive_sha256, r.archive_bytes
    ts.summary, ts.created_at = r.summary, utcnow()


def testset_of(session: Session, ph: Phase) -> TestSet:
    ts = session.scalar(select(TestSet).where(TestSet.phase_id == ph.id))
    if ts is None:
        raise ConflictError(f"phase {ph.slug!r} has no test set yet")
    return ts


def archive_path(storage: Storage, ts: TestSet) -> Path:
    """The participants' archive of a test set (NotFoundError when it has no images)."""
    if not ts.has_images:
        raise NotFoundError("this phase's test set has no images to download (an answer key only)")
    return storage.root / ts.folder / ARCHIVE_FILE


# -- teams -----------------------------------------------------------------------------------------
def team_of(session: Session, ch: Challenge, user: User | None) -> Team | None:
    """The caller's team in a challenge, or None."""
    if user is None:
        return None
    return session.scalar(select(Team).join(TeamMember).where(TeamMember.challenge_id == ch.id,
                                                              TeamMember.user_id == user.id))


def create_team(session: Session, ch: Challenge, user: User, name: str) -> Team:
    """A new team with ``user`` as its first member; ConflictError if taken or already in a team."""
    name = team_name(name)
    if team_of(session, ch, user) is not None:
        raise ConflictError("you are already in a team of this challenge")
    if session.scalar(select(Team.id).where(Team.challenge_id == ch.id, func.lower(Team.name) == name.lower())):
        raise ConflictError(f"a team named {name!r} exists in this challenge")
    team = Team(challenge_id=ch.id, name=name, invite_code=new_id(12), created_at=utcnow(), captain_id=user.id)
    try:  # a concurrent create or join of the same user, or the same name, loses here: 409, not 500
        with session.begin_nested():
            session.add(team)
            session.flush()
            session.add(TeamMember(team_id=team.id, challenge_id=ch.id, user_id=user.id, joined_at=utcnow()))
            session.flush()
    except IntegrityError:
        raise ConflictError("you are already in a team of this challenge, or the name is taken") from None
    return team


def join_team(session: Session, ch: Challenge, user: User, code: str) -> Team:
    """Join the team whose invite code is ``code``.

    The team row is locked first (``SELECT ... FOR UPDATE``, as ``submit`` does), so concurrent joins
    of one team are counted one after the other and never pass its size cap; a concurrent join of
    the same user to another team hits the one-team-per-challenge constraint: 409, not 500.
    """
    if team_of(session, ch, user) is not None:
        raise ConflictError("you are already in a team of this challenge")
    team = session.scalar(select(Team).where(Team.challenge_id == ch.id, Team.invite_code == (code or "").strip())
                          .with_for_update())
    if team is None:
        raise NotFoundError("no team of this challenge has that invite code")
    members = session.scalar(select(func.count()).select_from(TeamMember).where(TeamMember.team_id == team.id)) or 0
    if members >= ch.max_team_size:
        raise ConflictError(f"the team is full ({ch.max_team_size} members)")
    try:
        with session.begin_nested():
            session.add(TeamMember(team_id=team.id, challenge_id=ch.id, user_id=user.id, joined_at=utcnow()))
            session.flush()
    except IntegrityError:
        raise ConflictError("you are already in a team of this challenge") from None
    session.expire(team, ["members"])
    return team


def member_names(session: Session, team: Team) -> list[str]:
    return list(session.scalars(select(User.username).join(TeamMember, TeamMember.user_id == User.id)
                                .where(TeamMember.team_id == team.id).order_by(User.username)))


def warm_keys(db: Database, storage: Storage) -> int:
    """Load the answer keys of open and upcoming phases into this process's cache (first scores come faster)."""
    now = utcnow()
    with db.session() as s:
        folders = s.scalars(select(TestSet.folder).join(Phase, Phase.id == TestSet.phase_id)
                            .where(Phase.ends_at > now)).all()
    n = 0
    for folder in folders[:8]:
        try:
            load_key(storage.root / folder)
            n += 1
        except Exception:  # noqa: BLE001 - best effort: a real request reports a real error
            pass
    return n
