"""access requests and people

Requests to answer for another organisation (kept once their person has
confirmed them) and their decisions, the reply keys of administrators'
decision emails and of emails about their people, the rounds of access
review, and on each membership who granted it and from which request.

Revision ID: 0008
Revises: 0007_pending_actions
Created: 2026-11-30 01:44:08.831693
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mailflow.core.models

revision = "0008"
down_revision = "0007_pending_actions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "access_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("requester_id", sa.Integer(), nullable=False),
        sa.Column("organisation_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("via", sa.String(length=10), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "open",
                "approved",
                "denied",
                "expired",
                "withdrawn",
                name="access_state",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("created_at", mailflow.core.models.base.UTCDateTime(), nullable=False),
        sa.Column("expires_at", mailflow.core.models.base.UTCDateTime(), nullable=False),
        sa.Column("reminded_at", mailflow.core.models.base.UTCDateTime(), nullable=True),
        sa.Column("to_service_desk", sa.Boolean(), nullable=False),
        sa.Column("decided_at", mailflow.core.models.base.UTCDateTime(), nullable=True),
        sa.Column("decided_by_id", sa.Integer(), nullable=True),
        sa.Column("decided_by_operator", sa.String(length=100), nullable=True),
        sa.Column("decided_via", sa.String(length=10), nullable=True),
        sa.Column("decision_reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["decided_by_id"], ["users.id"], name=op.f("fk_access_requests_decided_by_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name=op.f("fk_access_requests_organisation_id_organisations"),
        ),
        sa.ForeignKeyConstraint(
            ["requester_id"], ["users.id"], name=op.f("fk_access_requests_requester_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_requests")),
    )
    with op.batch_alter_table("access_requests", schema=None) as batch_op:
        batch_op.create_index(
            "ix_access_requests_organisation_id_state", ["organisation_id", "state"], unique=False
        )
        batch_op.create_index(
            "ix_access_requests_requester_id_state", ["requester_id", "state"], unique=False
        )

    op.create_table(
        "access_reviews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("organisation_id", sa.Integer(), nullable=False),
        sa.Column("administrator_id", sa.Integer(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("sent_at", mailflow.core.models.base.UTCDateTime(), nullable=False),
        sa.Column("reviewed_at", mailflow.core.models.base.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["administrator_id"],
            ["users.id"],
            name=op.f("fk_access_reviews_administrator_id_users"),
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name=op.f("fk_access_reviews_organisation_id_organisations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_reviews")),
        sa.UniqueConstraint(
            "organisation_id",
            "administrator_id",
            "round",
            name=op.f("uq_access_reviews_organisation_id"),
        ),
    )
    op.create_table(
        "people_keys",
        sa.Column("key", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("organisation_id", sa.Integer(), nullable=True),
        sa.Column("created_at", mailflow.core.models.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name=op.f("fk_people_keys_organisation_id_organisations"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_people_keys_user_id_users")
        ),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_people_keys")),
    )
    with op.batch_alter_table("people_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_people_keys_user_id"), ["user_id"], unique=False)

    op.create_table(
        "access_decision_keys",
        sa.Column("key", sa.String(length=32), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", mailflow.core.models.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["access_requests.id"],
            name=op.f("fk_access_decision_keys_request_id_access_requests"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_access_decision_keys_user_id_users")
        ),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_access_decision_keys")),
    )
    with op.batch_alter_table("access_decision_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_access_decision_keys_request_id"), ["request_id"], unique=False
        )

    with op.batch_alter_table("memberships", schema=None) as batch_op:
        batch_op.add_column(sa.Column("granted_by_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("access_request_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_memberships_access_request_id_access_requests"),
            "access_requests",
            ["access_request_id"],
            ["id"],
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_memberships_granted_by_id_users"), "users", ["granted_by_id"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("memberships", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_memberships_granted_by_id_users"), type_="foreignkey"
        )
        batch_op.drop_constraint(
            batch_op.f("fk_memberships_access_request_id_access_requests"), type_="foreignkey"
        )
        batch_op.drop_column("access_request_id")
        batch_op.drop_column("granted_by_id")

    with op.batch_alter_table("access_decision_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_access_decision_keys_request_id"))

    op.drop_table("access_decision_keys")
    with op.batch_alter_table("people_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_people_keys_user_id"))

    op.drop_table("people_keys")
    op.drop_table("access_reviews")
    with op.batch_alter_table("access_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_access_requests_requester_id_state")
        batch_op.drop_index("ix_access_requests_organisation_id_state")

    op.drop_table("access_requests")
