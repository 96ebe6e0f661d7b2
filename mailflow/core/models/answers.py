"""Answers: those read from a reply and waiting to be confirmed, those
recorded, and each organisation's current status for an alert."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    Boolean,
    Date,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mailflow.core.models.alerts import Alert
from mailflow.core.models.base import Base
from mailflow.core.models.pending import PendingAction
from mailflow.core.models.people import Organisation, User


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
    # The next update or review date the reply asked for, if any.
    next_update_on: Mapped[date | None] = mapped_column(Date)

    confirmation: Mapped[Confirmation] = relationship(back_populates="answers")
    organisation: Mapped[Organisation] = relationship()


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
    # When the next update (in progress) or review (unable) is due, as the
    # person was told; None for complete and not applicable.
    next_update_on: Mapped[date | None] = mapped_column(Date)
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
    __table_args__ = (
        Index("ix_alert_statuses_organisation_id", "organisation_id"),
        # How the scheduler finds the updates and reviews that are due.
        Index("ix_alert_statuses_update_due_on", "update_due_on"),
    )

    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id"), primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), primary_key=True)
    answer_id: Mapped[int] = mapped_column(ForeignKey("answers.id"))
    status: Mapped[str] = mapped_column(String(20))
    first_answered_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    within_deadline: Mapped[bool] = mapped_column(Boolean)
    # When the organisation is next chased for an update or review: the
    # answer's next_update_on, moved on by each chaser; None when nothing
    # is owed (complete, not applicable).
    update_due_on: Mapped[date | None] = mapped_column(Date)
    # The date the answer itself gave for its next update or review: the
    # auditors' "overdue update" is this one, not the chasers' moving date.
    next_update_on: Mapped[date | None] = mapped_column(Date)
