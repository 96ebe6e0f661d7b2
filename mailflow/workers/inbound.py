"""The jobs that process stored inbound messages: a bounce marks its
delivery; a trusted reply goes to the handler of what its key belongs to;
automatic mail and anything untrusted get nothing.  Whatever happens, the
raw message stays, and an error leaves it marked failed for `mailflow
inbound retry`.

Messages are processed in batches: loaded in one short read, each read in
a child process within a time bound, their words read by their keys' kinds
in one more read, and only then is one write transaction opened to record
what became of all of them (invariant 7: untrusted bytes are never parsed
inside a write transaction).  Each message is recorded under a savepoint
of its own, so one that fails is rolled back and marked failed alone, and
never holds back the others; if the batch's transaction itself fails, each
message is processed again alone."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from mailflow.core.bounded_calls import ChildDidNotStart
from mailflow.core.jobs import JobResult
from mailflow.core.models import InboundMessage, InboundState
from mailflow.core.runtime import Runtime
from mailflow.gateway.bounded_reading import ReadingTookTooLong, read_within_bound
from mailflow.gateway.context import InboundContext, PrepareAgain
from mailflow.gateway.inbound_messages import fail_inbound, finish_inbound
from mailflow.gateway.reading import InboundReading
from mailflow.gateway.routing import address_of, mailbox_of, prepare, route
from mailflow.workers.key_kinds import REPLY_KEY_KINDS

log = logging.getLogger(__name__)

PREPARE_ATTEMPTS = 3

# What reading a message gave: its reading, a time-out, or an error of
# ours (kept, to be recorded as the message's failure).
Read = InboundReading | ReadingTookTooLong | Exception


@dataclass(frozen=True)
class _Stored:
    """What reading a stored message needs but its bytes, which are loaded
    one message at a time (a batch of the largest messages allowed must
    not be held in memory at once)."""

    envelope_from: str | None
    envelope_to: list[str]
    source: str


@dataclass
class _Message:
    id: int
    stored: _Stored
    read: Read
    prepared: object = None


def process_inbound_batch(
    runtime: Runtime, payloads: dict[int, dict[str, Any]]
) -> dict[int, JobResult]:
    """The batch job: every job is done once its message is processed or
    marked failed (a failure is the message's, kept for an operator)."""
    process_inbound_messages(
        runtime, {int(payload["inbound_message_id"]) for payload in payloads.values()}
    )
    return dict.fromkeys(payloads)


def process_inbound(runtime: Runtime, message_id: int) -> None:
    process_inbound_messages(runtime, [message_id])


def process_inbound_messages(runtime: Runtime, message_ids: Iterable[int]) -> None:
    """Process the messages still waiting among ``message_ids`` (a message
    already processed, as by a redelivered job, is left alone)."""
    ids = sorted(set(message_ids))
    try:
        messages = [
            _Message(message_id, stored, _read(runtime, message_id, stored))
            for message_id, stored in _load(runtime, ids).items()
        ]
        _prepare_all(runtime, messages)
        again = _record_batch(runtime, messages)
    except ChildDidNotStart:
        raise  # no message's fault: the job is tried again later
    except Exception:
        log.exception("processing a batch of inbound messages failed; each goes alone")
        for message_id in ids:
            _process_alone(runtime, message_id)
        return
    for message, prepare_again in again:
        _process_alone(runtime, message.id, message.read, prepare_again)


def _load(runtime: Runtime, message_ids: list[int]) -> dict[int, _Stored]:
    # A reader's session: on SQLite it takes no write lock.
    with runtime.readers() as session:
        rows = session.execute(
            select(
                InboundMessage.id,
                InboundMessage.envelope_from,
                InboundMessage.envelope_to,
                InboundMessage.source,
            ).where(
                InboundMessage.id.in_(message_ids),
                InboundMessage.state == InboundState.RECEIVED,
            )
        )
        return {row.id: _Stored(row[1], list(row[2]), row[3]) for row in rows}


def _read(runtime: Runtime, message_id: int, stored: _Stored) -> Read:
    try:
        with runtime.readers() as session:
            raw = session.scalar(select(InboundMessage.raw).where(InboundMessage.id == message_id))
        return read_within_bound(
            runtime, raw or b"", envelope_from=stored.envelope_from, source=stored.source
        )
    except ReadingTookTooLong as exc:
        return exc
    except ChildDidNotStart:
        raise
    except Exception as exc:
        log.exception("reading an inbound message failed")
        return exc


def _prepare_all(runtime: Runtime, messages: list[_Message]) -> None:
    """What each reply key's kind reads from its message, in one reader's
    session, before the write transaction."""
    with runtime.readers() as session:
        for message in messages:
            if isinstance(message.read, InboundReading):
                try:
                    message.prepared = _prepare(runtime, session, message.stored, message.read)
                except Exception as exc:
                    log.exception("preparing inbound message %s failed", message.id)
                    message.read = exc


def _prepare(
    runtime: Runtime, session: Session, stored: _Stored, reading: InboundReading
) -> object:
    settings = runtime.settings
    address = address_of(settings, stored.envelope_to, stored.source, reading)
    mailbox = mailbox_of(settings, REPLY_KEY_KINDS, stored.envelope_to, stored.source, reading)
    return prepare(
        session,
        REPLY_KEY_KINDS,
        address,
        reading,
        settings=settings,
        now=runtime.clock(),
        mailbox=mailbox,
    )


def _record_batch(
    runtime: Runtime, messages: list[_Message]
) -> list[tuple[_Message, PrepareAgain]]:
    """Record every message in one transaction, each under its own
    savepoint.  Returns those to record again alone, after reading them
    again outside it: their person's organisations changed meanwhile."""
    again: list[tuple[_Message, PrepareAgain]] = []
    now = runtime.clock()
    with runtime.sessions.begin() as session:
        for message in messages:
            try:
                with session.begin_nested():
                    _record_in(runtime, session, message.id, message.read, message.prepared, now)
            except PrepareAgain as prepare_again:
                again.append((message, prepare_again))
            except DBAPIError:
                # The database's fault, not the message's (a deadlock
                # between two batches locking the same people in another
                # order, say): the batch goes again one message at a time.
                raise
            except Exception as exc:
                log.exception("processing inbound message %s failed", message.id)
                fail_inbound(session, message.id, error=repr(exc)[:2000], now=now)
    return again


def _process_alone(
    runtime: Runtime,
    message_id: int,
    read: Read | None = None,
    prepare_again: PrepareAgain | None = None,
) -> None:
    """One message on its own: the path a batch falls back to, given what
    the batch had read of it when it must only be prepared again."""
    try:
        prepared = None
        if read is None:
            stored = _load(runtime, [message_id]).get(message_id)
            if stored is None:
                return  # already processed
            read = _read(runtime, message_id, stored)
            if isinstance(read, InboundReading):
                with runtime.readers() as session:
                    prepared = _prepare(runtime, session, stored, read)
        elif prepare_again is not None:
            prepared = prepare_again.redo()
        _record(runtime, message_id, read, prepared)
    except ChildDidNotStart:
        raise
    except Exception as exc:
        # Kept, with the error, for an operator: `mailflow inbound retry`.
        log.exception("processing inbound message %s failed", message_id)
        with runtime.sessions.begin() as session:
            fail_inbound(session, message_id, error=repr(exc)[:2000], now=runtime.clock())


def _record(runtime: Runtime, message_id: int, read: Read, prepared: object) -> None:
    # Untrusted text is never parsed inside the write transaction: when it
    # must be read again, the transaction is rolled back first.
    for _ in range(PREPARE_ATTEMPTS):
        try:
            with runtime.sessions.begin() as session:
                _record_in(runtime, session, message_id, read, prepared, runtime.clock())
            return
        except PrepareAgain as again:
            prepared = again.redo()
    raise RuntimeError("the person's organisations kept changing while the reply was read")


def _record_in(
    runtime: Runtime,
    session: Session,
    message_id: int,
    read: Read,
    prepared: object,
    now: datetime,
) -> None:
    """Record what became of the message (nothing when another job had
    already recorded it); its log line is written once that commits."""
    # Locked (on PostgreSQL; SQLite's transactions already take the write
    # lock), so a job delivered twice at once records once.
    message = session.get(InboundMessage, message_id, with_for_update=True)
    if message is None or message.state != InboundState.RECEIVED:
        return
    message.attempts += 1
    if isinstance(read, Exception):
        # Not raised: the job is done, and is not run again by itself (a
        # message that took too long would take as long again); an
        # operator may retry it.
        fail_inbound(session, message_id, error=_failure(read), now=now)
        return
    context = InboundContext(session, runtime.settings, message, read, now)
    state, outcome = route(context, REPLY_KEY_KINDS, prepared)
    finish_inbound(session, message, state=state, outcome=outcome, now=now)


def _failure(error: Exception) -> str:
    if isinstance(error, ReadingTookTooLong):
        return str(error)
    return repr(error)[:2000]
