"""platform: unseen-generator phases (the generators of the training data, and which images rank)

Revision ID: challenges_0004
Revises: challenges_0003
Create Date: 2026-12-07
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = 'challenges_0004'
down_revision = 'challenges_0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('challenge_phases', schema=None) as batch_op:  # batch: SQLite cannot ALTER in place
        batch_op.add_column(sa.Column('train_generators', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('rank_on', sa.String(length=8), nullable=False, server_default='all'))


def downgrade() -> None:
    with op.batch_alter_table('challenge_phases', schema=None) as batch_op:
        batch_op.drop_column('rank_on')
        batch_op.drop_column('train_generators')
