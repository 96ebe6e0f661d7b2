"""Alerts, the organisations each one is issued to, and the one email per
person that carries it (a delivery)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mailflow.core.models.base import Base, text_enum
from mailflow.core.models.people import Organisation, User


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


class Alert(Base):
    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(primary_key=True)
    reference: Mapped[str] = mapped_column(String(20), unique=True)
    title: Mapped[str] = mapped_column(String(300))
    severity: Mapped[Severity] = mapped_column(text_enum(Severity, "severity"))
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
    # Answers are asked for in rounds: an update that says "answer again"
    # starts the next one, with its own deadline and its own chasers.
    round: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # A closed alert is chased no more (`mailflow alert close`).
    closed_at: Mapped[datetime | None]
    closed_reason: Mapped[str | None] = mapped_column(Text)

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
    state: Mapped[DeliveryState] = mapped_column(text_enum(DeliveryState, "delivery_state"))
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


class AlertUpdate(Base):
    """An update to an alert (`mailflow alert update`): new remediation
    text or CVEs, sent to every recipient in the thread of the alert.  One
    that says "answer again" starts a new round of answers with its own
    deadline."""

    __tablename__ = "alert_updates"
    __table_args__ = (UniqueConstraint("alert_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id"))
    number: Mapped[int] = mapped_column(Integer)
    summary: Mapped[str] = mapped_column(Text)
    remediation: Mapped[str | None] = mapped_column(Text)
    cves: Mapped[list[str]]
    answer_again: Mapped[bool] = mapped_column(Boolean)
    # The new round's deadline when it asks for answers again.
    deadline_at: Mapped[datetime | None]
    published_at: Mapped[datetime]
    published_by: Mapped[str] = mapped_column(String(200))
