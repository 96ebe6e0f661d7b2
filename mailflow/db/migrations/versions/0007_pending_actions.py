"""pending actions: one table for replies waiting to be confirmed and for
the single use of links

Every confirmation becomes a pending action of kind ``reply-answers`` with
the same id (its link names that id and its nonce, so links sent before
the upgrade still work); the confirmation keeps what it records (alert,
delivery, message, nonce) and its pending answers.  Every used link
becomes a used action of kind ``answer-link`` or ``enrol-link`` with the
same digest, so a link used before the upgrade stays used.

Revision ID: 0007_pending_actions
Revises: 0006
Created: 2026-11-30 00:30:00
"""

from __future__ import annotations

import hashlib
from typing import Any

import sqlalchemy as sa
from alembic import op

import mailflow.core.models

revision = "0007_pending_actions"
down_revision = "0006"
branch_labels = None
depends_on = None

UTC_DATETIME = mailflow.core.models.UTCDateTime
REPLY_ANSWERS = "reply-answers"
LINK_SUFFIX = "-link"
LIFECYCLE = ("created_at", "expires_at", "used_at", "superseded_at")

pending_actions = sa.table(
    "pending_actions",
    sa.column("id", sa.Integer()),
    sa.column("kind", sa.String()),
    sa.column("user_id", sa.Integer()),
    sa.column("payload", sa.JSON()),
    sa.column("token_digest", sa.String()),
    *(sa.column(name, UTC_DATETIME()) for name in LIFECYCLE),
)
old_confirmations = sa.table(
    "confirmations",
    sa.column("id", sa.Integer()),
    sa.column("user_id", sa.Integer()),
    sa.column("nonce", sa.String()),
    *(sa.column(name, UTC_DATETIME()) for name in LIFECYCLE),
)
used_tokens = sa.table(
    "used_tokens",
    sa.column("digest", sa.String()),
    sa.column("purpose", sa.String()),
    sa.column("user_id", sa.Integer()),
    sa.column("used_at", UTC_DATETIME()),
)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def upgrade() -> None:
    op.create_table(
        "pending_actions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("token_digest", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTC_DATETIME(), nullable=False),
        sa.Column("expires_at", UTC_DATETIME(), nullable=True),
        sa.Column("used_at", UTC_DATETIME(), nullable=True),
        sa.Column("superseded_at", UTC_DATETIME(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_pending_actions_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pending_actions")),
        sa.UniqueConstraint("token_digest", name=op.f("uq_pending_actions_token_digest")),
    )
    with op.batch_alter_table("pending_actions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_pending_actions_user_id_created_at", ["user_id", "created_at"], unique=False
        )
    _carry_rows_over()
    with op.batch_alter_table("confirmations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_confirmations_user_id"))
        batch_op.drop_constraint(batch_op.f("fk_confirmations_user_id_users"), type_="foreignkey")
        for name in ("user_id", *LIFECYCLE):
            batch_op.drop_column(name)
        batch_op.create_foreign_key(
            batch_op.f("fk_confirmations_id_pending_actions"), "pending_actions", ["id"], ["id"]
        )
    op.drop_table("used_tokens")


def _carry_rows_over() -> None:
    """Each confirmation keeps its id; used links follow after the highest."""
    bind = op.get_bind()
    rows: list[dict[str, Any]] = []
    for row in bind.execute(sa.select(old_confirmations).order_by(old_confirmations.c.id)):
        rows.append(
            {
                "id": row.id,
                "kind": REPLY_ANSWERS,
                "user_id": row.user_id,
                "payload": {},
                "token_digest": _digest(row.nonce),
                **{name: getattr(row, name) for name in LIFECYCLE},
            }
        )
    next_id = max((r["id"] for r in rows), default=0) + 1
    for row in bind.execute(sa.select(used_tokens).order_by(used_tokens.c.used_at)):
        rows.append(
            {
                "id": next_id,
                "kind": row.purpose + LINK_SUFFIX,
                "user_id": row.user_id,
                "payload": {},
                "token_digest": row.digest,
                "created_at": row.used_at,
                "expires_at": None,
                "used_at": row.used_at,
                "superseded_at": None,
            }
        )
        next_id += 1
    if rows:
        bind.execute(pending_actions.insert(), rows)
    if bind.dialect.name == "postgresql":
        # Ids were given: the sequence must start after them.
        op.execute(
            "SELECT setval(pg_get_serial_sequence('pending_actions', 'id'), "
            "COALESCE(MAX(id), 0) + 1, false) FROM pending_actions"
        )


def downgrade() -> None:
    op.create_table(
        "used_tokens",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=20), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("used_at", UTC_DATETIME(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_used_tokens_user_id_users")
        ),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_used_tokens")),
    )
    kind = pending_actions.c.kind
    op.execute(
        sa.insert(used_tokens).from_select(
            ["digest", "purpose", "user_id", "used_at"],
            sa.select(
                pending_actions.c.token_digest,
                sa.func.substr(kind, 1, sa.func.length(kind) - len(LINK_SUFFIX)),
                pending_actions.c.user_id,
                pending_actions.c.used_at,
            ).where(kind.like("%" + LINK_SUFFIX), pending_actions.c.used_at.is_not(None)),
        )
    )
    with op.batch_alter_table("confirmations", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_confirmations_id_pending_actions"), type_="foreignkey"
        )
        batch_op.add_column(sa.Column("user_id", sa.Integer(), nullable=True))
        for name in LIFECYCLE:
            batch_op.add_column(sa.Column(name, UTC_DATETIME(), nullable=True))
    op.execute(
        sa.update(old_confirmations).values(
            {
                name: sa.select(pending_actions.c[name])
                .where(pending_actions.c.id == old_confirmations.c.id)
                .scalar_subquery()
                for name in ("user_id", *LIFECYCLE)
            }
        )
    )
    with op.batch_alter_table("confirmations", schema=None) as batch_op:
        for name in ("user_id", "created_at", "expires_at"):
            batch_op.alter_column(name, nullable=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_confirmations_user_id_users"), "users", ["user_id"], ["id"]
        )
        batch_op.create_index(batch_op.f("ix_confirmations_user_id"), ["user_id"], unique=False)
    with op.batch_alter_table("pending_actions", schema=None) as batch_op:
        batch_op.drop_index("ix_pending_actions_user_id_created_at")
    op.drop_table("pending_actions")
    if op.get_bind().dialect.name == "postgresql":
        # Confirmations made since the upgrade took their ids from
        # pending_actions; the old sequence must start after them too.
        op.execute(
            "SELECT setval(pg_get_serial_sequence('confirmations', 'id'), "
            "COALESCE(MAX(id), 0) + 1, false) FROM confirmations"
        )
