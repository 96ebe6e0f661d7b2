"""The outbox: work written in the same transaction as the change that
needs it."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from mailflow.core.models.base import Base, text_enum


class JobState(enum.StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class Job(Base):
    """The outbox: work that must happen because of a change, written in the
    same transaction as the change.  Queue messages carry only its id."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_state_run_after", "state", "run_after"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict[str, Any]]
    state: Mapped[JobState] = mapped_column(text_enum(JobState, "job_state"))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    run_after: Mapped[datetime]
    enqueued_at: Mapped[datetime | None]
    # While a worker holds the job (running it, or keeping it in an
    # in-process queue), it renews this every few seconds; once it lapses,
    # the worker is taken for dead and the job is dispatched again.
    held_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
