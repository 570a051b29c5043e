"""demo: anonymous quiz rounds

Revision ID: demo_0001
Revises: server_0001
Create Date: 2026-12-01
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from deepsift.server.db import UTCDateTime

revision = 'demo_0001'
down_revision = 'server_0001'
branch_labels = ('demo',)
depends_on = None


def upgrade() -> None:
    op.create_table('demo_quiz_rounds',
    sa.Column('id', sa.String(length=24), nullable=False),
    sa.Column('visitor_hash', sa.String(length=64), nullable=False),
    sa.Column('item', sa.String(length=500), nullable=False),
    sa.Column('generator', sa.String(length=120), nullable=False),
    sa.Column('truth', sa.SmallInteger(), nullable=False),
    sa.Column('detector_label', sa.SmallInteger(), nullable=True),
    sa.Column('detector_probability', sa.Float(), nullable=True),
    sa.Column('guess', sa.SmallInteger(), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('answered_at', UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_demo_quiz_rounds'))
    )
    with op.batch_alter_table('demo_quiz_rounds', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_demo_quiz_rounds_visitor_hash'), ['visitor_hash'], unique=False)
        batch_op.create_index(batch_op.f('ix_demo_quiz_rounds_generator'), ['generator'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('demo_quiz_rounds', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_demo_quiz_rounds_generator'))
        batch_op.drop_index(batch_op.f('ix_demo_quiz_rounds_visitor_hash'))
    op.drop_table('demo_quiz_rounds')
