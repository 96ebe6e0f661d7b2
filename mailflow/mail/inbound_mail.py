"""Reading an inbound message: who sent it, to which of our addresses, and
whether it is a person's reply, an automatic message, or a bounce.

Nothing here trusts the message: every header is read defensively, and a
message that cannot be parsed is reported as such, never an exception.
"""

from __future__ import annotations

import email
import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import EmailMessage, Message
from email.policy import default
from email.utils import getaddresses, parseaddr

from mailflow.mail.addresses import ServiceAddress, parse_service_address

# Headers that name where a message was delivered, most reliable first.
DELIVERY_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "To", "Cc")
AUTOMATIC_PRECEDENCE = {"bulk", "junk", "list", "auto_reply"}
MAX_REPORT_PARTS = 50


@dataclass(frozen=True)
class DeliveryReport:
    """The first recipient block of an RFC 3464 delivery status notification."""

    action: str
    status: str
    diagnostic: str | None
    final_recipient: str | None

    @property
    def failed(self) -> bool:
        return self.action == "failed"

    def describe(self) -> str:
        text = f"bounced: {self.status}"
        return f"{text} ({self.diagnostic})" if self.diagnostic else text


@dataclass(frozen=True)
class InboundReading:
    message: EmailMessage | None
    # Why it could not be read at all; None when it could.
    unreadable: str | None = None
    sender: str | None = None
    message_id: str | None = None
    # Why it is automatic mail that must get no answer; None for a person's.
    automatic: str | None = None
    report: DeliveryReport | None = None
    dmarc_failed: bool = False


def _header(message: Message, name: str) -> str | None:
    """A header's text, or None when absent or beyond repair."""
    try:
        value = message.get(name)
    except Exception:  # the email package raises many kinds on broken headers
        return None
    return None if value is None else str(value)


def _all_headers(message: Message, name: str) -> list[str]:
    try:
        return [str(v) for v in message.get_all(name, [])]
    except Exception:
        return []


def read_inbound(
    raw: bytes, *, envelope_from: str | None, source: str, authserv_id: str | None
) -> InboundReading:
    try:
        parsed = email.message_from_bytes(raw, policy=default)
    except (RecursionError, MemoryError) as exc:
        reason = f"the message cannot be parsed ({type(exc).__name__})"
        return InboundReading(None, unreadable=reason)
    except Exception as exc:
        return InboundReading(None, unreadable=f"the message cannot be parsed: {exc!r}")
    if not isinstance(parsed, EmailMessage) or not parsed.keys():
        return InboundReading(None, unreadable="the message has no headers")

    sender = None
    from_header = _header(parsed, "From")
    if from_header:
        _, address = parseaddr(from_header)
        if "@" in address:
            sender = address.strip().lower()
    return InboundReading(
        parsed,
        sender=sender,
        message_id=_header(parsed, "Message-ID"),
        automatic=automatic_reason(parsed, envelope_from=envelope_from, source=source),
        report=delivery_report(parsed),
        dmarc_failed=dmarc_failed(parsed, authserv_id),
    )


def automatic_reason(message: Message, *, envelope_from: str | None, source: str) -> str | None:
    """Why this message was sent by a machine (RFC 3834 and common practice),
    or None for a person's.  Outlook puts X-Auto-Response-Suppress on
    ordinary mail, so that header says nothing."""
    if source in ("smtp", "lmtp") and not envelope_from:
        return "empty envelope sender"
    return_path = _header(message, "Return-Path")
    if source == "imap" and return_path is not None and return_path.strip() in ("<>", ""):
        return "empty return path"
    auto_submitted = (_header(message, "Auto-Submitted") or "").strip().lower()
    if auto_submitted and auto_submitted.split(";")[0].strip() != "no":
        return f"Auto-Submitted: {auto_submitted}"
    precedence = (_header(message, "Precedence") or "").strip().lower()
    if precedence in AUTOMATIC_PRECEDENCE:
        return f"Precedence: {precedence}"
    for name in ("X-Autoreply", "X-Autorespond"):
        if _header(message, name) is not None:
            return f"{name} header"
    if message.get_content_type() == "multipart/report":
        return "a delivery or read report"
    return None


def delivery_report(message: Message) -> DeliveryReport | None:
    """The delivery status of an RFC 3464 report, or None for any other
    message."""
    if message.get_content_type() != "multipart/report":
        return None
    if str(message.get_param("report-type") or "").lower() != "delivery-status":
        return None
    try:
        parts = message.get_payload()
    except Exception:
        return None
    if not isinstance(parts, list):
        return None
    for part in parts[:MAX_REPORT_PARTS]:
        if not isinstance(part, Message) or part.get_content_type() != "message/delivery-status":
            continue
        blocks = part.get_payload()
        if not isinstance(blocks, list):
            continue
        # The first block is about the message; the next are per recipient.
        for block in blocks[1:]:
            if not isinstance(block, Message):
                continue
            action = (_header(block, "Action") or "").strip().lower()
            status = (_header(block, "Status") or "").strip()
            if action:
                return DeliveryReport(
                    action=action,
                    status=status or "unknown",
                    diagnostic=_clean(_header(block, "Diagnostic-Code")),
                    final_recipient=_clean(_header(block, "Final-Recipient")),
                )
    return None


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    return " ".join(value.split())[:500] or None


_RESULT = re.compile(r"\bdmarc\s*=\s*([a-z]+)", re.IGNORECASE)


def dmarc_failed(message: Message, authserv_id: str | None) -> bool:
    """Whether our own MTA (and only ours: anyone can write this header)
    reported a DMARC failure."""
    if not authserv_id:
        return False
    for value in _all_headers(message, "Authentication-Results"):
        server = value.split(";", 1)[0].strip().split()[0:1]
        if not server or server[0].lower() != authserv_id.lower():
            continue
        for result in _RESULT.findall(value):
            if result.lower() == "fail":
                return True
    return False


def find_service_address(
    envelope_to: Iterable[str], message: Message | None, mail_domain: str
) -> ServiceAddress | None:
    """Which of our addresses the message came to: the envelope first (the
    SMTP edge records the real recipients), then the headers an IMAP
    mailbox keeps, in order of how much they can be trusted."""
    candidates = list(envelope_to)
    if message is not None:
        for name in DELIVERY_HEADERS:
            candidates.extend(addr for _, addr in getaddresses(_all_headers(message, name)))
    for candidate in candidates:
        found = parse_service_address(candidate, mail_domain)
        if found is not None:
            return found
    return None
