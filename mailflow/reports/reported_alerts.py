"""Which alerts the auditors' report page shows: every alert open at the
time asked for, and those closed in the 30 days before it, newest first;
and one of them by its reference.  Auditors are national: every alert
issued by then is theirs to see."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from mailflow.core.models import Alert
from mailflow.core.pages.refusals import Refusal

# How long a closed alert stays on the page.
RECENTLY_CLOSED = timedelta(days=30)
MAX_REFERENCE_LENGTH = 20
NO_SUCH_ALERT = "There is no alert with that reference in the report. Go back to the report."


def alerts_in_report(session: Session, *, as_at: datetime) -> list[Alert]:
    return list(
        session.scalars(
            select(Alert)
            .where(
                Alert.issued_at <= as_at,
                or_(Alert.closed_at.is_(None), Alert.closed_at > as_at - RECENTLY_CLOSED),
            )
            .order_by(Alert.issued_at.desc(), Alert.id.desc())
        )
    )


def alert_in_report(session: Session, reference: str, *, as_at: datetime) -> Alert:
    """The alert with this reference, if it had been issued by ``as_at``;
    else the page's 404."""
    found = None
    if len(reference) <= MAX_REFERENCE_LENGTH:
        found = session.scalar(
            select(Alert).where(Alert.reference == reference.upper(), Alert.issued_at <= as_at)
        )
    if found is None:
        raise Refusal(404, "Alert not found", NO_SUCH_ALERT)
    return found
