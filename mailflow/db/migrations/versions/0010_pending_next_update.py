"""the next update or review date a reply asked for

A pending answer keeps the date the person wrote ("next update 12
December"), so the confirm page shows it and the recorded answer uses it.

Revision ID: 0010
Revises: 0009
Created: 2026-11-30 04:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pending_answers") as batch:
        batch.add_column(sa.Column("next_update_on", sa.Date(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pending_answers") as batch:
        batch.drop_column("next_update_on")
