"""Accounts, round 2: API tokens expire (``api_tokens.expires_at``; NULL = never, as before).

Revision ID: server_0002
Revises: server_0001
Create Date: 2026-12-07
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from deepsift.server.db import UTCDateTime

revision = "server_0002"
down_revision = "server_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_tokens", sa.Column("expires_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    op.drop_column("api_tokens", "expires_at")
