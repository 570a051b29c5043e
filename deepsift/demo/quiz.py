"""The quiz, "Can you beat the detector?": rounds from a labelled dataset, guess first, then the truth.

A round is one row (:class:`~deepsift.demo.models.QuizRound`) holding the image's truth and the
detector's answer from the start; the guess is stored by one conditional update
(``WHERE id = ? AND guess IS NULL``) and only the request whose update took the row hears the
truth. A round cannot be answered twice, and unanswered rounds expire (``quiz_round_ttl``).

Every image is served the same way whatever its source: a square JPEG of ``quiz_image_size``
pixels, no metadata, no file name, cut from a slightly different square each round, so neither
format, size, compression nor a remembered pixel hash gives the answer away.

Visitors are a random cookie value, stored hashed. The public statistics resist stuffing: only a
visitor's first answer on an image counts, each visitor weighs the same (people's accuracy is the
mean of the visitors' accuracies, and the number of visitors is published), and one address may
start only so many rounds and new visitors an hour.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import random
import secrets
import threading
from typing import Any

from sqlalchemy import Float, case, cast, delete, func, select, update
from sqlalchemy.orm import Session

from ..exceptions import ConflictError, NotFoundError, RateLimitedError, ServiceError
from ..server.db import Database, utcnow
from .models import QuizRound
from .settings import DemoSettings

VISITOR_COOKIE = "deepsift_quiz"
_rng = secrets.SystemRandom()


class QuizUnavailable(ServiceError):
    """No quiz dataset is configured, or it cannot be read."""

    status_code = 503


class QuizSet:
    """The quiz images (any :mod:`deepsift.evaluate.datasets` layout), read once, looked up by id."""

    def __init__(self, settings: DemoSettings) -> None:
        self.settings = settings
        self._samples: dict[str, Any] | None = None
        self._by_label: dict[int, list[str]] = {}
        self._lock = threading.Lock()
        self._answers: dict[str, tuple[int, float] | None] = {}
        self._salt = secrets.token_bytes(16)  # the per-round crop cannot be computed from the round id

    def samples(self) -> dict[str, Any]:
        """Samples by id (loaded on first use); QuizUnavailable when none is configured or readable."""
        if self._samples is None:
            with self._lock:
                if self._samples is None:
                    s = self.settings
                    if not s.quiz_dataset:
                        raise QuizUnavailable("no quiz dataset is configured (set DEEPSIFT_DEMO_QUIZ_DATASET to "
                                              "labelled folders, a D3 test folder or D3 shards)")
                    from ..evaluate.datasets import load_eval_set
                    from ..exceptions import DeepsiftError

                    try:
                        ev = load_eval_set(s.quiz_dataset, s.quiz_layout, s.quiz_real)
                    except DeepsiftError as exc:
                        raise QuizUnavailable(f"the quiz dataset cannot be read: {exc}") from None
                    samples = {smp.id: smp for smp in ev.samples}
                    self._by_label = {lab: [k for k, v in samples.items() if v.label == lab] for lab in (0, 1)}
                    self._samples = samples
        return self._samples

    def pick(self) -> Any:
        """A random sample: real or fake with even odds (when both exist), then uniformly within."""
        self.samples()
        labels = [lab for lab in (0, 1) if self._by_label.get(lab)]
        return self.samples()[_rng.choice(self._by_label[_rng.choice(labels)])]

    def image_jpeg(self, item: str, round_id: str, size: int, max_pixels: int) -> bytes:
        """The sample as every quiz image is served: a ``size`` px square JPEG, no metadata, its square
        cut a little differently for each round (so real and fake files look alike and no hash replays)."""
        from PIL import Image

        from ..images import decode_image

        smp = self.samples().get(item)
        if smp is None:
            raise NotFoundError("this quiz image is no longer available")
        image = decode_image(smp.source, max_pixels=max_pixels)
        w, h = image.size
        rng = random.Random(hashlib.sha256(self._salt + round_id.encode()).digest())
        side = min(w, h) * rng.uniform(0.88, 0.96)
        x, y = rng.uniform(0, w - side), rng.uniform(0, h - side)
        square = image.resize((size, size), Image.LANCZOS, box=(x, y, x + side, y + side))
        buf = io.BytesIO()
        square.save(buf, "JPEG", quality=88, subsampling="4:2:0")
        return buf.getvalue()

    def answer(self, item: str, engine: Any) -> tuple[int, float] | None:
        """The detector's (label, P(fake)) on the sample, computed once per process."""
        if item not in self._answers:
            self._remember(item, engine.analyse([self._decoded(item, engine)])[0])
        return self._answers[item]

    async def aanswer(self, item: str, engine: Any, bounds: Any) -> tuple[int, float] | None:
        """:meth:`answer` for async code: decoded on the demo's pool, the pass awaited without holding a thread."""
        if item not in self._answers:
            decoded = await bounds.run(self._decoded, item, engine)
            self._remember(item, (await engine.aanalyse([decoded]))[0])
        return self._answers[item]

    def _decoded(self, item: str, engine: Any) -> Any:
        from .inputs import Decoded
        from ..images import decode_image

        image = decode_image(self.samples()[item].source, max_pixels=engine.settings.max_pixels)
        return Decoded.from_image(item, image, engine.detector().preprocessing)

    def _remember(self, item: str, r: dict) -> None:
        self._answers[item] = None if r["label"] is None else (int(r["label"]), float(r["probability"]))


def visitor_hash(visitor: str) -> str:
    """How a visitor's cookie value is stored (never the value itself)."""
    return hashlib.sha256(visitor.encode()).hexdigest()


def new_visitor() -> str:
    """A new random visitor id (the quiz cookie's value)."""
    return secrets.token_urlsafe(18)


def admit(limiter: Any, address: str, settings: DemoSettings, new: bool) -> None:
    """Count a new round (and a new visitor) against the address's hourly limits; RateLimitedError beyond."""
    key = "ip:" + hashlib.sha256(address.encode()).hexdigest()[:32]
    checks = [("quiz-visitors", settings.quiz_new_visitors_per_hour, "new players")] if new else []
    for scope, limit, what in checks + [("quiz-rounds", settings.quiz_rounds_per_hour, "rounds")]:
        wait = limiter.hit(scope, key, limit, 3600.0)
        if wait:
            raise RateLimitedError(f"Too many quiz {what} from your network in the last hour (at most {limit}); "
                                   f"please come back in {max(1, round(wait / 60))} min.", retry_after=wait)


def expire(s: Session, ttl: float) -> int:
    """Delete the unanswered rounds older than ``ttl`` seconds; how many."""
    cutoff = utcnow() - dt.timedelta(seconds=ttl)
    done = s.execute(delete(QuizRound).where(QuizRound.guess.is_(None), QuizRound.created_at < cutoff)
                     .execution_options(synchronize_session=False))
    return int(done.rowcount or 0)


def start_round(db: Database, quiz: QuizSet, engine: Any, visitor: str, ttl: float = 900.0) -> QuizRound:
    """Pick an image, get the detector's answer, store the round (truth hidden from the client);
    expired unanswered rounds are cleared on the way."""
    smp = quiz.pick()
    return store_round(db, smp, quiz.answer(smp.id, engine), visitor, ttl)


def store_round(db: Database, smp: Any, ans: tuple[int, float] | None, visitor: str, ttl: float = 900.0) -> QuizRound:
    """Store a round of sample ``smp`` with the detector's answer ``ans``; expired unanswered rounds go."""
    def add(s: Session) -> QuizRound:
        expire(s, ttl)
        row = QuizRound(visitor_hash=visitor_hash(visitor), item=smp.id, generator=smp.generator, truth=smp.label,
                        detector_label=ans[0] if ans else None, detector_probability=ans[1] if ans else None)
        s.add(row)
        s.flush()
        return row

    return db.run(add)


def get_round(s: Session, round_id: str) -> QuizRound:
    """The round with this id, or NotFoundError."""
    row = s.get(QuizRound, round_id)
    if row is None:
        raise NotFoundError("no such quiz round")
    return row


def guess(db: Database, round_id: str, visitor: str | None, label: int, ttl: float = 900.0) -> QuizRound:
    """Store the guess once (conditional update); then, and only then, the row with its truth.

    The guess counts in the public statistics only if it is the visitor's first on this image.
    """
    def store(s: Session) -> QuizRound:
        row = get_round(s, round_id)
        if visitor is None or row.visitor_hash != visitor_hash(visitor):
            raise NotFoundError("no such quiz round")  # someone else's round looks like none at all
        if row.guess is None and row.created_at < utcnow() - dt.timedelta(seconds=ttl):
            raise ConflictError("this round has expired: start a new one")
        done = s.execute(update(QuizRound).where(QuizRound.id == round_id, QuizRound.guess.is_(None))
                         .values(guess=label, answered_at=utcnow()).execution_options(synchronize_session=False))
        if done.rowcount != 1:
            raise ConflictError("this round was already answered: start a new one")
        seen = s.execute(select(func.count()).where(QuizRound.visitor_hash == row.visitor_hash,
                                                    QuizRound.item == row.item, QuizRound.counted.is_(True))).scalar()
        if not seen:
            s.execute(update(QuizRound).where(QuizRound.id == round_id).values(counted=True)
                      .execution_options(synchronize_session=False))
        s.refresh(row)
        return row

    return db.run(store)


def tally(s: Session, visitor: str | None) -> dict[str, int]:
    """The visitor's running tally: rounds answered, right guesses, detector's right answers."""
    if visitor is None:
        return {"rounds": 0, "you": 0, "detector": 0}
    q = select(func.count(), func.sum(case((QuizRound.guess == QuizRound.truth, 1), else_=0)),
               func.sum(case((QuizRound.detector_label == QuizRound.truth, 1), else_=0))) \
        .where(QuizRound.visitor_hash == visitor_hash(visitor), QuizRound.guess.is_not(None))
    n, you, det = s.execute(q).one()
    return {"rounds": int(n or 0), "you": int(you or 0), "detector": int(det or 0)}


def statistics(s: Session) -> list[dict[str, Any]]:
    """Per generator ('real' included): visitors, counted rounds, right answers, and accuracies.

    Only each visitor's first answer per image counts, and people's accuracy is the mean of each
    visitor's own accuracy: one visitor, however many rounds they play, moves it by at most
    1 / visitors. The detector's accuracy is over the counted rounds.
    """
    right = case((QuizRound.guess == QuizRound.truth, 1), else_=0)
    det_right = case((QuizRound.detector_label == QuizRound.truth, 1), else_=0)
    per = select(QuizRound.generator.label("gen"), func.count().label("n"), func.sum(right).label("right"),
                 func.sum(det_right).label("det")) \
        .where(QuizRound.counted.is_(True)).group_by(QuizRound.generator, QuizRound.visitor_hash).subquery()
    q = select(per.c.gen, func.count(), func.sum(per.c.n), func.sum(per.c.right), func.sum(per.c.det),
               func.avg(cast(per.c.right, Float) / per.c.n)).group_by(per.c.gen).order_by(per.c.gen)
    out = []
    for gen, visitors, n, people, det, mean in s.execute(q).all():
        n, people, det = int(n), int(people or 0), int(det or 0)
        out.append({"generator": gen, "visitors": int(visitors), "rounds": n, "people_right": people,
                    "detector_right": det, "people_accuracy": float(mean) if mean is not None else None,
                    "detector_accuracy": det / n if n else None})
    return out
