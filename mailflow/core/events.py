"""One log line for each significant event, with its fields as keys
(``mailflow.core.logs`` writes them as JSON or readable text): an email
sent, deferred or failed; a reply stored and processed; a commit after a
second factor; a refusal; a fan-out's progress.

Each call site makes one call here, so what a line holds is decided in
one place.  What never goes in: a link token, a reply or bounce key, a
secret, a whole email address (personal data: an email line names the
recipient's domain and, where there is one, the user's id, which the
service desk can look up), or a message's text.  Reasons that come from
outside (a relay's answer) are kept as they are: the formatter quotes
them, so they cannot start a line of their own."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from functools import partial

from sqlalchemy.orm import Session

from mailflow.core.logs import EVENT_FIELDS
from mailflow.core.on_commit import after_commit
from mailflow.core.sending import NextState, SendResult, Step

log = logging.getLogger("mailflow.events")

# Each relay answer or reason is cut to this: enough for a support call.
MAX_TEXT = 500
_EMAIL_EVENTS = {
    Step.SENT: "email_sent",
    Step.DEFERRED: "email_deferred",
    Step.FAILED: "email_failed",
}


def emit(
    event: str, message: str, fields: Mapping[str, object], *, level: int = logging.INFO
) -> None:
    """Log ``event`` (at INFO unless it is a failure) with ``fields`` as
    keys of the line."""
    if log.isEnabledFor(level):
        log.log(level, message, extra={"event": event, EVENT_FIELDS: tuple(fields), **fields})


def emit_on_commit(
    session: Session,
    event: str,
    message: str,
    fields: Mapping[str, object],
    *,
    level: int = logging.INFO,
) -> None:
    """``emit``, once the session's transaction commits: a line that says
    something was recorded says what the database says (none for a record
    rolled back, which a retry would log again)."""
    after_commit(session, partial(emit, event, message, fields, level=level))


# The local part of an email address in free text (a relay's answer often
# echoes the recipient; an outcome may name a sender): a whole address is
# personal data, so a line keeps only the domain.
_ADDRESS = re.compile(r"[^\s<>\"'(),;:@\[\]]+@(?=[A-Za-z0-9.-]+)")


def _cut(text: str | None) -> str | None:
    """Free text for a line: at most MAX_TEXT characters, addresses reduced
    to their domains (the whole text stays in the database)."""
    return None if text is None else _ADDRESS.sub("…@", text[:MAX_TEXT])


def recipient_domain(address: str) -> str:
    """The domain of an address, lower case: which organisation's mail
    system took it, without naming the person."""
    return address.rpartition("@")[2].strip(">").lower()


def email_outcome(
    session: Session,
    kind: str,
    email_id: int,
    recipient: str,
    result: SendResult,
    state: NextState,
    *,
    user_id: int | None = None,
    attempts: int | None = None,
) -> None:
    """What one try at sending an email came to, logged once the session's
    transaction recording it commits.  ``kind`` is "delivery" for an alert
    email (``email_id`` is the delivery's id) or the kind of a one-off
    email (``email_id`` is the outgoing email's id)."""
    event = _EMAIL_EVENTS[state.step]
    id_field = "delivery_id" if kind == "delivery" else "email_id"
    fields: dict[str, object] = {
        id_field: email_id,
        "kind": kind,
        "user_id": user_id,
        "recipient_domain": recipient_domain(recipient),
        "attempts": attempts,
        "relay_reply": _cut(result.reply),
    }
    if state.step is not Step.SENT:
        fields["reason"] = _cut(state.error)
    if state.next_attempt_at is not None:
        fields["next_attempt_at"] = state.next_attempt_at.isoformat()
    emit_on_commit(session, event, event.replace("_", " "), fields)


def reply_stored(message_id: int, *, size: int, via: str, recipients: int) -> None:
    """A raw inbound message committed (the 250, or the IMAP flag, follows)."""
    fields = {"message_id": message_id, "size": size, "via": via, "recipients": recipients}
    emit("reply_stored", "reply stored", fields)


def reply_processed(session: Session, message_id: int, *, state: str, outcome: str) -> None:
    """What processing a stored message came to, logged once the session's
    transaction recording it commits: processed (an answer recorded
    pending, a confirmation sent, a bounce marked), ignored (and why) or
    failed (and why, at WARNING)."""
    fields = {"message_id": message_id, "state": str(state), "outcome": _cut(outcome)}
    level = logging.WARNING if state == "failed" else logging.INFO
    emit_on_commit(session, "reply_processed", "reply processed", fields, level=level)


def refused(reason: str, *, via: str, **fields: object) -> None:
    """A request or message turned away: ``via`` is smtp, lmtp or web;
    ``fields`` say where (the SMTP stage and code, or the web route's
    template and a digest of its token)."""
    emit("refused", "refused", {"via": via, "reason": _cut(reason), **fields})


def committed(event: str, *, user_id: int, route: str, **fields: object) -> None:
    """A change committed after its person's second factor."""
    emit(event, event.replace("_", " "), {"user_id": user_id, "route": route, **fields})


def fanout_progress(alert_id: int, *, sent: int, failed: int, waiting: int, total: int) -> None:
    """How far an alert's emails have gone: sent (or since bounced),
    failed, still waiting (queued, sending or deferred), of the total."""
    fields = {"alert_id": alert_id, "sent": sent, "failed": failed, "waiting": waiting}
    emit("fanout_progress", "fan-out progress", {**fields, "total": total})
