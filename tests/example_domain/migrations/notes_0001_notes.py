"""notes: first revision of the example domain's branch.

Revision ID: notes_0001
Revises: server_0001
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from deepsift.server.db import UTCDateTime

revision = "notes_0001"
down_revision = "server_0001"  # every domain branch starts from the server's accounts
branch_labels = ("notes",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notes_notes",
        sa.Column("id", sa.String(24), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("text", sa.String(500), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_notes_notes_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notes_notes")),
    )
    op.create_index(op.f("ix_notes_notes_user_id"), "notes_notes", ["user_id"])


def downgrade() -> None:
    op.drop_table("notes_notes")
