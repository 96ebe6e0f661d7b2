"""auditors' digests, and the answer's own next-update date on each status

``users.digest`` is how often an auditor is sent a digest; ``digests``
holds one row per auditor and period (unique), so each is sent once.
``alert_statuses.next_update_on`` copies the current answer's date, so the
auditors' figures count overdue updates without reading the answers;
``organisations.closed_on`` is indexed, so they leave out the few closed
organisations without reading them all.

Revision ID: 0011
Revises: 0010
Created: 2026-11-30 07:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mailflow.core.models

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

SCHEDULES = ("daily", "weekly", "off")


def _schedule() -> sa.Enum:
    return sa.Enum(
        *SCHEDULES, name="digest_schedule", native_enum=False, create_constraint=True, length=20
    )


def upgrade() -> None:
    op.create_table(
        "digests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("period_at", mailflow.core.models.base.UTCDateTime(), nullable=False),
        sa.Column("schedule", _schedule(), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "queued",
                "sent",
                "no-changes",
                "skipped",
                name="digest_state",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("number", sa.Integer(), nullable=True),
        sa.Column("snapshot", sa.Text(), nullable=True),
        sa.Column("batch", sa.String(length=32), nullable=False),
        sa.Column("created_at", mailflow.core.models.base.UTCDateTime(), nullable=False),
        sa.Column("composed_at", mailflow.core.models.base.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_digests_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_digests")),
        sa.UniqueConstraint("user_id", "period_at", name=op.f("uq_digests_user_id")),
        sa.UniqueConstraint("user_id", "number", name=op.f("uq_digests_user_id_number")),
    )
    with op.batch_alter_table("digests") as batch:
        batch.create_index(batch.f("ix_digests_batch"), ["batch"], unique=False)
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("digest", _schedule(), server_default="daily", nullable=False))
    with op.batch_alter_table("alert_statuses") as batch:
        batch.add_column(sa.Column("next_update_on", sa.Date(), nullable=True))
    with op.batch_alter_table("organisations") as batch:
        batch.create_index(batch.f("ix_organisations_closed_on"), ["closed_on"], unique=False)
    op.execute(
        "UPDATE alert_statuses SET next_update_on = "
        "(SELECT answers.next_update_on FROM answers WHERE answers.id = alert_statuses.answer_id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("organisations") as batch:
        batch.drop_index(batch.f("ix_organisations_closed_on"))
    with op.batch_alter_table("alert_statuses") as batch:
        batch.drop_column("next_update_on")
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint(batch.f("ck_users_digest_schedule"), type_="check")
        batch.drop_column("digest")
    with op.batch_alter_table("digests") as batch:
        batch.drop_index(batch.f("ix_digests_batch"))
    op.drop_table("digests")
