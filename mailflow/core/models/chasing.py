"""Chasing: every reminder, overdue notice, escalation and update-due
chaser the scheduler decides on is a row here with a unique key, written
in the same transaction as the emails it causes, so a pass run twice, by
two schedulers at once, or again after a crash, chases each thing once."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from mailflow.core.models.base import Base, text_enum

# The job that composes a batch of queued chaser emails (payload
# ``{"batch": BATCH}``).  Named here, beside the rows it reads, because two
# capabilities queue it: the scheduler's chasing (deadlines) and
# `alert update` (alerts); the deadlines capability handles it and
# imports alerts for the alert email, so alerts cannot import it back.
SEND_CHASERS = "send_chasers"


class ChaseKind(enum.StrEnum):
    # To an organisation's recipients before the deadline, while it has not answered.
    REMINDER = "reminder"
    # At the deadline, to an organisation's administrators; the row marks it overdue.
    OVERDUE = "overdue"
    # To an organisation's recipients when an in-progress answer's update is due.
    UPDATE_DUE = "update-due"
    # To an organisation's recipients when an unable answer's review is due.
    REVIEW_DUE = "review-due"
    # Alert-wide, to the auditors: at the deadline, then on each follow-up day.
    ESCALATION = "escalation"
    FOLLOW_UP = "follow-up"
    # Not a chaser: an update to the alert, to every recipient (`alert update`).
    ALERT_UPDATE = "alert-update"

    @property
    def per_organisation(self) -> bool:
        return self not in (ChaseKind.ESCALATION, ChaseKind.FOLLOW_UP, ChaseKind.ALERT_UPDATE)


class Chaser(Base):
    """One thing chased: for an organisation (``organisation_id`` set) or
    for the whole alert (None: escalations and follow-ups), at one step
    (``24h``, ``deadline``, a date).  ``batch`` names the scheduler pass
    that wrote it, so the pass can find the rows it has just written."""

    __tablename__ = "chasers"
    __table_args__ = (
        # In this order it also finds an alert's chasers of one kind and
        # step (what the emails and reports look up), so no other index
        # is kept up to date on every insert.
        UniqueConstraint("alert_id", "kind", "step", "organisation_id"),
        # NULLs are distinct in a unique constraint, so alert-wide rows
        # need an index of their own to be unique.
        Index(
            "uq_chasers_alert_wide",
            "alert_id",
            "kind",
            "step",
            unique=True,
            postgresql_where=text("organisation_id IS NULL"),
            sqlite_where=text("organisation_id IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id"))
    organisation_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"))
    kind: Mapped[ChaseKind] = mapped_column(text_enum(ChaseKind, "chase_kind"))
    step: Mapped[str] = mapped_column(String(40))
    batch: Mapped[str] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime]


class ChaserEmailState(enum.StrEnum):
    QUEUED = "queued"  # decided on; the email is composed by a job
    COMPOSED = "composed"  # composed and in the outbox (outgoing_emails)
    DROPPED = "dropped"  # nothing left to say when it came to be composed


class ChaserEmail(Base):
    """One chasing email to one person, decided on in the same transaction
    as its chasers and composed by a job moments later.  Composing it then
    lets it leave out an organisation that answered in between (the
    re-check at send time) and keeps the pass itself to a few statements."""

    __tablename__ = "chaser_emails"
    __table_args__ = (
        UniqueConstraint("alert_id", "user_id", "kind", "step"),
        Index("ix_chaser_emails_state_batch", "state", "batch"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    kind: Mapped[ChaseKind] = mapped_column(text_enum(ChaseKind, "chase_kind"))
    step: Mapped[str] = mapped_column(String(40))
    batch: Mapped[str] = mapped_column(String(32))
    state: Mapped[ChaserEmailState] = mapped_column(
        text_enum(ChaserEmailState, "chaser_email_state")
    )
    created_at: Mapped[datetime]
    handled_at: Mapped[datetime | None]
    outgoing_email_id: Mapped[int | None] = mapped_column(ForeignKey("outgoing_emails.id"))
    # Why it was dropped (everyone answered, the alert was closed, ...).
    outcome: Mapped[str | None] = mapped_column(String(200))
