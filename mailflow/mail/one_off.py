"""Queueing a one-off email to a person (a welcome, a receipt, a reply to
their reply) with an envelope sender of its own, so that a bounce is
traced to the email and the person it was for."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from mailflow.config import Settings
from mailflow.domain.alerts import new_key
from mailflow.domain.models import OutgoingEmail, User
from mailflow.domain.outgoing import queue_email
from mailflow.mail.addresses import bounce_address


def queue_email_to_person(
    session: Session,
    settings: Settings,
    *,
    kind: str,
    user: User,
    raw: bytes,
    now: datetime,
    inbound_message_id: int | None = None,
) -> OutgoingEmail:
    """Queue, in the caller's transaction, an email to one person, sent from
    ``bounce+KEY@MAIL_DOMAIN`` with a key of its own.

    Replies to a person's reply ("confirm your answer", "not recorded") are
    sent from a bounce address too, not the null sender RFC 3834 allows for
    auto-replies: they go to a person, and a mistyped or closed mailbox
    should be seen.  This cannot loop: a report sent to a bounce address is
    only recorded, and inbound processing never answers a delivery report,
    automatic mail or mail without a sender.
    """
    key = new_key()
    return queue_email(
        session,
        kind=kind,
        recipient=user.email,
        user_id=user.id,
        mail_from=bounce_address(key, settings.mail_domain),
        bounce_key=key,
        raw=raw,
        now=now,
        inbound_message_id=inbound_message_id,
    )
