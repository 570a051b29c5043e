"""notes: a second revision on the same branch (chains on notes_0001).

Revision ID: notes_0002
Revises: notes_0001
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "notes_0002"
down_revision = "notes_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("notes_notes") as batch:  # batch: SQLite cannot ALTER most things in place
        batch.add_column(sa.Column("pinned", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("notes_notes") as batch:
        batch.drop_column("pinned")
