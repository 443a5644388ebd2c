"""schedules: scheduled jobs (controller/schedules/)

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("cron", sa.String(255), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("job", sa.JSON(), nullable=False),
        sa.Column("concurrency", sa.String(16), nullable=False),
        sa.Column("missed", sa.String(16), nullable=False),
        sa.Column("starting_deadline_s", sa.Float(), nullable=True),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("next_at", sa.Float(), nullable=True),
        sa.Column("last_fired_at", sa.Float(), nullable=True),
        sa.Column("last_run_uid", sa.String(64), nullable=True),
        sa.Column("last_run_state", sa.String(16), nullable=True),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("missed_firings", sa.Integer(), nullable=False),
        sa.Column("last_skipped_at", sa.Float(), nullable=True),
        sa.Column("last_skip_reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("schedules")
