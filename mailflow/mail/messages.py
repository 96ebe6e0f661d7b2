"""Assembling a finished email with the ``email`` package's API: headers
are set as objects, never formatted into strings by hand."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

from mailflow.mail.templates import RenderedEmail

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
    message.set_content(rendered.text, cte="quoted-printable")
    message.add_alternative(rendered.html, subtype="html", cte="quoted-printable")
    return message


def address(name: str, email: str) -> Address:
    username, _, domain = email.rpartition("@")
    return Address(display_name=name, username=username, domain=domain)
