"""Assembling a finished email with the ``email`` package's API: headers
are set as objects, never formatted into strings by hand."""

from __future__ import annotations

import binascii
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP, compat32
from email.utils import format_datetime, formataddr, make_msgid

from mailflow.config import Settings
from mailflow.domain.models import User
from mailflow.mail.templates import RenderedEmail

# Our own automatic mail is marked so that well-behaved auto-responders
# (RFC 3834) and Exchange stay quiet, and nothing loops.
AUTO_SUBMITTED_GENERATED = "auto-generated"
AUTO_SUBMITTED_REPLIED = "auto-replied"
_BASE64_LINE = re.compile(b".{76}")
_ASCII_POLICY = compat32.clone(linesep="\r\n", max_line_length=78)


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


class AlternativeSkeleton:
    """A multipart/alternative message for sending in bulk: the headers
    every recipient shares, and the MIME structure, are built once with the
    email package; per recipient only the personal headers (built with the
    email package too) and the two bodies change.

    Building every message whole costs about 1.5 ms of header parsing and
    line-by-line generation, which dominated alert fan-out; this assembles
    the same bytes in a fraction of that.  A test checks that both ways give
    the same message.
    """

    def __init__(self, shared: dict[str, object], auto_submitted: str) -> None:
        self.policy = SMTP
        boundary = f"=_mailflow_{secrets.token_hex(16)}"
        head = EmailMessage(policy=SMTP)
        for name, value in shared.items():
            head[name] = value
        head["Auto-Submitted"] = auto_submitted
        head["X-Auto-Response-Suppress"] = "All"
        self.shared_head = b"".join(self.policy.fold_binary(k, v) for k, v in head.items())
        mime = EmailMessage(policy=SMTP)
        mime["MIME-Version"] = "1.0"
        mime["Content-Type"] = f'multipart/alternative; boundary="{boundary}"'
        self.mime_head = b"".join(self.policy.fold_binary(k, v) for k, v in mime.items())

        def part_head(subtype: str) -> bytes:
            part = EmailMessage(policy=SMTP)
            part["Content-Type"] = f'text/{subtype}; charset="utf-8"'
            part["Content-Transfer-Encoding"] = "base64"
            return b"".join(self.policy.fold_binary(k, v) for k, v in part.items())

        delimiter = f"\r\n--{boundary}\r\n".encode("ascii")
        self.before_text = b"\r\n" + delimiter.lstrip(b"\r\n") + part_head("plain") + b"\r\n"
        self.before_html = delimiter + part_head("html") + b"\r\n"
        self.closing = f"\r\n--{boundary}--\r\n".encode("ascii")
        self._folded: dict[tuple[str, str], bytes] = {}

    def _header(self, name: str, value: str) -> bytes:
        """One header, folded by the email package.  Values that repeat
        across recipients (the subject) are folded once."""
        key = (name, value)
        folded = self._folded.get(key)
        if folded is None:
            if "\r" in value or "\n" in value:
                raise ValueError(f"line break in the {name} header")
            if value.isascii():
                # Plain ASCII needs no encoded words: the simple folding of
                # the compat32 policy does, and costs far less per message.
                folded = _ASCII_POLICY.fold_binary(name, value)
            else:
                head = EmailMessage(policy=SMTP)
                head[name] = value
                folded = SMTP.fold_binary(name, head[name])
            if name == "Subject":
                self._folded[key] = folded
        return folded

    def assemble(
        self,
        *,
        subject: str,
        to: tuple[str, str],
        reply_to: str,
        message_id: str,
        text: str,
        html: str,
    ) -> bytes:
        return b"".join(
            (
                self.shared_head,
                self._header("Subject", subject),
                # formataddr quotes and, for a non-ASCII name, encodes it.
                self._header("To", formataddr(to, charset="utf-8")),
                self._header("Reply-To", reply_to),
                self._header("Message-ID", message_id),
                self.mime_head,
                self.before_text,
                _base64_lines(text),
                self.before_html,
                _base64_lines(html),
                self.closing,
            )
        )


def _base64_lines(text: str) -> bytes:
    # Text is encoded in its canonical form, with CRLF line breaks (RFC
    # 2046), in lines of 76 characters, as RFC 2045 asks.
    canonical = text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")
    encoded = binascii.b2a_base64(canonical, newline=False)
    return _BASE64_LINE.sub(b"\\g<0>\r\n", encoded).rstrip(b"\r\n")
