"""The auditors' emails about an alert whose deadline has passed: the
escalation at the deadline and the overdue follow-ups after it.  Each
lists the organisations that have not answered when it is composed (the
first of them in the body, every one in an attached CSV), and is dropped
when by then every organisation has answered."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from mailflow.config import Settings
from mailflow.core.mail.messages import build_message, notification_headers
from mailflow.core.mail.one_off import queue_email_to_person
from mailflow.core.mail.templates import render_service_email
from mailflow.core.models import ChaseKind, ChaserEmail, OutgoingEmail
from mailflow.deadlines.rechecking import ALL_ANSWERED, recheck_auditor
from mailflow.deadlines.reminder_emails import outgoing_kind
from mailflow.deadlines.unanswered import counts, list_unanswered

# Organisations listed in the body; the attachment has them all.
SHOWN_IN_BODY = 200


def compose_auditor_email(
    session: Session, settings: Settings, row: ChaserEmail, now: datetime
) -> OutgoingEmail | str:
    """The composer of escalation and follow-up emails."""
    found = recheck_auditor(session, row)
    if isinstance(found, str):
        return found
    alert, auditor = found
    listed = list_unanswered(session, alert.id, show=SHOWN_IN_BODY)
    if not listed.total:
        return ALL_ANSWERED
    zone = settings.zone
    context: dict[str, object] = {
        "alert": alert,
        "recipient_name": auditor.name,
        "follow_up": row.kind is ChaseKind.FOLLOW_UP,
        "days_overdue": (
            now.astimezone(zone).date() - alert.deadline_at.astimezone(zone).date()
        ).days,
        "counts": counts(session, alert.id),
        "listed": listed,
    }
    rendered = render_service_email(settings, "escalation", context)
    message = build_message(
        rendered,
        notification_headers(
            settings,
            auditor,
            now,
            extra={"X-Mailflow-Alert": alert.reference, "X-Mailflow-Chase": row.kind.value},
        ),
    )
    day = now.astimezone(zone).date().isoformat()
    message.add_attachment(
        listed.csv,
        maintype="text",
        subtype="csv",
        filename=f"{alert.reference}-not-answered-{day}.csv",
        params={"charset": "utf-8"},
    )
    return queue_email_to_person(
        session,
        settings,
        kind=outgoing_kind(row.kind),
        user=auditor,
        raw=bytes(message),
        now=now,
    )
