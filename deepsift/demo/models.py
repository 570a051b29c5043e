"""The demo's one table: quiz rounds, anonymous (a random visitor id, stored hashed; no address, no upload)."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, Float, SmallInteger, String, false
from sqlalchemy.orm import Mapped, mapped_column

from ..server.db import Base, UTCDateTime, new_id, utcnow


class QuizRound(Base):
    """One image shown to one visitor; the truth leaves the server only once ``guess`` is stored."""

    __tablename__ = "demo_quiz_rounds"

    id: Mapped[str] = mapped_column(String(24), primary_key=True, default=new_id)
    visitor_hash: Mapped[str] = mapped_column(String(64), index=True)
    item: Mapped[str] = mapped_column(String(500))
    generator: Mapped[str] = mapped_column(String(120), index=True)  # "real" for real images
    truth: Mapped[int] = mapped_column(SmallInteger)  # 1 = fake
    detector_label: Mapped[int | None] = mapped_column(SmallInteger, default=None)
    detector_probability: Mapped[float | None] = mapped_column(Float, default=None)
    guess: Mapped[int | None] = mapped_column(SmallInteger, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    answered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    # the visitor's first answer on this image: the only one the public statistics count
    counted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


__all__ = ["QuizRound"]
