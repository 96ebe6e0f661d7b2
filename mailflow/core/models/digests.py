"""Auditors' digests: how often each auditor wants one, and one row per
digest decided on, with a unique key per auditor and period, so the
scheduler sends each period's digest once however many passes, restarts
or schedulers there are."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mailflow.core.models.base import Base, text_enum

# The job that composes the queued digests (payload ``{"batch": BATCH}``).
SEND_DIGESTS = "send_digests"


class DigestSchedule(enum.StrEnum):
    DAILY = "daily"  # every working day (MAILFLOW_DIGEST_DAILY)
    WEEKLY = "weekly"  # once a week (MAILFLOW_DIGEST_WEEKLY)
    OFF = "off"


class DigestState(enum.StrEnum):
    QUEUED = "queued"  # decided on by a scheduler pass; composed by a job
    SENT = "sent"  # a full digest is in the outbox
    NO_CHANGES = "no-changes"  # the one-line "no changes" email is in the outbox
    SKIPPED = "skipped"  # nothing sent: nothing open, or a later period or no auditor


class Digest(Base):
    """One auditor's digest for one period.  ``period_at`` is the moment
    the schedule fell due (UTC), so a period is the same row whichever
    pass finds it; ``number`` counts the auditor's digests sent from 1.
    ``snapshot`` holds the figures sent (JSON), against which the next
    digest says what changed."""

    __tablename__ = "digests"
    # A number is used once per auditor, however many workers compose.
    __table_args__ = (
        UniqueConstraint("user_id", "period_at"),
        UniqueConstraint("user_id", "number", name="uq_digests_user_id_number"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    period_at: Mapped[datetime]
    schedule: Mapped[DigestSchedule] = mapped_column(text_enum(DigestSchedule, "digest_schedule"))
    state: Mapped[DigestState] = mapped_column(text_enum(DigestState, "digest_state"))
    number: Mapped[int | None]
    snapshot: Mapped[str | None] = mapped_column(Text)
    batch: Mapped[str] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime]
    composed_at: Mapped[datetime | None]
