"""replicas.pid_start: a 64-bit integer

/proc start times count clock ticks since boot: past 2^31 (about 248 days of uptime at 100 Hz)
they overflow PostgreSQL's 32-bit INTEGER. SQLite's INTEGER is 64-bit already.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return  # same storage; a batch copy of the table would change nothing
    op.alter_column("replicas", "pid_start", type_=sa.BigInteger(), existing_nullable=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.alter_column("replicas", "pid_start", type_=sa.Integer(), existing_nullable=True)
