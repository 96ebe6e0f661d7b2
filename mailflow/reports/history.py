"""Every answer one organisation gave for an alert, oldest first: the
history behind its current status, from the answers themselves."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.core.errors import NotFound
from mailflow.core.models import Answer, Organisation, User

COLUMNS = (
    "recorded_at",
    "answered_by",
    "status",
    "note",
    "reason",
    "mitigations",
    "expected_on",
    "next_update_on",
    "via",
    "within_deadline",
)


def answer_history(
    session: Session, alert_id: int, organisation_code: str
) -> Iterator[Sequence[Any]]:
    """Raises NotFound for an organisation code that does not exist."""
    code = organisation_code.strip().upper()
    organisation_id = session.scalar(select(Organisation.id).where(Organisation.code == code))
    if organisation_id is None:
        raise NotFound(f"no organisation {code}")
    yield from session.execute(
        select(
            Answer.recorded_at,
            User.email,
            Answer.status,
            Answer.note,
            Answer.reason,
            Answer.mitigations,
            Answer.expected_on,
            Answer.next_update_on,
            Answer.via,
            Answer.within_deadline,
        )
        .join(User, User.id == Answer.user_id)
        .where(Answer.alert_id == alert_id, Answer.organisation_id == organisation_id)
        .order_by(Answer.recorded_at, Answer.id)
    )
