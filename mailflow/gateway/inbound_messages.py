"""Inbound mail as the database sees it: stored raw first, processed by a
job afterwards, never lost in between."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, exists, func, insert, select
from sqlalchemy.orm import Session

from mailflow.core import events, metrics
from mailflow.core.audit import record_event
from mailflow.core.jobs import add_job, new_job_values
from mailflow.core.models import (
    Base,
    Confirmation,
    InboundMessage,
    InboundState,
    OutgoingEmail,
)
from mailflow.core.text import escape_controls

PROCESS_INBOUND = "process_inbound"
MESSAGE_ID_MAX = 998


@dataclass(frozen=True)
class ImapOrigin:
    mailbox: str
    uidvalidity: int
    uid: int


def _message_id_header(raw: bytes) -> str | None:
    """The Message-ID from the raw header block, without a full parse (a
    message is stored before anything trusts its structure)."""
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    for line in head.splitlines():
        if line[:11].lower() == b"message-id:":
            # PostgreSQL text cannot hold NUL; such a header is junk anyway.
            value = line[11:].strip().decode("ascii", "replace").replace("\x00", "")
            return value[:MESSAGE_ID_MAX] or None
    return None


def store_inbound_message(
    session: Session,
    raw: bytes,
    *,
    source: str,
    envelope_from: str | None,
    envelope_to: list[str],
    now: datetime,
    imap: ImapOrigin | None = None,
) -> InboundMessage:
    """Keep the message as received and queue its processing, in the
    caller's transaction: once that commits, the message cannot be lost."""
    [message_id] = store_received_messages(
        session, [Received(raw, source, envelope_from, envelope_to, imap)], now=now
    )
    return session.get_one(InboundMessage, message_id)


@dataclass(frozen=True)
class Received:
    """A message as an edge hands it over for storing."""

    raw: bytes
    source: str
    envelope_from: str | None
    envelope_to: list[str]
    imap: ImapOrigin | None = None


# Built once: plain Core statements on the tables, which skip the ORM's
# bulk machinery and reuse their compiled form.
_MESSAGES = Base.metadata.tables["inbound_messages"]
_INSERT_MESSAGES = insert(_MESSAGES).returning(_MESSAGES.c.id, sort_by_parameter_order=True)
_INSERT_JOBS = insert(Base.metadata.tables["jobs"])


def store_received_messages(
    session: Session, received: list[Received], *, now: datetime
) -> list[int]:
    """Store several messages and their processing jobs at once (the SMTP
    edge commits whatever arrived together in one transaction); returns the
    new ids in order.  Core inserts: this is the inbound hot path."""
    if not received:
        return []
    rows = [
        {
            "received_at": now,
            "source": item.source,
            "envelope_from": item.envelope_from,
            "envelope_to": [a.replace("\x00", "") for a in item.envelope_to],
            "raw": item.raw,
            "size": len(item.raw),
            "digest": hashlib.sha256(item.raw).hexdigest(),
            "message_id_header": _message_id_header(item.raw),
            "imap_mailbox": item.imap.mailbox if item.imap else None,
            "imap_uidvalidity": item.imap.uidvalidity if item.imap else None,
            "imap_uid": item.imap.uid if item.imap else None,
            "state": InboundState.RECEIVED,
            "attempts": 0,
        }
        for item in received
    ]
    connection = session.connection()
    ids = list(connection.execute(_INSERT_MESSAGES, rows).scalars())
    metrics.replies_stored(session, [item.source for item in received])
    connection.execute(
        _INSERT_JOBS,
        [new_job_values(PROCESS_INBOUND, {"inbound_message_id": i}, now=now) for i in ids],
    )
    return ids


def imap_message_stored(session: Session, origin: ImapOrigin) -> bool:
    return bool(
        session.scalar(
            select(func.count()).where(
                InboundMessage.imap_mailbox == origin.mailbox,
                InboundMessage.imap_uidvalidity == origin.uidvalidity,
                InboundMessage.imap_uid == origin.uid,
            )
        )
    )


def is_duplicate(session: Session, message: InboundMessage) -> bool:
    """Whether an earlier stored message is this one again: the same
    Message-ID, or the same bytes (a redelivery, or the same mail seen over
    SMTP and in the IMAP mailbox)."""
    same = InboundMessage.digest == message.digest
    if message.message_id_header:
        same = same | (InboundMessage.message_id_header == message.message_id_header)
    earlier = session.scalar(
        select(func.count()).where(
            same,
            InboundMessage.id < message.id,
            InboundMessage.state != InboundState.FAILED,
        )
    )
    return bool(earlier)


def finish_inbound(
    session: Session,
    message: InboundMessage,
    *,
    state: InboundState,
    outcome: str,
    now: datetime,
) -> None:
    message.state = state
    metrics.count_on_commit(session, metrics.REPLIES_PROCESSED.labels(state=state.value))
    outcome = escape_controls(outcome)
    events.reply_processed(session, message.id, state=state, outcome=outcome)
    message.outcome = outcome
    message.error = None
    message.processed_at = now
    record_event(
        session,
        at=now,
        actor="inbound",
        action=f"inbound.{state.value}",
        subject=f"inbound:{message.id}",
        outcome=outcome,
    )


def fail_inbound(session: Session, message_id: int, *, error: str, now: datetime) -> None:
    message = session.get_one(InboundMessage, message_id)
    error = escape_controls(error)
    message.state = InboundState.FAILED
    metrics.count_on_commit(session, metrics.REPLIES_FAILED)
    events.reply_processed(session, message_id, state=InboundState.FAILED, outcome=error)
    message.error = error
    message.processed_at = now
    record_event(
        session,
        at=now,
        actor="inbound",
        action="inbound.failed",
        subject=f"inbound:{message_id}",
        error=error,
    )


def retry_inbound(session: Session, message_id: int, *, now: datetime, actor: str) -> None:
    """Queue a failed message for processing again (an operator's
    `mailflow inbound retry`)."""
    message = session.get_one(InboundMessage, message_id)
    message.state = InboundState.RECEIVED
    message.error = None
    add_job(session, PROCESS_INBOUND, {"inbound_message_id": message.id}, now=now)
    record_event(
        session, at=now, actor=actor, action="inbound.retried", subject=f"inbound:{message_id}"
    )


def recent_inbound_messages(
    session: Session, *, failed_only: bool, limit: int
) -> list[InboundMessage]:
    """The newest ``limit`` messages received (only failed ones if asked),
    newest first."""
    query = select(InboundMessage).order_by(InboundMessage.id.desc()).limit(limit)
    if failed_only:
        query = query.where(InboundMessage.state == InboundState.FAILED)
    return list(session.scalars(query))


# Messages deleted per transaction by a purge, so that it never holds the
# write lock long enough to keep the SMTP edge's commits waiting.
PURGE_BATCH = 200


def purge_ignored_messages(
    session: Session, *, received_before: datetime, now: datetime, actor: str
) -> int:
    """Delete up to ``PURGE_BATCH`` ignored messages (nothing was recorded
    for them) received before ``received_before``; returns how many.  A
    message anything refers to is kept, and processed or failed messages
    keep their raw copy for the audit.  The caller commits and calls again
    until it returns less than ``PURGE_BATCH``."""
    ids = list(
        session.scalars(
            select(InboundMessage.id)
            .where(
                InboundMessage.state == InboundState.IGNORED,
                InboundMessage.received_at < received_before,
                ~exists().where(Confirmation.inbound_message_id == InboundMessage.id),
                ~exists().where(OutgoingEmail.inbound_message_id == InboundMessage.id),
            )
            .order_by(InboundMessage.id)
            .limit(PURGE_BATCH)
        )
    )
    if not ids:
        return 0
    session.execute(
        delete(InboundMessage)
        .where(InboundMessage.id.in_(ids))
        .execution_options(synchronize_session=False)
    )
    record_event(
        session,
        at=now,
        actor=actor,
        action="inbound.purged",
        subject=f"inbound:{ids[0]}-{ids[-1]}",
        count=len(ids),
        received_before=received_before.isoformat(),
    )
    return len(ids)
