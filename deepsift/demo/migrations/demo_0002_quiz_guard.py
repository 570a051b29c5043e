"""demo: quiz guard (one counted guess per image and visitor; rounds expire by age)

Revision ID: demo_0002
Revises: demo_0001
Create Date: 2026-12-07
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = 'demo_0002'
down_revision = 'demo_0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('demo_quiz_rounds', schema=None) as batch_op:
        batch_op.add_column(sa.Column('counted', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.create_index(batch_op.f('ix_demo_quiz_rounds_created_at'), ['created_at'], unique=False)
    # rounds answered before this revision: each visitor's first answer per image counts
    op.execute("UPDATE demo_quiz_rounds SET counted = true WHERE guess IS NOT NULL AND NOT EXISTS ("
               "SELECT 1 FROM demo_quiz_rounds AS r2 WHERE r2.visitor_hash = demo_quiz_rounds.visitor_hash "
               "AND r2.item = demo_quiz_rounds.item AND r2.guess IS NOT NULL "
               "AND (r2.answered_at < demo_quiz_rounds.answered_at OR (r2.answered_at = demo_quiz_rounds.answered_at "
               "AND r2.id < demo_quiz_rounds.id)))")


def downgrade() -> None:
    with op.batch_alter_table('demo_quiz_rounds', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_demo_quiz_rounds_created_at'))
        batch_op.drop_column('counted')
