"""The job that processes a stored inbound message: a bounce marks its
delivery; a trusted reply goes to the handler of what its key belongs to;
automatic mail and anything untrusted get nothing.  Whatever happens, the
raw message stays, and an error leaves it marked failed for `mailflow
inbound retry`.

Untrusted bytes are never parsed inside a write transaction (invariant 7):
the raw message is loaded in a read-only session, read in a child process
within a time bound, its words read by the key's kind in another short
read, and only then is one short write transaction opened to check the
message is still unprocessed and record what became of it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from mailflow.core.models import InboundMessage, InboundState
from mailflow.core.runtime import Runtime
from mailflow.core.text import escape_controls
from mailflow.gateway.bounded_reading import ReadingTookTooLong, read_within_bound
from mailflow.gateway.context import InboundContext, PrepareAgain
from mailflow.gateway.inbound_messages import fail_inbound, finish_inbound
from mailflow.gateway.reading import InboundReading
from mailflow.gateway.routing import address_of, mailbox_of, prepare, route
from mailflow.workers.key_kinds import REPLY_KEY_KINDS

log = logging.getLogger(__name__)

PREPARE_ATTEMPTS = 3


@dataclass(frozen=True)
class _Stored:
    """What reading a stored message needs, loaded in a short read."""

    raw: bytes
    envelope_from: str | None
    envelope_to: list[str]
    source: str


def process_inbound(runtime: Runtime, message_id: int) -> None:
    """Read the message with no transaction open and within a time bound,
    then record what became of it in one short write transaction: a
    hostile message must not hold the write lock while it is parsed."""
    try:
        stored = _load(runtime, message_id)
        if stored is None:
            return  # already processed: a redelivered job does nothing
        try:
            reading: InboundReading | ReadingTookTooLong = read_within_bound(
                runtime, stored.raw, envelope_from=stored.envelope_from, source=stored.source
            )
        except ReadingTookTooLong as exc:
            reading = exc
        prepared = None
        if isinstance(reading, InboundReading):
            prepared = _prepare(runtime, stored, reading)
        _record(runtime, message_id, reading, prepared)
    except Exception as exc:
        # Kept, with the error, for an operator: `mailflow inbound retry`.
        log.exception("processing inbound message %s failed", message_id)
        with runtime.sessions.begin() as session:
            fail_inbound(session, message_id, error=repr(exc)[:2000], now=runtime.clock())


def _load(runtime: Runtime, message_id: int) -> _Stored | None:
    # A reader's session: on SQLite it takes no write lock.
    with runtime.readers() as session:
        message = session.get(InboundMessage, message_id)
        if message is None or message.state != InboundState.RECEIVED:
            return None
        return _Stored(
            message.raw, message.envelope_from, list(message.envelope_to), message.source
        )


def _prepare(runtime: Runtime, stored: _Stored, reading: InboundReading) -> object:
    """What the reply key's kind reads from the message, in a reader's
    session, before the write transaction."""
    settings = runtime.settings
    address = address_of(settings, stored.envelope_to, stored.source, reading)
    mailbox = mailbox_of(settings, REPLY_KEY_KINDS, stored.envelope_to, stored.source, reading)
    with runtime.readers() as session:
        return prepare(
            session,
            REPLY_KEY_KINDS,
            address,
            reading,
            settings=settings,
            now=runtime.clock(),
            mailbox=mailbox,
        )


def _record(
    runtime: Runtime,
    message_id: int,
    reading: InboundReading | ReadingTookTooLong,
    prepared: object,
) -> None:
    # Untrusted text is never parsed inside the write transaction: when it
    # must be read again, the transaction is rolled back first.
    for _ in range(PREPARE_ATTEMPTS):
        try:
            _record_once(runtime, message_id, reading, prepared)
            return
        except PrepareAgain as again:
            prepared = again.redo()
    raise RuntimeError("the person's organisations kept changing while the reply was read")


def _record_once(
    runtime: Runtime,
    message_id: int,
    reading: InboundReading | ReadingTookTooLong,
    prepared: object,
) -> None:
    now = runtime.clock()
    with runtime.sessions.begin() as session:
        # Locked (on PostgreSQL; SQLite's transactions already take the
        # write lock), so a job delivered twice at once records once.
        message = session.get(InboundMessage, message_id, with_for_update=True)
        if message is None or message.state != InboundState.RECEIVED:
            return
        message.attempts += 1
        if isinstance(reading, ReadingTookTooLong):
            # Not raised: the job is done, and is not run again by itself
            # (it would take as long again); an operator may retry it.
            fail_inbound(session, message_id, error=str(reading), now=now)
            log.warning("inbound message %s failed: %s", message_id, reading)
            return
        context = InboundContext(session, runtime.settings, message, reading, now)
        state, outcome = route(context, REPLY_KEY_KINDS, prepared)
        finish_inbound(session, message, state=state, outcome=outcome, now=now)
        log.info("inbound message %s %s: %s", message_id, state, escape_controls(outcome))
