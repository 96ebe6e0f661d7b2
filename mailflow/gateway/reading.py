"""Reading an inbound message: who sent it, to which of our addresses, and
whether it is a person's reply, an automatic message, or a bounce.

Nothing here trusts the message: sizes are checked on the raw bytes before
the ``email`` package sees them, the sender and Message-ID are taken from
the raw header (``sender_check``), every other header is read defensively,
and a message that cannot be parsed is reported as such, never an exception.
"""

from __future__ import annotations

import email
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import EmailMessage, Message
from email.policy import default
from email.utils import getaddresses

from mailflow.core.mail.addresses import ServiceAddress, parse_service_address
from mailflow.gateway.raw_headers import limits_problem, mime_limits_problem, read_header_block
from mailflow.gateway.reply_subject import subject_of
from mailflow.gateway.reply_text import written_text
from mailflow.gateway.sender_check import dmarc_problem, message_id, strict_sender

# Headers that name where a message was delivered, most reliable first:
# the one list, read here and by the IMAP poller (gateway/imap_mailbox.py).
DELIVERY_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "To", "Cc")
AUTOMATIC_PRECEDENCE = {"bulk", "junk", "list", "auto_reply"}
MAX_REPORT_PARTS = 50
MAX_MIME_PARTS = 1000
MAX_MIME_DEPTH = 30


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
    """All that processing needs from a message, read from its bytes alone
    (a pure function of them, so it can run in a child process with a time
    bound, and outside any transaction)."""

    # Why it could not be read at all; None when it could.
    unreadable: str | None = None
    sender: str | None = None
    # Why there is no trustworthy sender, when there is none.
    sender_problem: str | None = None
    message_id: str | None = None
    # Why it is automatic mail that must get no answer; None for a person's.
    automatic: str | None = None
    report: DeliveryReport | None = None
    # Why our own server's DMARC verdict does not vouch for the sender; None
    # when it does, or when no authserv-id is set.
    dmarc_problem: str | None = None
    # Our addresses named in the delivery headers, most reliable first.
    delivered_to: tuple[str, ...] = ()
    # What the person wrote, without the quoted original (person's mail only).
    text: str = ""
    # The Subject as sent (bounded): the last place an answer is looked for.
    subject: str = ""


def _header(message: Message, name: str) -> str | None:
    """A header's text, or None when absent or beyond repair."""
    try:
        value = message.get(name)
    except Exception:  # the email package raises many kinds on broken headers
        return None
    return None if value is None else str(value)


def _mime_problem(message: Message) -> str | None:
    """Why the MIME structure is beyond what we read, walking it without
    recursion."""
    stack = [(message, 0)]
    seen = 0
    while stack:
        part, depth = stack.pop()
        seen += 1
        if seen > MAX_MIME_PARTS:
            return f"the message has more than {MAX_MIME_PARTS} MIME parts"
        if depth > MAX_MIME_DEPTH:
            return f"the message nests MIME parts deeper than {MAX_MIME_DEPTH}"
        children = part.get_payload() if part.is_multipart() else None
        if isinstance(children, list):
            stack.extend((c, depth + 1) for c in children if isinstance(c, Message))
    return None


def read_inbound(
    raw: bytes, *, envelope_from: str | None, source: str, authserv_id: str | None
) -> InboundReading:
    """Read a message; never raises, whatever the bytes."""
    try:
        return _read(raw, envelope_from=envelope_from, source=source, authserv_id=authserv_id)
    except (RecursionError, MemoryError) as exc:
        return InboundReading(f"the message cannot be parsed ({type(exc).__name__})")
    except Exception as exc:
        return InboundReading(f"the message cannot be parsed: {exc!r}")


def _read(
    raw: bytes, *, envelope_from: str | None, source: str, authserv_id: str | None
) -> InboundReading:
    beyond = limits_problem(raw) or mime_limits_problem(raw)
    if beyond is not None:
        return InboundReading(beyond)
    headers = read_header_block(raw)
    if not headers.fields:
        return InboundReading("the message has no headers")
    parsed = email.message_from_bytes(raw, policy=default)
    if not isinstance(parsed, EmailMessage):
        return InboundReading("the message has no headers")
    beyond = _mime_problem(parsed)
    if beyond is not None:
        return InboundReading(beyond)
    sender = strict_sender(headers)
    dmarc = None
    if authserv_id:
        dmarc = dmarc_problem(headers, authserv_id, sender.domain)
    automatic = automatic_reason(parsed, envelope_from=envelope_from, source=source)
    delivered_to = tuple(
        address
        for _, address in getaddresses(
            [v for name in DELIVERY_HEADERS for v in headers.values(name)]
        )
    )
    return InboundReading(
        sender=sender.address,
        sender_problem=sender.problem,
        message_id=message_id(headers),
        automatic=automatic,
        report=delivery_report(parsed),
        dmarc_problem=dmarc,
        delivered_to=delivered_to,
        text="" if automatic else written_text(parsed),
        subject="" if automatic else subject_of(parsed),
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


def find_service_address(
    envelope_to: Iterable[str], reading: InboundReading, mail_domain: str, *, source: str
) -> ServiceAddress | None:
    """Which of our addresses the message came to.  Over SMTP and LMTP only
    the envelope counts: our edge checked each recipient's key at RCPT,
    and the headers are whatever the sender wrote (a message to alerts@
    with "To: reply+KEY@" must not pass for a reply).  A message polled
    over IMAP has no envelope, so the delivery headers its mailbox keeps
    are read, most trustworthy first."""
    candidates = list(envelope_to)
    if source == "imap":
        candidates += reading.delivered_to
    for candidate in candidates:
        found = parse_service_address(candidate, mail_domain)
        if found is not None:
            return found
    return None


def find_mailbox(
    envelope_to: Iterable[str],
    reading: InboundReading,
    mail_domain: str,
    names: Iterable[str],
    *,
    source: str,
) -> str | None:
    """Which of our named mailboxes (``access@``, ``people@``) the message
    came to, by the same rule as ``find_service_address``: the envelope
    over SMTP and LMTP, the delivery headers too over IMAP."""
    wanted = {name.lower() for name in names}
    candidates = list(envelope_to)
    if source == "imap":
        candidates += reading.delivered_to
    for candidate in candidates:
        local, at, domain = candidate.strip().strip("<>").rpartition("@")
        if at and domain.lower() == mail_domain.lower() and local.lower() in wanted:
            return local.lower()
    return None
