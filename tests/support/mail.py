"""Building the mail people and mail servers send us, and reading the mail
we send, for tests."""

from __future__ import annotations

import email
from email.message import EmailMessage
from email.policy import SMTP, default
from email.utils import make_msgid

from mailflow.core.models import InboundMessage
from mailflow.core.runtime import Runtime
from mailflow.gateway.inbound_messages import store_inbound_message
from mailflow.workers.inbound import process_inbound

# The mail domain of the tests' settings (tests/conftest.py).
MAIL_DOMAIN = "alerts.test"


def parsed(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=default)
    assert isinstance(message, EmailMessage)
    return message


def plain_text(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    text: str = body.get_content()
    return text


def html_text(message: EmailMessage) -> str:
    body = message.get_body(("html",))
    assert body is not None
    html: str = body.get_content()
    return html


def a_reply(
    sender: str,
    to: str,
    body: str,
    *,
    message_id: str | None = None,
    subject: str = "Re: [CC-4720 HIGH] Remote code execution",
    headers: dict[str, str] | None = None,
) -> bytes:
    """A person's reply, as their mail client sends it."""
    message = EmailMessage(policy=SMTP)
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = message_id or make_msgid(domain="client.example")
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(body)
    return bytes(message)


def reply(
    sender: str,
    body: str,
    *,
    key: str | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    """A reply to the reply address with ``key`` at the tests' mail domain
    (a made-up key when none is given), with ``headers`` added."""
    return a_reply(
        sender,
        f"reply+{key or 'x'}@{MAIL_DOMAIN}",
        body,
        subject="Re: [HIGH] CC-4720",
        headers=headers,
    )


def html_message(markup: str) -> EmailMessage:
    """A message whose only body is the HTML ``markup``."""
    message = EmailMessage()
    message["Subject"] = "Re: Alert"
    message.set_content(markup, subtype="html")
    return message


def plain_message(text: str) -> EmailMessage:
    """A message whose only body is the plain ``text``."""
    message = EmailMessage()
    message["Subject"] = "Re: Alert"
    message.set_content(text)
    return message


def delivery_report(
    bounce_to: str,
    recipient: str,
    *,
    action: str = "failed",
    reporting_mta: str = "mx.example",
) -> bytes:
    """An RFC 3464 report from ``reporting_mta`` that mail to ``recipient``
    could not be delivered (the mailbox does not exist; with ``action``
    "delayed", not yet), sent to the bounce address ``bounce_to``."""
    status = "5.1.1" if action == "failed" else "4.4.1"
    return (
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>\r\n"
        f"To: {bounce_to}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: {make_msgid(domain=reporting_mta)}\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\r\n'
        "\r\n--b1\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--b1\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; {reporting_mta}\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\n"
        f"Action: {action}\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: Recipient address rejected\r\n"
        "\r\n--b1--\r\n"
    ).encode()


def delivery_status_notification(bounce_to: str, action: str = "failed") -> bytes:
    """Riverside's mail server reporting to ``bounce_to`` that Raj's mail
    failed (or, with ``action`` "delayed", is delayed)."""
    return delivery_report(
        bounce_to,
        "raj@riverside.example",
        action=action,
        reporting_mta="mx.riverside.example",
    )


def receive(
    runtime: Runtime,
    raw: bytes,
    *,
    to: str,
    envelope_from: str | None = "someone@client.example",
    source: str = "smtp",
) -> InboundMessage:
    """Store a message as the inbound server (or the IMAP poller, by
    ``source``) does, then process it."""
    with runtime.sessions.begin() as session:
        stored = store_inbound_message(
            session,
            raw,
            source=source,
            envelope_from=envelope_from,
            envelope_to=[to],
            now=runtime.clock(),
        )
        message_id = stored.id
    process_inbound(runtime, message_id)
    with runtime.sessions() as session:
        return session.get_one(InboundMessage, message_id)
