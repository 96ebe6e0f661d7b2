"""A finished email to one person: its headers, and the two ways to make
it.  ``build_message`` uses the ``email`` package's API (headers set as
objects, never formatted into strings by hand), for an email that gets
more parts (an attachment, inline images) and as the reference;
``compose_message`` writes the same email from prepared pieces
(``skeleton``), several times faster, for every other email."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

from mailflow.config import Settings
from mailflow.core.mail.skeleton import (
    alternative_body,
    fold_address,
    fold_header,
    transfer_encoding,
)
from mailflow.core.mail.templates import RenderedEmail
from mailflow.core.models import User

# Our own automatic mail is marked so that well-behaved auto-responders
# (RFC 3834) and Exchange stay quiet, and nothing loops.
AUTO_SUBMITTED_GENERATED = "auto-generated"
AUTO_SUBMITTED_REPLIED = "auto-replied"


@dataclass(frozen=True)
class MessageHeaders:
    sender: Address
    to: Address
    message_id: str
    date: datetime
    reply_to: str | None = None
    auto_submitted: str = AUTO_SUBMITTED_GENERATED
    extra: dict[str, str] = field(default_factory=dict)


def build_message(rendered: RenderedEmail, headers: MessageHeaders) -> EmailMessage:
    message = EmailMessage(policy=SMTP)
    message["Subject"] = rendered.subject
    message["From"] = headers.sender
    message["To"] = headers.to
    if headers.reply_to:
        message["Reply-To"] = headers.reply_to
    message["Date"] = format_datetime(headers.date)
    message["Message-ID"] = f"<{headers.message_id}>"
    message["Auto-Submitted"] = headers.auto_submitted
    message["X-Auto-Response-Suppress"] = "All"
    for name, value in headers.extra.items():
        message[name] = value
    message.set_content(rendered.text, cte=transfer_encoding(rendered.text))
    message.add_alternative(rendered.html, subtype="html", cte=transfer_encoding(rendered.html))
    return message


def compose_message(rendered: RenderedEmail, headers: MessageHeaders) -> bytes:
    """The email ``build_message`` builds, with the same headers in the
    same order, written from prepared pieces: a test checks that both
    read the same once parsed."""
    lines = [
        fold_header("Subject", rendered.subject),
        fold_address("From", headers.sender),
        fold_address("To", headers.to),
    ]
    if headers.reply_to:
        lines.append(fold_header("Reply-To", headers.reply_to))
    lines += [
        fold_header("Date", format_datetime(headers.date)),
        fold_header("Message-ID", f"<{headers.message_id}>"),
        fold_header("Auto-Submitted", headers.auto_submitted),
        fold_header("X-Auto-Response-Suppress", "All"),
    ]
    lines += [fold_header(name, value) for name, value in headers.extra.items()]
    lines.append(alternative_body(rendered.text, rendered.html))
    return b"".join(lines)


# A msg-id as RFC 5322 (3.6.4) defines it, in its common dot-atom form.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\-]"
_MSG_ID = re.compile(rf"<{_ATOM}{{1,200}}@(?:{_ATOM}|[\[\]]){{1,200}}>")


def well_formed_message_id(value: str | None) -> str | None:
    """The Message-ID of a message we received, when it is exactly one
    well-formed msg-id; None otherwise (a sender controls it, and it goes
    into headers we write)."""
    if value is None:
        return None
    value = value.strip()
    return value if _MSG_ID.fullmatch(value) else None


def thread_headers(alert_message_id: str | None, answering: str | None = None) -> dict[str, str]:
    """In-Reply-To and References that put an email in the thread of the
    alert email its person received (``alert_message_id``, without angle
    brackets), after the message of theirs it answers, if any.  The
    person's own References are not copied: the alert's Message-ID is the
    thread's root either way."""
    chain = [f"<{alert_message_id}>"] if alert_message_id else []
    answered = well_formed_message_id(answering)
    if answered and answered not in chain:
        chain.append(answered)
    if not chain:
        return {}
    return {"In-Reply-To": chain[-1], "References": " ".join(chain)}


def notification_headers(
    settings: Settings,
    user: User,
    now: datetime,
    *,
    reply_to: str | None = None,
    auto_submitted: str = AUTO_SUBMITTED_GENERATED,
    extra: dict[str, str] | None = None,
) -> MessageHeaders:
    """Headers for a one-off email to one person (a receipt, a welcome, a
    reply to a reply): from the service, with a fresh Message-ID at our
    domain."""
    return MessageHeaders(
        sender=settings.from_header,
        to=address(user.name, user.email),
        message_id=make_msgid(domain=settings.mail_domain).strip("<>"),
        date=now,
        reply_to=reply_to,
        auto_submitted=auto_submitted,
        extra=extra or {},
    )


def address(name: str, email: str) -> Address:
    username, _, domain = email.rpartition("@")
    return Address(display_name=name, username=username, domain=domain)
