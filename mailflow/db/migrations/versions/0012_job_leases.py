"""a lease on each job a worker holds

``jobs.held_until`` is renewed by the worker that holds a job (running
it, or keeping it in an in-process queue) every few seconds; a job whose
lease has lapsed belonged to a worker that died, and is dispatched again
within seconds rather than after the five minutes a lost queue message
waits.

Revision ID: 0012
Revises: 0011
Created: 2026-11-30 10:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mailflow.core.models

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(
            sa.Column("held_until", mailflow.core.models.base.UTCDateTime(), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_column("held_until")
