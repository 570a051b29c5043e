"""Alembic environment of the one server database (server + every domain's version folder).

Run by :func:`deepsift.server.migrate.upgrade` with a live connection in
``config.attributes["connection"]``; ``alembic`` on the command line works too through
``deepsift server alembic ...`` (which builds the same configuration).
"""
from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from deepsift.server.migrate import target_metadata

config = context.config


def _configure(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata(),
                      render_as_batch=connection.dialect.name == "sqlite", compare_type=True)


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata(),
                      literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as conn:
        _configure(conn)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
