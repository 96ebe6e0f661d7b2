"""The domain's tables.

Alembic (mailflow/db/migrations) is the source of truth for the schema; these
classes describe it to SQLAlchemy, and a test checks that the two agree.
"""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend.

    SQLite has no time zones, so values are stored as naive UTC and given
    their zone back when read.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; pass an aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON,
        list[str]: JSON,
    }


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    # Stored as text with a CHECK constraint, so adding a value later is a
    # plain migration on PostgreSQL and SQLite alike.
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=20,
        values_callable=lambda members: [m.value for m in members],
    )


class Role(enum.StrEnum):
    """What a person may do for one organisation."""

    ADMINISTRATOR = "administrator"
    RESPONDER = "responder"
    ALERT_ONLY = "alert-only"

    @property
    def can_answer(self) -> bool:
        return self is not Role.ALERT_ONLY


class NationalRole(enum.StrEnum):
    """Roles held nationally rather than for an organisation."""

    AUDITOR = "auditor"


class Severity(enum.StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"

    @property
    def response_required(self) -> bool:
        return self in (Severity.CRITICAL, Severity.HIGH)


class DeliveryState(enum.StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"
    BOUNCED = "bounced"


class JobState(enum.StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class Organisation(Base):
    __tablename__ = "organisations"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(12), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(40))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"))
    opened_on: Mapped[date | None] = mapped_column(Date)
    closed_on: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    parent: Mapped[Organisation | None] = relationship(remote_side=[id])

    @property
    def is_open(self) -> bool:
        return self.closed_on is None


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Stored lower-cased: mail systems treat the domain, and in practice the
    # local part, without regard to case, and a reply's From must match.
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    national_role: Mapped[NationalRole | None] = mapped_column(_enum(NationalRole, "national_role"))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]
    # Links signed before this (set when the person is removed) do not
    # work, so adding them again does not bring their old links back.
    links_valid_after: Mapped[datetime | None]

    memberships: Mapped[list[Membership]] = relationship(
        back_populates="user", cascade="all, delete-orphan"
    )


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("user_id", "organisation_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    role: Mapped[Role] = mapped_column(_enum(Role, "role"))
    created_at: Mapped[datetime]

    user: Mapped[User] = relationship(back_populates="memberships")
    organisation: Mapped[Organisation] = relationship()


class Alert(Base):
    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(primary_key=True)
    reference: Mapped[str] = mapped_column(String(20), unique=True)
    title: Mapped[str] = mapped_column(String(300))
    severity: Mapped[Severity] = mapped_column(_enum(Severity, "severity"))
    summary: Mapped[str] = mapped_column(Text)
    affected: Mapped[list[str]]
    cves: Mapped[list[str]]
    remediation: Mapped[str] = mapped_column(Text)
    references: Mapped[list[str]]
    response_required: Mapped[bool] = mapped_column(Boolean)
    issued_at: Mapped[datetime]
    deadline_at: Mapped[datetime]
    issued_by: Mapped[str] = mapped_column(String(200))
    # The audience as the publisher asked for it (codes and types); the
    # organisations it resolved to at issue time are in alert_audience.
    audience_spec: Mapped[dict[str, Any]]

    audience: Mapped[list[AlertAudience]] = relationship(back_populates="alert")


class AlertAudience(Base):
    __tablename__ = "alert_audience"

    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id"), primary_key=True)
    organisation_id: Mapped[int] = mapped_column(
        ForeignKey("organisations.id"), primary_key=True, index=True
    )

    alert: Mapped[Alert] = relationship(back_populates="audience")
    organisation: Mapped[Organisation] = relationship()


class Delivery(Base):
    """One alert email to one person: the unit of sending and of tracing
    replies and bounces back."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("alert_id", "user_id"),
        # How a sender finds an alert's due deliveries without reading them all.
        Index(
            "ix_deliveries_alert_id_state_next_attempt_at", "alert_id", "state", "next_attempt_at"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    state: Mapped[DeliveryState] = mapped_column(_enum(DeliveryState, "delivery_state"))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    # Fixed when the delivery is created, so a copy re-sent after a crash
    # carries the same Message-ID and mail clients can fold the two together.
    message_id: Mapped[str] = mapped_column(String(250), unique=True)
    reply_key: Mapped[str] = mapped_column(String(64), unique=True)
    bounce_key: Mapped[str] = mapped_column(String(64), unique=True)
    next_attempt_at: Mapped[datetime]
    # While a worker sends, it holds the delivery until this time; a worker
    # that dies leaves it to be taken again once the time has passed.
    claimed_until: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    alert: Mapped[Alert] = relationship()
    user: Mapped[User] = relationship()


class Job(Base):
    """The outbox: work that must happen because of a change, written in the
    same transaction as the change.  Queue messages carry only its id."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_state_run_after", "state", "run_after"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict[str, Any]]
    state: Mapped[JobState] = mapped_column(_enum(JobState, "job_state"))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    run_after: Mapped[datetime]
    enqueued_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]


class AuditEvent(Base):
    """Append-only: the migration installs triggers that refuse UPDATE and
    DELETE on this table."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(254))
    action: Mapped[str] = mapped_column(String(60))
    subject: Mapped[str] = mapped_column(String(120), index=True)
    details: Mapped[dict[str, Any]]


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
    state: Mapped[InboundState] = mapped_column(_enum(InboundState, "inbound_state"))
    outcome: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    processed_at: Mapped[datetime | None]


class PendingAction(Base):
    """An action waiting for its person, and the single use of a link.

    Every kind lives here: answers read from a reply (a ``Confirmation``
    adds what they are), and the use of a link that commits something (an
    alert's status link, an enrolment link), kept as a row whose digest
    is unique.  Only the digest of a token is stored; the conditional
    update that uses an action (or the unique digest of a used link) makes
    the second of two racing uses fail in the database."""

    __tablename__ = "pending_actions"
    __table_args__ = (Index("ix_pending_actions_user_id_created_at", "user_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(30))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    token_digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    # None for the use of a signed link: the link carries its own expiry.
    expires_at: Mapped[datetime | None]
    used_at: Mapped[datetime | None]
    # Set when a newer action of the same person replaced this one: only
    # the newest link works, so a flood of replies leaves one live link.
    superseded_at: Mapped[datetime | None]


class Confirmation(PendingAction):
    """Answers read from one reply, waiting for the person to confirm them
    with a second factor: a pending action of kind ``reply-answers``.  Its
    link names the row's id and its nonce (the action's token)."""

    __tablename__ = "confirmations"

    id: Mapped[int] = mapped_column(ForeignKey("pending_actions.id"), primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id"))
    delivery_id: Mapped[int | None] = mapped_column(ForeignKey("deliveries.id"))
    inbound_message_id: Mapped[int | None] = mapped_column(ForeignKey("inbound_messages.id"))
    # Random, and part of the signed link, so a link names exactly one
    # confirmation and cannot be forged from the row id.
    nonce: Mapped[str] = mapped_column(String(64), unique=True)

    answers: Mapped[list[PendingAnswer]] = relationship(
        back_populates="confirmation", order_by="PendingAnswer.id"
    )
    user: Mapped[User] = relationship()
    alert: Mapped[Alert] = relationship()


class PendingAnswer(Base):
    """One organisation's status as read from a reply: nothing is recorded
    until its confirmation is used."""

    __tablename__ = "pending_answers"
    __table_args__ = (UniqueConstraint("confirmation_id", "organisation_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    confirmation_id: Mapped[int] = mapped_column(ForeignKey("confirmations.id"))
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    status: Mapped[str] = mapped_column(String(20))
    note: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    mitigations: Mapped[str | None] = mapped_column(Text)
    expected_on: Mapped[date | None] = mapped_column(Date)

    confirmation: Mapped[Confirmation] = relationship(back_populates="answers")
    organisation: Mapped[Organisation] = relationship()


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
    state: Mapped[OutgoingState] = mapped_column(_enum(OutgoingState, "outgoing_state"))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime]
    inbound_message_id: Mapped[int | None] = mapped_column(ForeignKey("inbound_messages.id"))
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]


class ImapCheckpoint(Base):
    """How far the poller has read a mailbox: the UIDVALIDITY it saw and the
    highest UID whose message is stored."""

    __tablename__ = "imap_checkpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    mailbox: Mapped[str] = mapped_column(String(300), unique=True)
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime]


class Answer(Base):
    """A confirmed answer: one organisation's status for an alert, as
    recorded at one moment.  Every answer stays; the newest is current."""

    __tablename__ = "answers"
    __table_args__ = (Index("ix_answers_alert_id_organisation_id", "alert_id", "organisation_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id"))
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    status: Mapped[str] = mapped_column(String(20))
    note: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    mitigations: Mapped[str | None] = mapped_column(Text)
    expected_on: Mapped[date | None] = mapped_column(Date)
    # "link" (a status link in the alert email) or "reply" (a confirmed reply).
    via: Mapped[str] = mapped_column(String(10))
    confirmation_id: Mapped[int | None] = mapped_column(ForeignKey("confirmations.id"))
    recorded_at: Mapped[datetime]
    within_deadline: Mapped[bool] = mapped_column(Boolean)


class AlertStatus(Base):
    """The current status of each organisation for each alert it must
    answer: one row, replaced by each new answer in the same transaction,
    so reports need not search the history."""

    __tablename__ = "alert_statuses"
    __table_args__ = (Index("ix_alert_statuses_organisation_id", "organisation_id"),)

    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id"), primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), primary_key=True)
    answer_id: Mapped[int] = mapped_column(ForeignKey("answers.id"))
    status: Mapped[str] = mapped_column(String(20))
    first_answered_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    within_deadline: Mapped[bool] = mapped_column(Boolean)


class MfaCredential(Base):
    """A person's TOTP secret, encrypted at rest, and the last time step a
    code was accepted for (a code is never accepted twice)."""

    __tablename__ = "mfa_credentials"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    secret_encrypted: Mapped[str] = mapped_column(Text)
    enrolled_at: Mapped[datetime | None]
    last_step: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime]


class RecoveryCode(Base):
    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    code_hash: Mapped[str] = mapped_column(String(128))
    used_at: Mapped[datetime | None]
    created_at: Mapped[datetime]


class MfaFailure(Base):
    """One wrong code, and where it came from (a digest of the client's
    address): too many from one place and that place must wait (see
    ``mailflow.domain.mfa_throttle``)."""

    __tablename__ = "mfa_failures"
    __table_args__ = (Index("ix_mfa_failures_user_id_at", "user_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    at: Mapped[datetime]
    source: Mapped[str] = mapped_column(String(16), server_default="")


class VerifiedSession(Base):
    """A browser that gave a right second factor: its cookie holds a random
    key, this row its digest.  It names the credential it was verified
    with (the person's, enrolled at ``credential_enrolled_at``), so a reset
    or a new enrolment ends it; signing out deletes it."""

    __tablename__ = "verified_sessions"

    key_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    credential_enrolled_at: Mapped[datetime]
    verified_at: Mapped[datetime]
