"""verified sessions, lock-out by source, links valid after

Revision ID: 0005
Revises: 0004
Created: 2026-11-29 23:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mailflow.core.models

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "verified_sessions",
        sa.Column("key_digest", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("credential_enrolled_at", mailflow.core.models.UTCDateTime(), nullable=False),
        sa.Column("verified_at", mailflow.core.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_verified_sessions_user_id_users")
        ),
        sa.PrimaryKeyConstraint("key_digest", name=op.f("pk_verified_sessions")),
    )
    with op.batch_alter_table("verified_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_verified_sessions_user_id"), ["user_id"], unique=False)
    with op.batch_alter_table("mfa_failures", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("source", sa.String(length=16), server_default="", nullable=False)
        )
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("links_valid_after", mailflow.core.models.UTCDateTime(), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("links_valid_after")
    with op.batch_alter_table("mfa_failures", schema=None) as batch_op:
        batch_op.drop_column("source")
    with op.batch_alter_table("verified_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_verified_sessions_user_id"))
    op.drop_table("verified_sessions")
