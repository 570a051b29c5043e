"""The quiz, "Can you beat the detector?": rounds from a labelled dataset, guess first, then the truth.

A round is one row (:class:`~deepsift.demo.models.QuizRound`) holding the image's truth and the
detector's answer from the start; the guess is stored by one conditional update
(``WHERE id = ? AND guess IS NULL``) and only the request whose update took the row hears the
truth. A round cannot be answered twice, and the image a round serves is re-encoded without
metadata or a file name, so neither gives the answer away. Visitors are a random cookie value,
stored hashed; the aggregate statistics are one ``GROUP BY`` over the rounds.
"""
from __future__ import annotations

import hashlib
import io
import secrets
import threading
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from ..exceptions import ConflictError, NotFoundError, ServiceError
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

    def image_png(self, item: str, max_pixels: int) -> bytes:
        """The sample's pixels re-encoded as PNG: no metadata, no name (nothing that tells the answer)."""
        from ..images import decode_image

        smp = self.samples().get(item)
        if smp is None:
            raise NotFoundError("this quiz image is no longer available")
        buf = io.BytesIO()
        decode_image(smp.source, max_pixels=max_pixels).save(buf, "PNG", compress_level=1)
        return buf.getvalue()

    def answer(self, item: str, engine: Any) -> tuple[int, float] | None:
        """The detector's (label, P(fake)) on the sample, computed once per process."""
        if item not in self._answers:
            from .inputs import Decoded
            from ..images import decode_image

            smp = self.samples()[item]
            image = decode_image(smp.source, max_pixels=engine.settings.max_pixels)
            r = engine.analyse([Decoded.from_image(item, image, engine.detector().preprocessing)])[0]
            self._answers[item] = None if r["label"] is None else (int(r["label"]), float(r["probability"]))
        return self._answers[item]


def visitor_hash(visitor: str) -> str:
    """How a visitor's cookie value is stored (never the value itself)."""
    return hashlib.sha256(visitor.encode()).hexdigest()


def new_visitor() -> str:
    """A new random visitor id (the quiz cookie's value)."""
    return secrets.token_urlsafe(18)


def start_round(db: Database, quiz: QuizSet, engine: Any, visitor: str) -> QuizRound:
    """Pick an image, get the detector's answer, store the round (truth hidden from the client)."""
    smp = quiz.pick()
    ans = quiz.answer(smp.id, engine)

    def add(s: Session) -> QuizRound:
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


def guess(db: Database, round_id: str, visitor: str | None, label: int) -> QuizRound:
    """Store the guess once (conditional update); then, and only then, the row with its truth."""
    def store(s: Session) -> QuizRound:
        row = get_round(s, round_id)
        if visitor is None or row.visitor_hash != visitor_hash(visitor):
            raise NotFoundError("no such quiz round")  # someone else's round looks like none at all
        done = s.execute(update(QuizRound).where(QuizRound.id == round_id, QuizRound.guess.is_(None))
                         .values(guess=label, answered_at=utcnow()).execution_options(synchronize_session=False))
        if done.rowcount != 1:
            raise ConflictError("this round was already answered: start a new one")
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
    """Per generator ('real' included), over all visitors: rounds, people right, detector right."""
    q = select(QuizRound.generator, func.count(),
               func.sum(case((QuizRound.guess == QuizRound.truth, 1), else_=0)),
               func.sum(case((QuizRound.detector_label == QuizRound.truth, 1), else_=0))) \
        .where(QuizRound.guess.is_not(None)).group_by(QuizRound.generator).order_by(QuizRound.generator)
    out = []
    for gen, n, people, det in s.execute(q).all():
        n, people, det = int(n), int(people or 0), int(det or 0)
        out.append({"generator": gen, "rounds": n, "people_right": people, "detector_right": det,
                    "people_accuracy": people / n if n else None, "detector_accuracy": det / n if n else None})
    return out
