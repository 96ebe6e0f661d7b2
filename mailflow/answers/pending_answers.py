"""Answers read from a reply wait here until the person confirms them with
a second factor (the web page commits them; nothing here does)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailflow.answers.answer_values import AnswerValue
from mailflow.core import pending
from mailflow.core.audit import record_event
from mailflow.core.models import (
    AlertAudience,
    Confirmation,
    Membership,
    Organisation,
    PendingAnswer,
    Role,
)
from mailflow.people.users import lock_person


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
    answers: Sequence[AnswerValue],
    now: datetime,
    lifetime: timedelta,
) -> Confirmation:
    """Record answers as pending, for the person to confirm.  Each answer
    must be for an organisation they answer for in this alert."""
    allowed = {
        o.code: o for o in answerable_organisations(session, user_id=user_id, alert_id=alert_id)
    }
    missing = [a.organisation for a in answers if a.organisation not in allowed]
    if missing:
        raise PermissionError(f"not an organisation this person answers for: {', '.join(missing)}")
    if not answers:
        raise ValueError("no answers to record")
    confirmation = Confirmation(
        alert_id=alert_id, delivery_id=delivery_id, inbound_message_id=inbound_message_id
    )
    # The nonce is the action's token: the link carries it, the row keeps
    # it (the "confirm your answer" email is composed from the row).
    confirmation.nonce = pending.open_action(
        confirmation, kind=pending.REPLY_ANSWERS, user_id=user_id, now=now, lifetime=lifetime
    )
    session.add(confirmation)
    session.flush()
    for answer in answers:
        session.add(
            PendingAnswer(
                confirmation_id=confirmation.id,
                organisation_id=allowed[answer.organisation].id,
                status=answer.status.value,
                note=answer.note,
                reason=answer.reason,
                mitigations=answer.mitigations,
                expected_on=answer.expected_on,
                next_update_on=answer.next_update_on,
            )
        )
    session.flush()
    superseded = _supersede_older(
        session,
        confirmation,
        covering={allowed[a.organisation].id for a in answers},
        now=now,
    )
    record_event(
        session,
        at=now,
        actor=f"user:{user_id}",
        action="answers.pending",
        subject=f"confirmation:{confirmation.id}",
        alert_id=alert_id,
        answers={a.organisation: a.status.value for a in answers},
        superseded=superseded,
    )
    return confirmation


def _supersede_older(
    session: Session, newer: Confirmation, *, covering: set[int], now: datetime
) -> list[int]:
    """Retire the person's open confirmations for the same alert whose
    organisations the newer one all covers: their links then say they were
    replaced.  One that names an organisation the newer does not stays
    open, so no answer is lost."""
    older = session.scalars(
        select(Confirmation).where(
            Confirmation.user_id == newer.user_id,
            Confirmation.alert_id == newer.alert_id,
            Confirmation.id != newer.id,
            Confirmation.used_at.is_(None),
            Confirmation.superseded_at.is_(None),
            Confirmation.expires_at > now,
        )
    ).all()
    retired: list[Confirmation] = []
    for confirmation in older:
        named = set(
            session.scalars(
                select(PendingAnswer.organisation_id).where(
                    PendingAnswer.confirmation_id == confirmation.id
                )
            )
        )
        if named <= covering:
            retired.append(confirmation)
    pending.supersede(retired, now=now)
    return [confirmation.id for confirmation in retired]


def confirmations_sent_since(session: Session, *, user_id: int, since: datetime) -> int:
    """How many confirmations were made for this person since ``since``:
    each sends one "confirm your answer" email.  The person's row is locked
    first (on PostgreSQL; SQLite's transactions already take turns), so
    replies processed at once are counted one after another."""
    lock_person(session, user_id)
    return (
        session.scalar(
            select(func.count()).where(
                Confirmation.user_id == user_id, Confirmation.created_at >= since
            )
        )
        or 0
    )
