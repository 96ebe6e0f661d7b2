"""The job that turns the chasing emails a scheduler pass decided on (rows
of ``chaser_emails``, queued) into emails in the outbox.

Rows are taken a group at a time, each group in one transaction, and
each row within it in a savepoint: the row is claimed by a conditional
UPDATE (queued -> composed; on PostgreSQL the group is also locked with
SKIP LOCKED, so two workers take different rows), composed after a
re-check of what is still true, and queued, or dropped with the reason.
So each email is queued exactly once: a second worker finds the row
taken, and a crash rolls back the group, leaving its rows queued for the
job's next run.  One row that fails to compose is dropped with the error
and does not stop the others."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mailflow.alerts.update_email import compose_alert_update
from mailflow.config import Settings
from mailflow.core.models import ChaseKind, ChaserEmail, ChaserEmailState, OutgoingEmail
from mailflow.core.runtime import Runtime
from mailflow.deadlines.escalation_emails import compose_auditor_email
from mailflow.deadlines.reminder_emails import compose_member_email

log = logging.getLogger(__name__)

# Returns the email it queued, or why there is nothing to send.
Composer = Callable[[Session, Settings, ChaserEmail, datetime], OutgoingEmail | str]

COMPOSERS: dict[ChaseKind, Composer] = {
    ChaseKind.REMINDER: compose_member_email,
    ChaseKind.OVERDUE: compose_member_email,
    ChaseKind.UPDATE_DUE: compose_member_email,
    ChaseKind.REVIEW_DUE: compose_member_email,
    ChaseKind.ESCALATION: compose_auditor_email,
    ChaseKind.FOLLOW_UP: compose_auditor_email,
    ChaseKind.ALERT_UPDATE: compose_alert_update,  # `mailflow alert update`
}

GROUP_SIZE = 50
# One run composes for at most this long, then leaves the rest to a fresh
# run (as alert fan-out does), so other jobs get a turn.
TIME_SLICE_SECONDS = 60.0
# Rows another worker holds are looked at again after this long: if that
# worker died, its transaction was rolled back and they are queued again.
LOOK_AGAIN = timedelta(seconds=5)
OUTCOME_LENGTH = 200


def send_chasers(runtime: Runtime, payload: dict[str, Any]) -> datetime | None:
    """The ``send_chasers`` job: compose the batch's queued emails.  When
    to run again, or None when none of the batch is left queued."""
    batch = str(payload["batch"])
    stop_at = time.monotonic() + TIME_SLICE_SECONDS
    while time.monotonic() < stop_at:
        with runtime.sessions.begin() as session:
            taken = compose_group(session, runtime.settings, batch, runtime.clock())
        if not taken:
            break
    else:
        return runtime.clock()
    with runtime.sessions() as session:
        left = session.scalar(
            select(ChaserEmail.id).where(
                ChaserEmail.batch == batch, ChaserEmail.state == ChaserEmailState.QUEUED
            )
        )
    return runtime.clock() + LOOK_AGAIN if left is not None else None


def compose_group(session: Session, settings: Settings, batch: str, now: datetime) -> int:
    """Compose up to GROUP_SIZE of the batch's queued emails, in the
    caller's transaction; how many rows were looked at."""
    query = (
        select(ChaserEmail.id)
        .where(ChaserEmail.batch == batch, ChaserEmail.state == ChaserEmailState.QUEUED)
        .order_by(ChaserEmail.id)
        .limit(GROUP_SIZE)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    ids = list(session.scalars(query))
    for row_id in ids:
        compose_one(session, settings, row_id, now)
    return len(ids)


def compose_one(session: Session, settings: Settings, row_id: int, now: datetime) -> None:
    """Claim one row and compose its email, in a savepoint: if composing
    raises, what it wrote is undone and the row is dropped with the error."""
    try:
        with session.begin_nested():
            if not _claim(session, row_id, now):
                return
            row = session.get_one(ChaserEmail, row_id, populate_existing=True)
            result = COMPOSERS[row.kind](session, settings, row, now)
            _record(session, row_id, result)
    except Exception as exc:
        log.exception("could not compose chasing email %s; dropped", row_id)
        # The kind of error only: its text may quote what was being written.
        _finish(session, row_id, now, outcome=f"could not compose: {type(exc).__name__}")


def _claim(session: Session, row_id: int, now: datetime) -> bool:
    """Take the row from queued, unless another worker has (it then
    counts as composed by them, and nothing is done here)."""
    result = session.execute(
        update(ChaserEmail)
        .where(ChaserEmail.id == row_id, ChaserEmail.state == ChaserEmailState.QUEUED)
        .values(state=ChaserEmailState.COMPOSED, handled_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def _record(session: Session, row_id: int, result: OutgoingEmail | str) -> None:
    values: dict[str, object]
    if isinstance(result, str):
        values = {"state": ChaserEmailState.DROPPED, "outcome": result[:OUTCOME_LENGTH]}
    else:
        values = {"outgoing_email_id": result.id}
    session.execute(
        update(ChaserEmail)
        .where(ChaserEmail.id == row_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


def _finish(session: Session, row_id: int, now: datetime, *, outcome: str) -> None:
    session.execute(
        update(ChaserEmail)
        .where(ChaserEmail.id == row_id, ChaserEmail.state == ChaserEmailState.QUEUED)
        .values(state=ChaserEmailState.DROPPED, handled_at=now, outcome=outcome[:OUTCOME_LENGTH])
        .execution_options(synchronize_session=False)
    )
