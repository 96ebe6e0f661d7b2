"""Closing an alert: the publisher says it needs no more chasing.  The
scheduler passes over closed alerts (they select ``closed_at IS NULL``);
answers are still recorded for them, since a late answer is still worth
knowing and the deadline figures are not changed by it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from mailflow.alerts.issuing import get_alert
from mailflow.core.audit import record_event
from mailflow.core.errors import InvalidInput
from mailflow.core.models import Alert

MAX_REASON = 1000


@dataclass(frozen=True)
class ClosedAlert:
    reference: str
    closed_at: datetime
    reason: str | None
    # False when it had been closed before: nothing was changed.
    newly_closed: bool


def close_alert(
    session: Session, reference: str, *, reason: str | None, now: datetime, actor: str
) -> ClosedAlert:
    """Close the alert with REFERENCE, in the caller's transaction.  Closing
    a closed alert changes nothing (its first closing stands).  Raises
    NotFound for an unknown reference."""
    reason = " ".join(reason.split()) if reason else None
    if reason and len(reason) > MAX_REASON:
        raise InvalidInput("--reason", f"keep it under {MAX_REASON} characters")
    alert = get_alert(session, reference)
    # Only an open alert is closed: of two closings at once, one does it
    # and the other finds it closed, so it is audited once.
    closed = session.execute(
        update(Alert)
        .where(Alert.id == alert.id, Alert.closed_at.is_(None))
        .values(closed_at=now, closed_reason=reason)
        .execution_options(synchronize_session=False)
    )
    session.refresh(alert)
    if not closed.rowcount:  # type: ignore[attr-defined]
        assert alert.closed_at is not None
        return ClosedAlert(alert.reference, alert.closed_at, alert.closed_reason, False)
    record_event(
        session,
        at=now,
        actor=actor,
        action="alert.closed",
        subject=f"alert:{alert.reference}",
        reason=reason,
    )
    return ClosedAlert(alert.reference, now, reason, True)
