"""Schema migrations: ``upgrade(url)`` brings an empty or older database to the newest schema.

One Alembic environment (``deepsift/server/migrations``) reads the server's version folder and
every installed domain's (:func:`deepsift.server.domains.migration_folders`). The server's
``server_0001`` is the root; each domain is a branch labelled with its name whose first revision
revises ``server_0001``; ``upgrade`` goes to ``heads`` (all branches). On PostgreSQL an advisory
lock serialises concurrent starts; on SQLite the migration runs inside one immediate transaction.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Sequence

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, text

from .db import Base, Database
from .domains import DOMAIN_MODULES, Domain, installed_domains, migration_folders

_LOCK_KEY = 0x6465657073696674  # "deepsift"


def target_metadata() -> MetaData:
    """The metadata of every table (server accounts + each installed domain's models)."""
    importlib.import_module("deepsift.server.models")
    for dom in installed_domains():
        mod = dom.extra.get("models", f"deepsift.{dom.name}.models")
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise
    return Base.metadata


def alembic_config(url: str, domains: Sequence[Domain] = ()) -> Config:
    """An Alembic configuration for ``url``: the server, every installed domain and ``domains``."""
    folders = migration_folders()
    folders += [d.migrations for d in domains if d.migrations is not None and d.migrations not in folders]
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("version_locations", " ".join(str(p) for p in folders))
    cfg.set_main_option("path_separator", "space")
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(db: Database | str, revision: str = "heads", domains: Sequence[Domain] = ()) -> list[str]:
    """Upgrade the database to ``revision`` (default: every branch's head); returns the revisions now applied.

    ``domains``: domain objects not in the registry (e.g. a test's) whose migrations count too.
    """
    own = isinstance(db, str)
    database = Database(db) if isinstance(db, str) else db
    try:
        cfg = alembic_config(database.url, domains)
        with database.write_engine.connect() as conn:
            if database.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK_KEY})
                conn.commit()
            try:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
                conn.commit()
            finally:
                if database.dialect == "postgresql":
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
                    conn.commit()
        return current(database)
    finally:
        if own:
            database.dispose()


def upgrade_database(url: str) -> list[str]:
    """Upgrade the database at ``url`` (see :func:`upgrade`), with every failure as one-line DeepsiftError.

    A URL SQLAlchemy cannot use is a :class:`~deepsift.exceptions.UsageError`; a database that
    cannot be reached or migrated is a :class:`~deepsift.exceptions.DeepsiftError` naming it.
    """
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from ..exceptions import DeepsiftError, UsageError

    try:
        database = Database(url)
    except (ArgumentError, SQLAlchemyError, ValueError) as exc:
        raise UsageError(f"bad database URL: {exc}") from None
    try:
        return upgrade(database)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise DeepsiftError(f"cannot migrate the database at {database.engine.url!r}: {reason}") from None
    finally:
        database.dispose()


def current(database: Database) -> list[str]:
    """Revisions the database is at (one per branch)."""
    with database.engine.connect() as conn:
        return sorted(MigrationContext.configure(conn).get_current_heads())


def heads(domains: Sequence[Domain] = ()) -> list[str]:
    """The newest revision of every branch in the installed code."""
    return sorted(ScriptDirectory.from_config(alembic_config("sqlite://", domains)).get_heads())


__all__ = ["DOMAIN_MODULES", "alembic_config", "current", "heads", "target_metadata", "upgrade", "upgrade_database"]
