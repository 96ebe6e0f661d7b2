"""Receipts: when answers are committed, the person who answered and the
administrators of each organisation answered for are told."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.answers.reply_emails import AnswerLines, describe_answer
from mailflow.answers.statuses import AnswerStatus
from mailflow.config import Settings
from mailflow.core.mail.one_off import ThreadHeaders, send_one_off
from mailflow.core.models import Alert, Answer, Delivery, Organisation, User
from mailflow.people.users import administrators_of

RECEIPT_KIND = "receipt"


def queue_receipts(
    session: Session,
    settings: Settings,
    *,
    user: User,
    alert: Alert,
    answers: Sequence[Answer],
    now: datetime,
) -> int:
    """Queue the receipts in the caller's transaction; returns how many."""
    orgs = {
        o.id: o
        for o in session.scalars(
            select(Organisation).where(Organisation.id.in_({a.organisation_id for a in answers}))
        )
    }
    lines_by_org = {a.organisation_id: describe_answer(orgs[a.organisation_id], a) for a in answers}
    recipients: dict[int, tuple[User, list[AnswerLines]]] = {
        user.id: (user, list(lines_by_org.values()))
    }
    for admin, org_id in administrators_of(session, orgs, besides=user.id):
        recipients.setdefault(admin.id, (admin, []))[1].append(lines_by_org[org_id])

    needs_update = any(
        a.status in (AnswerStatus.IN_PROGRESS.value, AnswerStatus.UNABLE.value) for a in answers
    )
    # Each receipt joins the thread of the alert email its reader received
    # (an administrator added after the alert went out received none).
    alert_message_ids: dict[int, str] = {
        user_id: message_id
        for user_id, message_id in session.execute(
            select(Delivery.user_id, Delivery.message_id).where(
                Delivery.alert_id == alert.id, Delivery.user_id.in_(list(recipients))
            )
        )
    }
    for recipient, lines in recipients.values():
        send_one_off(
            session,
            settings,
            template="receipt",
            context={
                "recipient_name": recipient.name,
                "for_answerer": recipient.id == user.id,
                "answerer_name": user.name,
                "answerer_email": user.email,
                "alert": alert,
                "lines": lines,
                "recorded_at": now,
                "within_deadline": now <= alert.deadline_at,
                "needs_update": needs_update,
            },
            to=recipient,
            kind=RECEIPT_KIND,
            now=now,
            thread=ThreadHeaders(alert_message_ids.get(recipient.id)),
        )
    return len(recipients)
