"""Answers read from a reply wait here until the person confirms them with
a second factor (the web page commits them; nothing here does)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.domain.audit import record_event
from mailflow.domain.models import (
    AlertAudience,
    Confirmation,
    Membership,
    Organisation,
    PendingAnswer,
    Role,
)
from mailflow.domain.statuses import AnswerStatus


@dataclass(frozen=True)
class AnswerToConfirm:
    organisation_code: str
    status: AnswerStatus
    note: str | None = None
    reason: str | None = None
    mitigations: str | None = None
    expected_on: date | None = None


def answerable_organisations(
    session: Session, *, user_id: int, alert_id: int
) -> list[Organisation]:
    """The organisations in the alert's audience this person answers for
    (administrator or responder), in code order."""
    return list(
        session.scalars(
            select(Organisation)
            .join(Membership, Membership.organisation_id == Organisation.id)
            .join(AlertAudience, AlertAudience.organisation_id == Organisation.id)
            .where(
                Membership.user_id == user_id,
                Membership.role.in_([Role.ADMINISTRATOR, Role.RESPONDER]),
                AlertAudience.alert_id == alert_id,
            )
            .order_by(Organisation.code)
        )
    )


def record_pending_answers(
    session: Session,
    *,
    user_id: int,
    alert_id: int,
    delivery_id: int | None,
    inbound_message_id: int | None,
    answers: Sequence[AnswerToConfirm],
    now: datetime,
    lifetime: timedelta,
) -> Confirmation:
    """Record answers as pending, for the person to confirm.  Each answer
    must be for an organisation they answer for in this alert."""
    allowed = {
        o.code: o for o in answerable_organisations(session, user_id=user_id, alert_id=alert_id)
    }
    missing = [a.organisation_code for a in answers if a.organisation_code not in allowed]
    if missing:
        raise PermissionError(f"not an organisation this person answers for: {', '.join(missing)}")
    if not answers:
        raise ValueError("no answers to record")
    confirmation = Confirmation(
        user_id=user_id,
        alert_id=alert_id,
        delivery_id=delivery_id,
        inbound_message_id=inbound_message_id,
        nonce=secrets.token_urlsafe(24),
        created_at=now,
        expires_at=now + lifetime,
    )
    session.add(confirmation)
    session.flush()
    for answer in answers:
        session.add(
            PendingAnswer(
                confirmation_id=confirmation.id,
                organisation_id=allowed[answer.organisation_code].id,
                status=answer.status.value,
                note=answer.note,
                reason=answer.reason,
                mitigations=answer.mitigations,
                expected_on=answer.expected_on,
            )
        )
    session.flush()
    record_event(
        session,
        at=now,
        actor=f"user:{user_id}",
        action="answers.pending",
        subject=f"confirmation:{confirmation.id}",
        alert_id=alert_id,
        answers={a.organisation_code: a.status.value for a in answers},
    )
    return confirmation
