"""a newer reply's confirmation supersedes an older one

Revision ID: 0004
Revises: 0003
Created: 2026-11-29 23:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mailflow.core.models

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("confirmations") as batch:
        batch.add_column(
            sa.Column("superseded_at", mailflow.core.models.UTCDateTime(), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("confirmations") as batch:
        batch.drop_column("superseded_at")
