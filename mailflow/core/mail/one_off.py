"""One-off emails to one person (a welcome, a receipt, a reply to their
reply): an email is a template folder (``templates/email/NAME/`` with
subject.txt, body.txt and body.html) and a function returning its context;
``send_one_off`` renders it, adds the headers every such email carries and
queues it, with an envelope sender of its own so that a bounce is traced to
the email and the person it was for."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from email.utils import make_msgid

from sqlalchemy.orm import Session

from mailflow.config import Settings
from mailflow.core import links
from mailflow.core.mail.addresses import bounce_address, new_key, reply_address
from mailflow.core.mail.messages import (
    AUTO_SUBMITTED_GENERATED,
    AUTO_SUBMITTED_REPLIED,
    MessageHeaders,
    address,
    compose_message,
    notification_headers,
    thread_headers,
)
from mailflow.core.mail.templates import RenderedEmail, render_service_email
from mailflow.core.models import OutgoingEmail, User
from mailflow.core.outgoing import EmailToQueue, queue_email


@dataclass(frozen=True)
class TheirMessage:
    """A message of the person's that an email answers: its Message-ID as
    received (kept only if well formed), and the reply key it was sent to,
    so that they can answer our answer in turn."""

    message_id: str | None
    reply_key: str | None


@dataclass(frozen=True)
class ThreadHeaders:
    """Where an email sits in its reader's mailbox: in the thread of the
    alert email they received (its Message-ID without angle brackets),
    after the message of theirs it answers, if any."""

    alert_message_id: str | None
    answering: TheirMessage | None = None


def send_one_off(
    session: Session,
    settings: Settings,
    *,
    template: str,
    context: dict[str, object],
    to: User,
    kind: str,
    now: datetime,
    thread: ThreadHeaders | None = None,
    inbound_message_id: int | None = None,
    reply_key: str | None = None,
) -> OutgoingEmail:
    """Render the email in ``templates/email/TEMPLATE/`` and queue it, in
    the caller's transaction, to one person.  ``reply_key`` makes replies
    go to ``reply+KEY@MAIL_DOMAIN`` (an email asking for a decision)."""
    rendered, headers = one_off_email(
        settings,
        template=template,
        context=context,
        to=to,
        now=now,
        thread=thread,
        reply_key=reply_key,
    )
    return queue_email_to_person(
        session,
        settings,
        kind=kind,
        user=to,
        raw=compose_message(rendered, headers),
        now=now,
        inbound_message_id=inbound_message_id,
    )


def one_off_to_queue(
    settings: Settings,
    *,
    template: str,
    context: dict[str, object],
    to: User,
    kind: str,
    now: datetime,
) -> EmailToQueue:
    """What ``send_one_off`` queues, ready for ``queue_emails`` to queue
    with many others at once (``to`` needs only its id, address and name)."""
    rendered, headers = one_off_email(settings, template=template, context=context, to=to, now=now)
    key = new_key()
    return EmailToQueue(
        kind=kind,
        recipient=to.email,
        user_id=to.id,
        mail_from=bounce_address(key, settings.mail_domain),
        bounce_key=key,
        raw=compose_message(rendered, headers),
    )


def one_off_email(
    settings: Settings,
    *,
    template: str,
    context: dict[str, object],
    to: User,
    now: datetime,
    thread: ThreadHeaders | None = None,
    reply_key: str | None = None,
) -> tuple[RenderedEmail, MessageHeaders]:
    """What ``send_one_off`` sends, rendered, with its headers."""
    rendered = render_service_email(
        settings, template, {"access_new_link": access_new_link(settings, to.id, now)} | context
    )
    answering = thread.answering if thread else None
    if reply_key is None and answering is not None:
        reply_key = answering.reply_key
    headers = notification_headers(
        settings,
        to,
        now,
        reply_to=reply_address(reply_key, settings.mail_domain) if reply_key else None,
        # An answer to a person's message says so (RFC 3834), so that
        # their auto-responder does not answer it back.
        auto_submitted=AUTO_SUBMITTED_REPLIED if answering else AUTO_SUBMITTED_GENERATED,
        extra=(
            thread_headers(thread.alert_message_id, answering.message_id if answering else None)
            if thread
            else None
        ),
    )
    return rendered, headers


def access_new_payload(user_id: int) -> dict[str, object]:
    """What the footer link's token carries: the person, and a nonce, so
    that two emails signed in the same second carry different links and
    using one (the link is single use) does not use up the other."""
    return {"u": user_id, "n": secrets.token_urlsafe(6)}


def access_new_link(settings: Settings, user_id: int, now: datetime) -> str:
    """The footer link of every email to a person: "Request access for
    another organisation", a page bound to them."""
    return links.make(settings, links.ACCESS_NEW_LINK, access_new_payload(user_id), now)


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


def send_one_off_to_address(
    session: Session,
    settings: Settings,
    *,
    template: str,
    context: dict[str, object],
    to: str,
    kind: str,
    now: datetime,
    their_message_id: str | None,
    inbound_message_id: int | None = None,
) -> OutgoingEmail:
    """Queue, in the caller's transaction, an email to an address that is
    no person's: an answer to someone we do not know who wrote to one of
    our mailboxes, or a request sent to the service desk.  No person, so
    no personal links, no footer link and no reply key.  An answer sits in
    the thread of their message and says it answers it (RFC 3834), so
    their auto-responder stays quiet."""
    rendered = render_service_email(settings, template, context)
    headers = MessageHeaders(
        sender=settings.from_header,
        to=address("", to),
        message_id=make_msgid(domain=settings.mail_domain).strip("<>"),
        date=now,
        auto_submitted=AUTO_SUBMITTED_REPLIED if their_message_id else AUTO_SUBMITTED_GENERATED,
        extra=thread_headers(None, their_message_id) if their_message_id else {},
    )
    key = new_key()
    return queue_email(
        session,
        kind=kind,
        recipient=to,
        mail_from=bounce_address(key, settings.mail_domain),
        bounce_key=key,
        raw=compose_message(rendered, headers),
        now=now,
        inbound_message_id=inbound_message_id,
    )
