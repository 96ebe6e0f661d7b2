"""Mail in and out other than alert emails: every inbound message as
received, how far the IMAP poller has read, and one-off emails waiting to
be sent."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from mailflow.core.models.base import Base, text_enum


class InboundState(enum.StrEnum):
    RECEIVED = "received"  # stored, waiting for the processing job
    PROCESSED = "processed"  # read and acted on (see outcome)
    IGNORED = "ignored"  # auto-reply, duplicate, untrusted: nothing recorded
    FAILED = "failed"  # processing raised; kept for `mailflow inbound retry`


class InboundMessage(Base):
    """Every message the inbound edges accept, raw, committed before the
    sender is told 250 (or, for IMAP, before the message is flagged)."""

    __tablename__ = "inbound_messages"
    __table_args__ = (
        UniqueConstraint("imap_mailbox", "imap_uidvalidity", "imap_uid"),
        Index("ix_inbound_messages_state_received_at", "state", "received_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    received_at: Mapped[datetime]
    source: Mapped[str] = mapped_column(String(10))
    envelope_from: Mapped[str | None] = mapped_column(String(512))
    envelope_to: Mapped[list[str]]
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(64), index=True)
    message_id_header: Mapped[str | None] = mapped_column(String(998), index=True)
    imap_mailbox: Mapped[str | None] = mapped_column(String(300))
    imap_uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    imap_uid: Mapped[int | None] = mapped_column(BigInteger)
    state: Mapped[InboundState] = mapped_column(text_enum(InboundState, "inbound_state"))
    outcome: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    processed_at: Mapped[datetime | None]


class ImapCheckpoint(Base):
    """How far the poller has read a mailbox: the UIDVALIDITY it saw and the
    highest UID whose message is stored."""

    __tablename__ = "imap_checkpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    mailbox: Mapped[str] = mapped_column(String(300), unique=True)
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime]


class OutgoingState(enum.StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"


class OutgoingEmail(Base):
    """A message other than an alert (a confirmation request, an error
    reply), rendered when the change that needs it is committed and sent by
    a job, so a crash between the two loses nothing."""

    __tablename__ = "outgoing_emails"
    __table_args__ = (
        Index("ix_outgoing_emails_recipient_kind", "recipient", "kind", "created_at"),
        # How `users list` finds each person's welcome email.
        Index("ix_outgoing_emails_user_id_kind", "user_id", "kind"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    recipient: Mapped[str] = mapped_column(String(254))
    # The person it is addressed to (None for rows from before it was kept).
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # The envelope sender: bounce+KEY@MAIL_DOMAIN, so that a delivery
    # report names the email it is about.
    mail_from: Mapped[str] = mapped_column(String(254))
    bounce_key: Mapped[str | None] = mapped_column(String(64), unique=True)
    # When a delivery report said it could not be delivered; what the
    # report said is in last_error.
    bounced_at: Mapped[datetime | None]
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    state: Mapped[OutgoingState] = mapped_column(text_enum(OutgoingState, "outgoing_state"))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime]
    inbound_message_id: Mapped[int | None] = mapped_column(ForeignKey("inbound_messages.id"))
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
