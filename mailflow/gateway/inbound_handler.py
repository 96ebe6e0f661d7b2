"""What the inbound SMTP (or LMTP) server says to each command: the policy,
apart from the server's lifecycle (``smtpd``) and its limits on sessions
(``smtp_limits``).

At MAIL, any sender is taken but one that could never be stored.  At RCPT,
only our own addresses: ``reply+KEY@`` and ``bounce+KEY@`` whose key is in
use (looked up on a thread, off the event loop), and the service addresses
at the mail domain, at most MAILFLOW_INBOUND_MAX_RECIPIENTS a message.  At
DATA, a message with a bare CR or LF, or headers beyond what the processing
job will read, is refused; any other is committed raw with its processing
job before the 250 (invariant 2), and any failure before that is a 451.
"""

from __future__ import annotations

import logging
import re

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope
from aiosmtpd.smtp import Session as SMTPSession

from mailflow.core import events
from mailflow.core.mail.addresses import ServiceAddress, parse_service_address
from mailflow.core.runtime import Runtime
from mailflow.gateway.group_commit import GroupCommitter
from mailflow.gateway.inbound_messages import Received
from mailflow.gateway.key_lookups import KeyLookups
from mailflow.gateway.raw_headers import limits_problem
from mailflow.gateway.routing import KeyKinds

log = logging.getLogger(__name__)

# A CR not followed by LF, or an LF not preceded by CR.
BARE_CR_OR_LF = re.compile(rb"\r(?!\n)|(?<!\r)\n")
# inbound_messages.envelope_from is VARCHAR(512): a longer sender could never
# be stored, and a 451 for it would only make the sender try for days.
ENVELOPE_FROM_MAX = 512

REPLY_ACCEPTED = "250 2.0.0 OK: message stored"
REPLY_TRY_LATER = "451 4.3.0 Temporary failure storing the message; please try again later"
REPLY_BARE_LINE_END = (
    "550 5.6.0 Message refused: it contains a bare CR or LF; "
    "lines must end with CRLF (RFC 5321 section 2.3.8)"
)
REPLY_HEADER_TOO_LARGE = "552 5.3.4 Message refused: {}"
REPLY_UNKNOWN_RECIPIENT = (
    "550 5.1.1 No such mailbox: this server only takes replies to its own alert emails"
)
REPLY_UNKNOWN_KEY = (
    "550 5.1.1 No such mailbox: this reply address is unknown or has expired; "
    "reply to a newer email about the alert"
)
REPLY_LOOKUP_FAILED = "451 4.3.0 Temporary failure checking the recipient; please try again later"
REPLY_TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients; send the rest in another message"


def _null_sender(mail_from: str | None) -> str | None:
    """The envelope sender to store: None for the null reverse-path
    ``<>`` of bounces and auto-replies (aiosmtpd gives it as "<>")."""
    if not mail_from or mail_from == "<>":
        return None
    return mail_from


def _unstorable_sender(address: str) -> str | None:
    """Why an envelope sender cannot be stored as text, or None."""
    if address == "<>":
        return None
    try:
        encoded = address.encode("utf-8")
    except UnicodeEncodeError:
        # aiosmtpd decodes with surrogateescape: the bytes were not UTF-8.
        return "sender address is not valid UTF-8"
    if len(encoded) > ENVELOPE_FROM_MAX:
        return "sender address too long"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in address):
        return "sender address contains control characters"
    return None


def _protocol(server: SMTP) -> str:
    return "lmtp" if isinstance(server, LMTP) else "smtp"


def _refused(server: SMTP, session: SMTPSession, stage: str, reply: str, **fields: str) -> str:
    """Log the refusal (the reply says why; never the address, whose key
    or local part is not the log's business) and return the reply."""
    code, _, reason = reply.partition(" ")
    peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
    events.refused(
        reason, via=_protocol(server), stage=stage, code=int(code), client=peer, **fields
    )
    return reply


class InboundHandler:
    """aiosmtpd handler: check recipients at RCPT, store at DATA.  A reply
    key is asked of ``key_kinds``, the shell's list of what keys belong to."""

    def __init__(
        self,
        runtime: Runtime,
        committer: GroupCommitter,
        lookups: KeyLookups,
        key_kinds: KeyKinds,
    ) -> None:
        self.runtime = runtime
        self.key_kinds = key_kinds
        self.committer = committer
        self.lookups = lookups
        # Messages being committed now (touched only on the event loop).
        self.storing = 0

    def accepts(self, address: str) -> bool:
        """Whether ``address`` is one of ours: reply+KEY or bounce+KEY at the
        mail domain, or one of the service addresses there."""
        settings = self.runtime.settings
        if parse_service_address(address, settings.mail_domain) is not None:
            return True
        local, at, domain = address.strip().strip("<>").rpartition("@")
        service = {name.lower() for name in settings.service_addresses}
        service.update(self.key_kinds.mailbox_names)
        if not at:
            # RFC 5321 4.5.1: <Postmaster> without a domain must be accepted.
            return domain.lower() == "postmaster" and "postmaster" in service
        return domain.lower() == settings.mail_domain.lower() and local.lower() in service

    async def handle_MAIL(
        self,
        server: SMTP,
        session: SMTPSession,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        # Any sender, including the null one of bounces; only a sender that
        # could never be stored is refused, permanently.
        problem = _unstorable_sender(address)
        if problem is not None:
            return _refused(server, session, "MAIL", f"553 5.1.7 {problem}")
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: SMTPSession,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= self.runtime.settings.inbound_max_recipients:
            return REPLY_TOO_MANY_RECIPIENTS
        if not self.accepts(address):
            return _refused(server, session, "RCPT", REPLY_UNKNOWN_RECIPIENT)
        ours = parse_service_address(address, self.runtime.settings.mail_domain)
        if ours is not None:
            refusal = await self._check_key(ours, session)
            if refusal is not None:
                return _refused(server, session, "RCPT", refusal, address_kind=ours.kind)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def _check_key(self, address: ServiceAddress, session: SMTPSession) -> str | None:
        """The refusal for a reply or bounce key no delivery has (or no
        longer has), or None.  Looked up on a thread, in a short read-only
        transaction, so the event loop keeps serving everyone else."""
        try:
            known = await self.lookups.in_use(address)
        except Exception:
            log.exception(
                "could not look a %s key up for %s: answered 451", address.kind, session.peer
            )
            return REPLY_LOOKUP_FAILED
        if not known:
            # The key itself is not logged: it may be a real, expired one.
            return REPLY_UNKNOWN_KEY
        return None

    async def handle_DATA(self, server: SMTP, session: SMTPSession, envelope: Envelope) -> str:
        """One reply for the message; for LMTP, ``InboundLMTP`` repeats it
        once per recipient (they share one stored copy and one fate)."""
        try:
            raw = envelope.original_content
            if raw is None:
                raise RuntimeError("aiosmtpd gave no message content")
            if BARE_CR_OR_LF.search(raw) is not None:
                return _refused(server, session, "DATA", REPLY_BARE_LINE_END)
            # A header beyond what the processing job will read is refused
            # now, while the sender can still be told (invariant 7).
            beyond = limits_problem(raw)
            if beyond is not None:
                return _refused(server, session, "DATA", REPLY_HEADER_TOO_LARGE.format(beyond))
            received = Received(
                raw=bytes(raw),
                source=_protocol(server),
                envelope_from=_null_sender(envelope.mail_from),
                envelope_to=list(envelope.rcpt_tos),
            )
            self.storing += 1
            try:
                message_id = await self.committer.submit(received)
            finally:
                self.storing -= 1
        except Exception:
            # The recipients are reply+KEY addresses: their keys are
            # credentials of a kind, so only their count is logged.
            # The sender's address is personal data: its domain says enough.
            log.exception(
                "could not store a message from %s (envelope from a sender at %r "
                "to %d recipients): answered 451",
                session.peer,
                (envelope.mail_from or "").rpartition("@")[2],
                len(envelope.rcpt_tos),
            )
            return REPLY_TRY_LATER
        events.reply_stored(
            message_id,
            size=len(received.raw),
            via=received.source,
            recipients=len(received.envelope_to),
        )
        # Only now, with the commit returned, may the sender forget it.
        return REPLY_ACCEPTED

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd's default is "500 Error: ...", a permanent failure that
        # would bounce a reply over our own fault; say "try later" instead.
        log.error("error in an SMTP session: answered 451", exc_info=error)
        return REPLY_TRY_LATER
