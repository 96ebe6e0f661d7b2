"""Routing a stored message by the kind of our address it came to, and a
reply by what its key belongs to.

Two steps, because untrusted text is never parsed inside a write
transaction (invariant 7): ``prepare`` finds the reply's key and lets its
kind read the words in a read-only session; ``route``, inside the write
transaction, runs the shared checks and hands the message to its handler
with what was prepared."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime

from sqlalchemy.orm import Session

from mailflow.config import Settings
from mailflow.core.mail.addresses import AddressKind, ServiceAddress
from mailflow.gateway.bounces import record_bounce_report
from mailflow.gateway.checks import automatic, untrusted_sender, unusable
from mailflow.gateway.context import (
    InboundContext,
    KeyOwner,
    Outcome,
    ReplyContext,
    ReplyKeyKind,
    ignored,
    processed,
)
from mailflow.gateway.reading import InboundReading, find_service_address


@dataclass(frozen=True)
class KeyKinds:
    """The kinds of reply key, asked in turn what a key belongs to (keys
    are random, so at most one kind knows a key)."""

    kinds: Sequence[ReplyKeyKind]

    def accepts(self, session: Session, key: str, *, settings: Settings, now: datetime) -> bool:
        return any(k.accepts(session, key, settings=settings, now=now) for k in self.kinds)

    def owner(self, session: Session, key: str) -> KeyOwner | None:
        for kind in self.kinds:
            found = kind.owner(session, key)
            if found is not None:
                return found
        return None


def address_of(
    settings: Settings, envelope_to: Iterable[str], source: str, reading: InboundReading
) -> ServiceAddress | None:
    """Which of our reply or bounce addresses the message came to; None
    for a service address (alerts@, postmaster@) or anyone else's."""
    return find_service_address(envelope_to, reading, settings.mail_domain, source=source)


def prepare(
    session: Session,
    kinds: KeyKinds,
    address: ServiceAddress | None,
    reading: InboundReading,
    *,
    settings: Settings,
    now: datetime,
) -> object:
    """What the key's kind reads from a reply before the write transaction,
    or None when the message will not reach a reply handler (so a
    stranger's words are never parsed)."""
    if reading.unreadable or automatic(reading) or address is None:
        return None
    if address.kind is not AddressKind.REPLY:
        return None
    owner = kinds.owner(session, address.key)
    if owner is None or untrusted_sender(reading, owner.person) is not None:
        return None
    return owner.kind.prepare(session, owner, reading, settings=settings, now=now)


def route(context: InboundContext, kinds: KeyKinds, prepared: object) -> Outcome:
    """What became of the message, decided inside the write transaction."""
    problem = unusable(context)
    if problem is not None:
        return ignored(problem)
    message = context.message
    address = address_of(context.settings, message.envelope_to, message.source, context.reading)
    if address is not None and address.kind is AddressKind.BOUNCE:
        return _bounce(context, address.key)
    return _reply(context, kinds, address, prepared)


def _bounce(context: InboundContext, key: str) -> Outcome:
    report = context.reading.report
    if report is None or not report.failed:
        return ignored("sent to a bounce address but not a failure report")
    bounced = record_bounce_report(
        context.session,
        context.settings,
        bounce_key=key,
        description=report.describe(),
        now=context.now,
    )
    if bounced is None:
        return ignored("a bounce for no email we sent")
    return processed(bounced)


def _reply(
    context: InboundContext, kinds: KeyKinds, address: ServiceAddress | None, prepared: object
) -> Outcome:
    problem = automatic(context.reading)
    if problem is not None:
        return ignored(problem)
    if address is None:
        return ignored("not sent to a reply address")
    owner = kinds.owner(context.session, address.key)
    if owner is None:
        return ignored("unknown reply key")
    problem = untrusted_sender(context.reading, owner.person)
    if problem is not None:
        return ignored(problem)
    shared = {f.name: getattr(context, f.name) for f in fields(InboundContext)}
    return owner.kind.handle(ReplyContext(**shared, owner=owner), prepared)
