"""ui_revoked_sessions: web UI sessions logged out on any controller sharing the store

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ui_revoked_sessions",
        sa.Column("nonce", sa.String(64), primary_key=True),
        sa.Column("expires", sa.Float(), nullable=False),
    )
    op.create_index("ix_ui_revoked_sessions_expires", "ui_revoked_sessions", ["expires"])


def downgrade() -> None:
    op.drop_index("ix_ui_revoked_sessions_expires", "ui_revoked_sessions")
    op.drop_table("ui_revoked_sessions")
