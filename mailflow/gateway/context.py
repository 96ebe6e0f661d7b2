"""What every step of processing one inbound message is given, and what
a kind of reply key must provide to take part.

A reply key is issued to one person for one thing (today a delivery of an
alert email; later an access request, a conversation with an
administrator).  A kind of key says how to find what a key belongs to, how
to read a reply to it before the write transaction, and what the reply
does inside it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.orm import Session

from mailflow.config import Settings
from mailflow.core.models import InboundMessage, InboundState, User
from mailflow.gateway.reading import InboundReading

# What became of a message: its state and the outcome stored with it.
Outcome = tuple[InboundState, str]


def ignored(outcome: str) -> Outcome:
    return InboundState.IGNORED, outcome


def processed(outcome: str) -> Outcome:
    return InboundState.PROCESSED, outcome


@dataclass(frozen=True)
class InboundContext:
    """One message inside its write transaction: the stored message, what
    was read from it (outside the transaction), the settings and the time."""

    session: Session
    settings: Settings
    message: InboundMessage
    reading: InboundReading
    now: datetime


@dataclass(frozen=True)
class KeyOwner:
    """What a reply key belongs to (``thing``, whose type its kind knows),
    and the person it was issued to: only that person's replies count
    (invariant 5)."""

    kind: ReplyKeyKind
    person: User
    thing: object


@dataclass(frozen=True)
class ReplyContext(InboundContext):
    """A reply that passed the shared checks: sent by the key's person."""

    owner: KeyOwner


@dataclass(frozen=True)
class MailboxContext(InboundContext):
    """A message to one of our named mailboxes (``access@``, ``people@``)
    that passed the shared checks: not automatic, a strict From that our
    own server's DMARC verdict does not contradict.  ``person`` is the
    active person with that address, or None for a stranger.  The From
    alone proves nothing, so a mailbox's handler only ever records what
    its person must then confirm with their second factor."""

    mailbox: str
    sender: str
    person: User | None


class PrepareAgain(Exception):
    """Raised by a handler, inside the write transaction, when what was
    read beforehand no longer holds (the person's access changed, or the
    day): the transaction is rolled back, ``redo`` runs outside it, and the
    message is recorded again with what it returns."""

    def __init__(self, redo: Callable[[], object]) -> None:
        super().__init__("read the reply again")
        self.redo = redo


class ReplyKeyKind(Protocol):
    """A kind of reply key: register one in the shells' list,
    ``workers/key_kinds.py``."""

    name: str

    def accepts(self, session: Session, key: str, *, settings: Settings, now: datetime) -> bool:
        """Whether mail to the key is taken at all (asked by the SMTP edge
        at RCPT, so an unknown or expired key is refused there)."""

    def owner(self, session: Session, key: str) -> KeyOwner | None:
        """What the key belongs to, or None when it is not of this kind."""

    def prepare(
        self,
        session: Session,
        owner: KeyOwner,
        reading: InboundReading,
        *,
        settings: Settings,
        now: datetime,
    ) -> object:
        """Read the reply's words, in a read-only session and before the
        write transaction (untrusted text is never parsed inside one)."""

    def handle(self, reply: ReplyContext, prepared: object) -> Outcome:
        """What the reply does, inside the write transaction."""


class MailboxKind(Protocol):
    """A named mailbox at the mail domain whose mail a capability reads:
    register one in the shells' list, ``workers/key_kinds.py``."""

    # The local part: "access" for access@MAIL_DOMAIN.
    name: str

    def prepare(
        self,
        session: Session,
        person: User | None,
        reading: InboundReading,
        *,
        settings: Settings,
        now: datetime,
    ) -> object:
        """Read the message's words, in a read-only session and before the
        write transaction (as ``ReplyKeyKind.prepare``)."""

    def handle(self, message: MailboxContext, prepared: object) -> Outcome:
        """What the message does, inside the write transaction."""
