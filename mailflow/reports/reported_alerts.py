"""Which alerts the auditors' report page shows: every alert open at the
time asked for, and those closed in the 30 days before it, newest first
(only alerts that ask for answers);
and one of them by its reference.  Auditors are national: every alert
issued by then is theirs to see."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from mailflow.core.models import Alert

# How long a closed alert stays on the page.
RECENTLY_CLOSED = timedelta(days=30)
MAX_REFERENCE_LENGTH = 20


def alerts_in_report(session: Session, *, as_at: datetime) -> list[Alert]:
    return list(
        session.scalars(
            select(Alert)
            .where(
                # One that asks for no answers has no figures to show.
                Alert.response_required.is_(True),
                Alert.issued_at <= as_at,
                or_(Alert.closed_at.is_(None), Alert.closed_at > as_at - RECENTLY_CLOSED),
            )
            .order_by(Alert.issued_at.desc(), Alert.id.desc())
        )
    )


def alert_in_report(session: Session, reference: str, *, as_at: datetime) -> Alert | None:
    """The alert with this reference, if it had been issued by ``as_at``."""
    if len(reference) > MAX_REFERENCE_LENGTH:
        return None
    return session.scalar(
        select(Alert).where(Alert.reference == reference.upper(), Alert.issued_at <= as_at)
    )
