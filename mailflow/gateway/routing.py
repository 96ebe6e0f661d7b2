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

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.config import Settings
from mailflow.core.mail.addresses import AddressKind, ServiceAddress
from mailflow.core.models import User
from mailflow.gateway.bounces import record_bounce_report
from mailflow.gateway.checks import automatic, untrusted_sender, unusable
from mailflow.gateway.context import (
    InboundContext,
    KeyOwner,
    MailboxContext,
    MailboxKind,
    Outcome,
    ReplyContext,
    ReplyKeyKind,
    ignored,
    processed,
)
from mailflow.gateway.reading import InboundReading, find_mailbox, find_service_address


@dataclass(frozen=True)
class KeyKinds:
    """The kinds of reply key, asked in turn what a key belongs to (keys
    are random, so at most one kind knows a key), and the named mailboxes
    whose mail a capability reads."""

    kinds: Sequence[ReplyKeyKind]
    mailboxes: Sequence[MailboxKind] = ()

    @property
    def mailbox_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.mailboxes)

    def mailbox(self, name: str | None) -> MailboxKind | None:
        return next((m for m in self.mailboxes if m.name == name), None)

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


def mailbox_of(
    settings: Settings,
    kinds: KeyKinds,
    envelope_to: Iterable[str],
    source: str,
    reading: InboundReading,
) -> MailboxKind | None:
    """The named mailbox (access@, people@) the message came to, if any."""
    found = find_mailbox(
        envelope_to, reading, settings.mail_domain, kinds.mailbox_names, source=source
    )
    return kinds.mailbox(found)


def prepare(
    session: Session,
    kinds: KeyKinds,
    address: ServiceAddress | None,
    reading: InboundReading,
    *,
    settings: Settings,
    now: datetime,
    mailbox: MailboxKind | None = None,
) -> object:
    """What the key's kind (or the mailbox) reads from a message before
    the write transaction, or None when the message will not reach a
    handler (so words from no one we can trust are never parsed)."""
    if reading.unreadable or automatic(reading):
        return None
    if address is None:
        if mailbox is None or _untrusted_mailbox_sender(reading) is not None:
            return None
        person = _person(session, reading.sender)
        return mailbox.prepare(session, person, reading, settings=settings, now=now)
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
    if address is None:
        mailbox = mailbox_of(
            context.settings, kinds, message.envelope_to, message.source, context.reading
        )
        if mailbox is not None:
            return _to_mailbox(context, mailbox, prepared)
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


def _untrusted_mailbox_sender(reading: InboundReading) -> str | None:
    """Why a message to a named mailbox gets nothing, not even an answer:
    no strict From, or our own server's DMARC verdict says it is forged
    (an answer would go to someone who never wrote)."""
    if reading.sender is None:
        return f"no trustworthy From address: {reading.sender_problem}"
    return reading.dmarc_problem


def _person(session: Session, sender: str | None) -> User | None:
    """The active person whose address the strict From is."""
    if sender is None:
        return None
    return session.scalar(select(User).where(User.email == sender.lower(), User.active.is_(True)))


def _to_mailbox(context: InboundContext, mailbox: MailboxKind, prepared: object) -> Outcome:
    problem = automatic(context.reading) or _untrusted_mailbox_sender(context.reading)
    if problem is not None:
        return ignored(problem)
    sender = context.reading.sender
    assert sender is not None
    shared = {f.name: getattr(context, f.name) for f in fields(InboundContext)}
    person = _person(context.session, sender)
    return mailbox.handle(
        MailboxContext(**shared, mailbox=mailbox.name, sender=sender.lower(), person=person),
        prepared,
    )
