"""platform: challenges, phases, test sets, teams, submissions, events

Revision ID: challenges_0001
Revises: server_0001
Create Date: 2026-12-01
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from deepsift.server.db import UTCDateTime


revision = 'challenges_0001'
down_revision = 'server_0001'
branch_labels = ('challenges',)
depends_on = None


def upgrade() -> None:
    op.create_table('challenge_challenges',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('slug', sa.String(length=64), nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('rules', sa.Text(), nullable=False),
    sa.Column('host_id', sa.Integer(), nullable=False),
    sa.Column('published', sa.Boolean(), nullable=False),
    sa.Column('max_team_size', sa.Integer(), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['host_id'], ['users.id'], name=op.f('fk_challenge_challenges_host_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_challenge_challenges')),
    sa.UniqueConstraint('slug', name=op.f('uq_challenge_challenges_slug'))
    )
    with op.batch_alter_table('challenge_challenges', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_challenge_challenges_host_id'), ['host_id'], unique=False)

    op.create_table('challenge_phases',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('challenge_id', sa.Integer(), nullable=False),
    sa.Column('slug', sa.String(length=64), nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('starts_at', UTCDateTime(), nullable=False),
    sa.Column('ends_at', UTCDateTime(), nullable=False),
    sa.Column('max_per_day', sa.Integer(), nullable=True),
    sa.Column('max_total', sa.Integer(), nullable=True),
    sa.Column('counting', sa.String(length=8), nullable=False),
    sa.Column('ranking_metric', sa.String(length=20), nullable=False),
    sa.Column('threshold', sa.Float(), nullable=False),
    sa.Column('bootstrap', sa.Integer(), nullable=False),
    sa.Column('public_fraction', sa.Float(), nullable=False),
    sa.Column('allow_predictions', sa.Boolean(), nullable=False),
    sa.Column('allow_models', sa.Boolean(), nullable=False),
    sa.Column('model_time_limit_s', sa.Float(), nullable=False),
    sa.Column('model_memory_mb', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['challenge_id'], ['challenge_challenges.id'], name=op.f('fk_challenge_phases_challenge_id_challenge_challenges'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_challenge_phases')),
    sa.UniqueConstraint('challenge_id', 'slug', name=op.f('uq_challenge_phases_challenge_id'))
    )
    with op.batch_alter_table('challenge_phases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_challenge_phases_challenge_id'), ['challenge_id'], unique=False)

    op.create_table('challenge_teams',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('challenge_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=60), nullable=False),
    sa.Column('invite_code', sa.String(length=40), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['challenge_id'], ['challenge_challenges.id'], name=op.f('fk_challenge_teams_challenge_id_challenge_challenges'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_challenge_teams')),
    sa.UniqueConstraint('challenge_id', 'name', name=op.f('uq_challenge_teams_challenge_id'))
    )
    with op.batch_alter_table('challenge_teams', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_challenge_teams_challenge_id'), ['challenge_id'], unique=False)

    op.create_table('challenge_submissions',
    sa.Column('id', sa.String(length=24), nullable=False),
    sa.Column('phase_id', sa.Integer(), nullable=False),
    sa.Column('team_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=12), nullable=False),
    sa.Column('note', sa.String(length=200), nullable=False),
    sa.Column('client_key', sa.String(length=64), nullable=True),
    sa.Column('filename', sa.String(length=200), nullable=False),
    sa.Column('file_path', sa.String(length=300), nullable=False),
    sa.Column('file_sha256', sa.String(length=64), nullable=False),
    sa.Column('file_bytes', sa.BigInteger(), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=True),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('queued_at', UTCDateTime(), nullable=False),
    sa.Column('started_at', UTCDateTime(), nullable=True),
    sa.Column('finished_at', UTCDateTime(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('worker', sa.String(length=120), nullable=True),
    sa.Column('lease_token', sa.String(length=40), nullable=True),
    sa.Column('lease_expires_at', UTCDateTime(), nullable=True),
    sa.Column('heartbeat_at', UTCDateTime(), nullable=True),
    sa.Column('public_score', sa.Float(), nullable=True),
    sa.Column('private_score', sa.Float(), nullable=True),
    sa.Column('scores', sa.JSON(), nullable=True),
    sa.Column('intervals_done', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['phase_id'], ['challenge_phases.id'], name=op.f('fk_challenge_submissions_phase_id_challenge_phases'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['team_id'], ['challenge_teams.id'], name=op.f('fk_challenge_submissions_team_id_challenge_teams'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_challenge_submissions_user_id_users'), ondelete='SET NULL'),
    sa.UniqueConstraint('team_id', 'client_key', name='uq_challenge_submissions_client_key'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_challenge_submissions'))
    )
    with op.batch_alter_table('challenge_submissions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_challenge_submissions_phase_id'), ['phase_id'], unique=False)
        batch_op.create_index('ix_challenge_submissions_queue', ['state', 'queued_at'], unique=False)
        batch_op.create_index('ix_challenge_submissions_team_phase', ['team_id', 'phase_id'], unique=False)

    op.create_table('challenge_team_members',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('team_id', sa.Integer(), nullable=False),
    sa.Column('challenge_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('joined_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['challenge_id'], ['challenge_challenges.id'], name=op.f('fk_challenge_team_members_challenge_id_challenge_challenges'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['team_id'], ['challenge_teams.id'], name=op.f('fk_challenge_team_members_team_id_challenge_teams'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_challenge_team_members_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_challenge_team_members')),
    sa.UniqueConstraint('challenge_id', 'user_id', name=op.f('uq_challenge_team_members_challenge_id'))
    )
    with op.batch_alter_table('challenge_team_members', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_challenge_team_members_team_id'), ['team_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_challenge_team_members_user_id'), ['user_id'], unique=False)

    op.create_table('challenge_testsets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('phase_id', sa.Integer(), nullable=False),
    sa.Column('folder', sa.String(length=200), nullable=False),
    sa.Column('n_images', sa.Integer(), nullable=False),
    sa.Column('n_public', sa.Integer(), nullable=False),
    sa.Column('image_format', sa.String(length=8), nullable=False),
    sa.Column('has_images', sa.Boolean(), nullable=False),
    sa.Column('archive_sha256', sa.String(length=64), nullable=True),
    sa.Column('archive_bytes', sa.BigInteger(), nullable=True),
    sa.Column('key_sha256', sa.String(length=64), nullable=False),
    sa.Column('summary', sa.JSON(), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['phase_id'], ['challenge_phases.id'], name=op.f('fk_challenge_testsets_phase_id_challenge_phases'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_challenge_testsets')),
    sa.UniqueConstraint('phase_id', name=op.f('uq_challenge_testsets_phase_id'))
    )
    op.create_table('challenge_submission_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('submission_id', sa.String(length=24), nullable=False),
    sa.Column('at', UTCDateTime(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('worker', sa.String(length=120), nullable=True),
    sa.ForeignKeyConstraint(['submission_id'], ['challenge_submissions.id'], name=op.f('fk_challenge_submission_events_submission_id_challenge_submissions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_challenge_submission_events'))
    )
    with op.batch_alter_table('challenge_submission_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_challenge_submission_events_submission_id'), ['submission_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('challenge_submission_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_challenge_submission_events_submission_id'))

    op.drop_table('challenge_submission_events')
    op.drop_table('challenge_testsets')
    with op.batch_alter_table('challenge_team_members', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_challenge_team_members_user_id'))
        batch_op.drop_index(batch_op.f('ix_challenge_team_members_team_id'))

    op.drop_table('challenge_team_members')
    with op.batch_alter_table('challenge_submissions', schema=None) as batch_op:
        batch_op.drop_index('ix_challenge_submissions_team_phase')
        batch_op.drop_index('ix_challenge_submissions_queue')
        batch_op.drop_index(batch_op.f('ix_challenge_submissions_phase_id'))

    op.drop_table('challenge_submissions')
    with op.batch_alter_table('challenge_teams', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_challenge_teams_challenge_id'))

    op.drop_table('challenge_teams')
    with op.batch_alter_table('challenge_phases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_challenge_phases_challenge_id'))

    op.drop_table('challenge_phases')
    with op.batch_alter_table('challenge_challenges', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_challenge_challenges_host_id'))

    op.drop_table('challenge_challenges')
