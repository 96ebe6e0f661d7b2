"""The outbox: jobs written in the same transaction as the change that
needs them, handed to the queue by id, and finished idempotently."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, or_, select, update
from sqlalchemy.orm import Session

from mailflow.core.models import Job, JobState


def add_job(
    session: Session,
    kind: str,
    payload: dict[str, Any],
    *,
    now: datetime,
    run_after: datetime | None = None,
) -> Job:
    job = Job(**new_job_values(kind, payload, now=now, run_after=run_after))
    session.add(job)
    return job


def new_job_values(
    kind: str, payload: dict[str, Any], *, now: datetime, run_after: datetime | None = None
) -> dict[str, Any]:
    """A new job's columns, for add_job and for bulk inserts."""
    return {
        "kind": kind,
        "payload": payload,
        "state": JobState.PENDING,
        "attempts": 0,
        "run_after": run_after or now,
        "created_at": now,
    }


def _due_for_dispatch(now: datetime, stale_after: timedelta) -> Select[int]:
    return (
        select(Job.id)
        .where(
            Job.state == JobState.PENDING,
            Job.run_after <= now,
            or_(Job.enqueued_at.is_(None), Job.enqueued_at < now - stale_after),
        )
        .order_by(Job.id)
    )


def any_jobs_for_dispatch(session: Session, *, now: datetime, stale_after: timedelta) -> bool:
    """A cheap look, for a reader that must not take the write lock when
    (as nearly always) there is nothing to do."""
    return session.scalar(_due_for_dispatch(now, stale_after).limit(1)) is not None


def take_jobs_for_dispatch(
    session: Session, *, now: datetime, stale_after: timedelta, limit: int = 100
) -> list[int]:
    """Mark due jobs as enqueued and return their ids, for the caller to put
    on the queue after committing.

    A job counts as due when it is pending, its time has come, and it has not
    been put on the queue within ``stale_after`` (a queue message that was
    lost, with an in-process queue that died, say, is sent again then).
    """
    due = _due_for_dispatch(now, stale_after).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    ids = list(session.scalars(due))
    if ids:
        session.execute(update(Job).where(Job.id.in_(ids)).values(enqueued_at=now))
    return ids


def forget_enqueued(session: Session) -> None:
    """An in-process queue starts empty: whatever it held before a restart
    is gone, so every pending job must be dispatched again."""
    session.execute(update(Job).where(Job.state == JobState.PENDING).values(enqueued_at=None))


def start_job(session: Session, job_id: int) -> Job | None:
    """The job, if there is still work to do for it (a redelivered message
    for a finished job finds None)."""
    job = session.get(Job, job_id)
    if job is None or job.state != JobState.PENDING:
        return None
    job.attempts += 1
    return job


def finish_job(job: Job, *, now: datetime) -> None:
    job.state = JobState.DONE
    job.finished_at = now
    job.last_error = None


def run_job_again(job: Job, *, at: datetime) -> None:
    job.run_after = at
    job.enqueued_at = None


def fail_job(job: Job, *, now: datetime, error: str) -> None:
    job.state = JobState.FAILED
    job.finished_at = now
    job.last_error = error
