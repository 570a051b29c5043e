"""moderation and entries: team captains and disqualification, hidden submissions, method name /
description / link and public-board choice per submission, host announcements

Revision ID: challenges_0003
Revises: challenges_0002
Create Date: 2026-12-07
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from deepsift.server.db import UTCDateTime

revision = 'challenges_0003'
down_revision = 'challenges_0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain columns (no batch copy of the tables: on SQLite that would drop and recreate them)
    op.add_column('challenge_teams', sa.Column('captain_id', sa.Integer(), nullable=True))
    op.add_column('challenge_teams', sa.Column('disqualified_reason', sa.String(length=500), nullable=True))
    op.add_column('challenge_teams', sa.Column('disqualified_at', UTCDateTime(), nullable=True))
    # a team's first member is its captain
    op.execute("UPDATE challenge_teams SET captain_id = (SELECT m.user_id FROM challenge_team_members m "
               "WHERE m.team_id = challenge_teams.id ORDER BY m.joined_at, m.id LIMIT 1)")
    op.add_column('challenge_submissions', sa.Column('hidden', sa.Boolean(), nullable=False,
                                                     server_default=sa.false()))
    op.add_column('challenge_submissions', sa.Column('hidden_reason', sa.String(length=500), nullable=True))
    op.add_column('challenge_submissions', sa.Column('public', sa.Boolean(), nullable=False,
                                                     server_default=sa.true()))
    op.add_column('challenge_submissions', sa.Column('method_name', sa.String(length=100), nullable=False,
                                                     server_default=''))
    op.add_column('challenge_submissions', sa.Column('method_description', sa.String(length=1000), nullable=False,
                                                     server_default=''))
    op.add_column('challenge_submissions', sa.Column('method_url', sa.String(length=500), nullable=False,
                                                     server_default=''))
    op.create_table('challenge_announcements',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('challenge_id', sa.Integer(), nullable=False),
    sa.Column('author_id', sa.Integer(), nullable=True),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['challenge_id'], ['challenge_challenges.id'],
                            name=op.f('fk_challenge_announcements_challenge_id_challenge_challenges'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['author_id'], ['users.id'], name=op.f('fk_challenge_announcements_author_id_users'),
                            ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_challenge_announcements'))
    )
    op.create_index(op.f('ix_challenge_announcements_challenge_id'), 'challenge_announcements', ['challenge_id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_challenge_announcements_challenge_id'), table_name='challenge_announcements')
    op.drop_table('challenge_announcements')
    # plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35): a batch copy would drop the tables, and with
    # foreign keys on, their dependants (members, submissions) with them
    for col in ('method_url', 'method_description', 'method_name', 'public', 'hidden_reason', 'hidden'):
        op.drop_column('challenge_submissions', col)
    for col in ('disqualified_at', 'disqualified_reason', 'captain_id'):
        op.drop_column('challenge_teams', col)
