"""answers and second factor

Revision ID: 0003
Revises: 0002
Created: 2026-11-26 07:45:53.007273
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mailflow.core.models

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mfa_credentials",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("secret_encrypted", sa.Text(), nullable=False),
        sa.Column("enrolled_at", mailflow.core.models.UTCDateTime(), nullable=True),
        sa.Column("last_step", sa.BigInteger(), nullable=True),
        sa.Column("created_at", mailflow.core.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_mfa_credentials_user_id_users")
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_mfa_credentials")),
    )
    op.create_table(
        "mfa_failures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("at", mailflow.core.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_mfa_failures_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mfa_failures")),
    )
    with op.batch_alter_table("mfa_failures", schema=None) as batch_op:
        batch_op.create_index("ix_mfa_failures_user_id_at", ["user_id", "at"], unique=False)

    op.create_table(
        "recovery_codes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("code_hash", sa.String(length=128), nullable=False),
        sa.Column("used_at", mailflow.core.models.UTCDateTime(), nullable=True),
        sa.Column("created_at", mailflow.core.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_recovery_codes_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recovery_codes")),
    )
    with op.batch_alter_table("recovery_codes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_recovery_codes_user_id"), ["user_id"], unique=False)

    op.create_table(
        "used_tokens",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=20), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("used_at", mailflow.core.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_used_tokens_user_id_users")
        ),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_used_tokens")),
    )
    op.create_table(
        "answers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("organisation_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("mitigations", sa.Text(), nullable=True),
        sa.Column("expected_on", sa.Date(), nullable=True),
        sa.Column("via", sa.String(length=10), nullable=False),
        sa.Column("confirmation_id", sa.Integer(), nullable=True),
        sa.Column("recorded_at", mailflow.core.models.UTCDateTime(), nullable=False),
        sa.Column("within_deadline", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alerts.id"], name=op.f("fk_answers_alert_id_alerts")
        ),
        sa.ForeignKeyConstraint(
            ["confirmation_id"],
            ["confirmations.id"],
            name=op.f("fk_answers_confirmation_id_confirmations"),
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name=op.f("fk_answers_organisation_id_organisations"),
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_answers_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_answers")),
    )
    with op.batch_alter_table("answers", schema=None) as batch_op:
        batch_op.create_index(
            "ix_answers_alert_id_organisation_id", ["alert_id", "organisation_id"], unique=False
        )

    op.create_table(
        "alert_statuses",
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("organisation_id", sa.Integer(), nullable=False),
        sa.Column("answer_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("first_answered_at", mailflow.core.models.UTCDateTime(), nullable=False),
        sa.Column("updated_at", mailflow.core.models.UTCDateTime(), nullable=False),
        sa.Column("within_deadline", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alerts.id"], name=op.f("fk_alert_statuses_alert_id_alerts")
        ),
        sa.ForeignKeyConstraint(
            ["answer_id"], ["answers.id"], name=op.f("fk_alert_statuses_answer_id_answers")
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name=op.f("fk_alert_statuses_organisation_id_organisations"),
        ),
        sa.PrimaryKeyConstraint("alert_id", "organisation_id", name=op.f("pk_alert_statuses")),
    )
    with op.batch_alter_table("alert_statuses", schema=None) as batch_op:
        batch_op.create_index(
            "ix_alert_statuses_organisation_id", ["organisation_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("alert_statuses", schema=None) as batch_op:
        batch_op.drop_index("ix_alert_statuses_organisation_id")

    op.drop_table("alert_statuses")
    with op.batch_alter_table("answers", schema=None) as batch_op:
        batch_op.drop_index("ix_answers_alert_id_organisation_id")

    op.drop_table("answers")
    op.drop_table("used_tokens")
    with op.batch_alter_table("recovery_codes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_recovery_codes_user_id"))

    op.drop_table("recovery_codes")
    with op.batch_alter_table("mfa_failures", schema=None) as batch_op:
        batch_op.drop_index("ix_mfa_failures_user_id_at")

    op.drop_table("mfa_failures")
    op.drop_table("mfa_credentials")
