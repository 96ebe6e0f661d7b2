"""Building the mail people and mail servers send us, and reading the mail
we send, for tests."""

from __future__ import annotations

import email
from email.message import EmailMessage
from email.policy import SMTP, default
from email.utils import make_msgid

from mailflow.domain.inbound import store_inbound_message
from mailflow.domain.models import InboundMessage
from mailflow.workers.inbound import process_inbound
from mailflow.workers.runtime import Runtime


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


def a_reply(sender: str, to: str, body: str, *, message_id: str | None = None) -> bytes:
    """A person's reply, as their mail client sends it."""
    message = EmailMessage(policy=SMTP)
    message["From"] = sender
    message["To"] = to
    message["Subject"] = "Re: [CC-4720 HIGH] Remote code execution"
    message["Message-ID"] = message_id or make_msgid(domain="client.example")
    message.set_content(body)
    return bytes(message)


def delivery_report(bounce_to: str, recipient: str) -> bytes:
    """An RFC 3464 report that mail to ``recipient`` could not be delivered
    (the mailbox does not exist), sent to the bounce address ``bounce_to``."""
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example>\r\n"
        f"To: {bounce_to}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: {make_msgid(domain='mx.example')}\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\r\n'
        "\r\n--b1\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--b1\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\n"
        "Action: failed\r\nStatus: 5.1.1\r\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: Recipient address rejected\r\n"
        "\r\n--b1--\r\n"
    ).encode()


def receive_and_process(
    runtime: Runtime, raw: bytes, *, to: str, envelope_from: str | None
) -> InboundMessage:
    """Store a message as the inbound server does, then process it."""
    with runtime.sessions.begin() as session:
        stored = store_inbound_message(
            session,
            raw,
            source="smtp",
            envelope_from=envelope_from,
            envelope_to=[to],
            now=runtime.clock(),
        )
        message_id = stored.id
    process_inbound(runtime, message_id)
    with runtime.sessions() as session:
        return session.get_one(InboundMessage, message_id)
