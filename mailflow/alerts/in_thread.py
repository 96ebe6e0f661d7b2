"""Emails that follow an alert email to its recipient (a reminder, an
update): rendered from the alert's own context, sent in its thread, with
its reply address, so that mail clients fold them together and a reply is
read as an answer to the alert."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from mailflow.config import Settings
from mailflow.core.mail.addresses import reply_address
from mailflow.core.mail.messages import compose_message, notification_headers, thread_headers
from mailflow.core.mail.one_off import queue_email_to_person
from mailflow.core.mail.templates import render_service_email
from mailflow.core.models import Alert, Delivery, OutgoingEmail, User


def queue_in_alert_thread(
    session: Session,
    settings: Settings,
    *,
    template: str,
    context: dict[str, object],
    alert: Alert,
    delivery: Delivery,
    user: User,
    kind: str,
    now: datetime,
    extra_headers: dict[str, str] | None = None,
) -> OutgoingEmail:
    """Render ``templates/email/TEMPLATE/`` and queue it, in the caller's
    transaction, to the person the delivery was for: after the alert email
    in its thread (In-Reply-To and References name it), replies going to
    the delivery's reply key, from a bounce address of its own."""
    rendered = render_service_email(settings, template, context)
    headers = notification_headers(
        settings,
        user,
        now,
        reply_to=reply_address(delivery.reply_key, settings.mail_domain),
        extra=thread_headers(delivery.message_id)
        | {"X-Mailflow-Alert": alert.reference}
        | (extra_headers or {}),
    )
    return queue_email_to_person(
        session,
        settings,
        kind=kind,
        user=user,
        raw=compose_message(rendered, headers),
        now=now,
    )
