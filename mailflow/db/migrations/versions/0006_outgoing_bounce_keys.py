"""outgoing emails get a bounce address and know their person

Revision ID: 0006
Revises: 0005
Created: 2026-11-29 23:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mailflow.core.models

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outgoing_emails", schema=None) as batch_op:
        batch_op.add_column(sa.Column("user_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("bounce_key", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("bounced_at", mailflow.core.models.UTCDateTime(), nullable=True)
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_outgoing_emails_user_id_users"), "users", ["user_id"], ["id"]
        )
        batch_op.create_unique_constraint(
            batch_op.f("uq_outgoing_emails_bounce_key"), ["bounce_key"]
        )
        batch_op.create_index("ix_outgoing_emails_user_id_kind", ["user_id", "kind"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("outgoing_emails", schema=None) as batch_op:
        batch_op.drop_index("ix_outgoing_emails_user_id_kind")
        batch_op.drop_constraint(batch_op.f("uq_outgoing_emails_bounce_key"), type_="unique")
        batch_op.drop_constraint(batch_op.f("fk_outgoing_emails_user_id_users"), type_="foreignkey")
        batch_op.drop_column("bounced_at")
        batch_op.drop_column("bounce_key")
        batch_op.drop_column("user_id")
