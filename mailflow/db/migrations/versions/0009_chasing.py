"""chasing, closing and updating alerts

The chasers the scheduler has sent (unique per alert, organisation, kind
and step) and the chasing emails they cause; when an answer's next
update or review is due; alerts closed, in rounds, and their updates.

Revision ID: 0009
Revises: 0008
Created: 2026-11-30 04:09:12.867298
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mailflow.core.models

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_updates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("remediation", sa.Text(), nullable=True),
        sa.Column("cves", sa.JSON(), nullable=False),
        sa.Column("answer_again", sa.Boolean(), nullable=False),
        sa.Column("deadline_at", mailflow.core.models.base.UTCDateTime(), nullable=True),
        sa.Column("published_at", mailflow.core.models.base.UTCDateTime(), nullable=False),
        sa.Column("published_by", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alerts.id"], name=op.f("fk_alert_updates_alert_id_alerts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_updates")),
        sa.UniqueConstraint("alert_id", "number", name=op.f("uq_alert_updates_alert_id")),
    )
    op.create_table(
        "chasers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("organisation_id", sa.Integer(), nullable=True),
        sa.Column(
            "kind",
            sa.Enum(
                "reminder",
                "overdue",
                "update-due",
                "review-due",
                "escalation",
                "follow-up",
                "alert-update",
                name="chase_kind",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("step", sa.String(length=40), nullable=False),
        sa.Column("batch", sa.String(length=32), nullable=False),
        sa.Column("created_at", mailflow.core.models.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alerts.id"], name=op.f("fk_chasers_alert_id_alerts")
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name=op.f("fk_chasers_organisation_id_organisations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chasers")),
        sa.UniqueConstraint(
            "alert_id", "kind", "step", "organisation_id", name=op.f("uq_chasers_alert_id")
        ),
    )
    with op.batch_alter_table("chasers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_chasers_batch"), ["batch"], unique=False)
        batch_op.create_index(
            "uq_chasers_alert_wide",
            ["alert_id", "kind", "step"],
            unique=True,
            postgresql_where=sa.text("organisation_id IS NULL"),
            sqlite_where=sa.text("organisation_id IS NULL"),
        )

    op.create_table(
        "chaser_emails",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "reminder",
                "overdue",
                "update-due",
                "review-due",
                "escalation",
                "follow-up",
                "alert-update",
                name="chase_kind",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("step", sa.String(length=40), nullable=False),
        sa.Column("batch", sa.String(length=32), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "queued",
                "composed",
                "dropped",
                name="chaser_email_state",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("created_at", mailflow.core.models.base.UTCDateTime(), nullable=False),
        sa.Column("handled_at", mailflow.core.models.base.UTCDateTime(), nullable=True),
        sa.Column("outgoing_email_id", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alerts.id"], name=op.f("fk_chaser_emails_alert_id_alerts")
        ),
        sa.ForeignKeyConstraint(
            ["outgoing_email_id"],
            ["outgoing_emails.id"],
            name=op.f("fk_chaser_emails_outgoing_email_id_outgoing_emails"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_chaser_emails_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chaser_emails")),
        sa.UniqueConstraint(
            "alert_id", "user_id", "kind", "step", name=op.f("uq_chaser_emails_alert_id")
        ),
    )
    with op.batch_alter_table("chaser_emails", schema=None) as batch_op:
        batch_op.create_index("ix_chaser_emails_state_batch", ["state", "batch"], unique=False)

    with op.batch_alter_table("alert_statuses", schema=None) as batch_op:
        batch_op.add_column(sa.Column("update_due_on", sa.Date(), nullable=True))
        batch_op.create_index("ix_alert_statuses_update_due_on", ["update_due_on"], unique=False)

    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("round", sa.Integer(), server_default="1", nullable=False))
        batch_op.add_column(
            sa.Column("closed_at", mailflow.core.models.base.UTCDateTime(), nullable=True)
        )
        batch_op.add_column(sa.Column("closed_reason", sa.Text(), nullable=True))

    with op.batch_alter_table("answers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("next_update_on", sa.Date(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("answers", schema=None) as batch_op:
        batch_op.drop_column("next_update_on")

    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_column("closed_reason")
        batch_op.drop_column("closed_at")
        batch_op.drop_column("round")

    with op.batch_alter_table("alert_statuses", schema=None) as batch_op:
        batch_op.drop_index("ix_alert_statuses_update_due_on")
        batch_op.drop_column("update_due_on")

    with op.batch_alter_table("chaser_emails", schema=None) as batch_op:
        batch_op.drop_index("ix_chaser_emails_state_batch")

    op.drop_table("chaser_emails")
    with op.batch_alter_table("chasers", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_chasers_alert_wide",
            postgresql_where=sa.text("organisation_id IS NULL"),
            sqlite_where=sa.text("organisation_id IS NULL"),
        )
        batch_op.drop_index(batch_op.f("ix_chasers_batch"))

    op.drop_table("chasers")
    op.drop_table("alert_updates")
