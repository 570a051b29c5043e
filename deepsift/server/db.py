"""The database: one declarative ``Base`` for every domain's tables, engines and sessions.

SQLite (the embedded default) gets WAL, foreign keys and a busy timeout on every connection, and
two engines: *read* sessions begin a plain deferred transaction (readers never block in WAL), *write*
sessions begin ``BEGIN IMMEDIATE``, so two writers queue on the busy timeout instead of failing
when a read lock cannot be upgraded. PostgreSQL uses one pooled engine with pre-ping (a restarted
server costs one retried connection, not an error page).

Domain packages declare tables on :class:`Base` (table names prefixed with the domain name) and
use :class:`UTCDateTime` for times, which come back timezone-aware on both databases.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import secrets
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from sqlalchemy import DateTime, MetaData, create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

T = TypeVar("T")

log = logging.getLogger("deepsift.server.db")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every table (one metadata, deterministic constraint names)."""

    metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC datetime on SQLite and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: use deepsift.server.db.utcnow()")
        value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


def utcnow() -> dt.datetime:
    """Now, timezone-aware UTC (the one clock of the server's tables)."""
    return dt.datetime.now(dt.timezone.utc)


def new_id(nbytes: int = 12) -> str:
    """A random, unguessable URL-safe id for anything a client can name (submissions, files, invite codes).

    Never one that starts with ``-``: a command line would read it as an option (``team join -Xy...``)."""
    while True:
        value = secrets.token_urlsafe(nbytes)
        if not value.startswith("-"):
            return value


def make_private_dir(path: "str | os.PathLike[str]") -> None:
    """Create the folder ``path`` (and its parents) if missing; a folder made here is owner-only (0700)."""
    p = Path(path)
    if not p.is_dir():
        p.parent.mkdir(parents=True, exist_ok=True)
        try:
            p.mkdir(mode=0o700)
        except FileExistsError:
            pass


def make_private_file(path: "str | os.PathLike[str]") -> None:
    """Create the empty file ``path`` owner-only (0600) if missing, in a private folder when that is missing too.

    SQLite then keeps the mode it finds (and gives its WAL and shared-memory files the same one).
    """
    p = Path(path)
    make_private_dir(p.parent)
    try:
        os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _sqlite_engine(url: str, busy_timeout_ms: int, immediate: bool) -> Engine:
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": busy_timeout_ms / 1000})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cur.execute("PRAGMA synchronous=NORMAL")  # durable in WAL mode up to the last checkpoint
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Database:
    """Engines and session factories for one database URL.

    ``session()`` is for reads; ``session(write=True)`` for anything that writes (on SQLite it takes
    the write lock at BEGIN). Both are context managers that commit on success and roll back on error.
    """

    def __init__(self, url: str, *, pool_size: int = 10, busy_timeout_ms: int = 30_000) -> None:
        self.url = url
        self.sqlite = is_sqlite(url)
        if self.sqlite:
            path = make_url(url).database
            if path and path != ":memory:":
                make_private_file(path)
            self.engine = _sqlite_engine(url, busy_timeout_ms, immediate=False)
            self.write_engine = _sqlite_engine(url, busy_timeout_ms, immediate=True)
        else:
            self.engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
                                        pool_recycle=1800)
            self.write_engine = self.engine
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(self.write_engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    @contextlib.contextmanager
    def session(self, write: bool = False) -> Iterator[Session]:
        """A session in one transaction: committed when the block ends, rolled back on error."""
        with (self._write if write else self._read)() as s:
            with s.begin():
                if write:
                    s.connection()  # BEGIN now: on SQLite the write lock is held before the block reads the clock
                yield s

    def new_session(self, write: bool = False) -> Session:
        """A bare session (the caller commits and closes); used by the per-request dependency."""
        return (self._write if write else self._read)()

    def run(self, fn: Callable[[Session], T], *, write: bool = True, retries: int = 5, delay_s: float = 0.2) -> T:
        """Run ``fn(session)`` in one transaction, retried when the connection drops (server restart)."""
        import time

        for attempt in range(retries + 1):
            try:
                with self.session(write=write) as s:
                    return fn(s)
            except (OperationalError, DBAPIError) as exc:
                if attempt == retries or not is_transient(exc):
                    raise
                delay = delay_s * (2 ** attempt)
                reason = (str(getattr(exc, "orig", exc)).strip().splitlines() or [type(exc).__name__])[0]
                log.info("database unavailable or busy (%s); retry %d of %d in %.1f s", reason, attempt + 1, retries,
                         delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
        if self.write_engine is not self.engine:
            self.write_engine.dispose()


def is_transient(exc: BaseException) -> bool:
    """True for errors a retry can cure: a dropped connection, a restarting server, a busy SQLite."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    text = str(getattr(exc, "orig", exc)).lower()
    return any(k in text for k in ("database is locked", "server closed the connection", "connection refused",
                                   "terminating connection", "the database system is", "connection is closed",
                                   "could not connect", "consuming input failed", "ssl connection has been closed",
                                   "connection timeout", "deadlock detected", "could not serialize"))
