"""platform: ranking integrity: charged failures (quota), host-marked baselines, late entries

Revision ID: challenges_0002
Revises: challenges_0001
Create Date: 2026-12-07
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = 'challenges_0002'
down_revision = 'challenges_0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('challenge_submissions', schema=None) as batch_op:  # batch: SQLite cannot ALTER in place
        batch_op.add_column(sa.Column('charged', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('baseline', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('late', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('challenge_submissions', schema=None) as batch_op:
        batch_op.drop_column('late')
        batch_op.drop_column('baseline')
        batch_op.drop_column('charged')
