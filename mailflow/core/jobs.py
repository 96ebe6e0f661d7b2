"""The outbox: jobs written in the same transaction as the change that
needs them, handed to the queue by id, and finished idempotently."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, or_, select, update
from sqlalchemy.orm import Session

from mailflow.core.leases import renew_lease
from mailflow.core.models import Job, JobState

# What running a job gave: None when it is done, the time it is due again,
# or the error it failed with.
JobResult = datetime | Exception | None


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


def _due_for_dispatch(now: datetime, stale_after: timedelta) -> Select[int, str]:
    # Due: pending, its time come, and either held by a worker whose lease
    # has lapsed (it died), or held by nobody and not put on the queue
    # within ``stale_after`` (its queue message may have been lost).
    lapsed = Job.held_until < now
    unqueued = and_(
        Job.held_until.is_(None),
        or_(Job.enqueued_at.is_(None), Job.enqueued_at < now - stale_after),
    )
    return (
        select(Job.id, Job.kind)
        .where(Job.state == JobState.PENDING, Job.run_after <= now, or_(lapsed, unqueued))
        .order_by(Job.id)
    )


def any_jobs_for_dispatch(session: Session, *, now: datetime, stale_after: timedelta) -> bool:
    """A cheap look, for a reader that must not take the write lock when
    (as nearly always) there is nothing to do."""
    return session.execute(_due_for_dispatch(now, stale_after).limit(1)).first() is not None


def take_jobs_for_dispatch(
    session: Session,
    *,
    now: datetime,
    stale_after: timedelta,
    limit: int = 100,
    held_until: datetime | None = None,
) -> list[tuple[int, str]]:
    """Mark due jobs as enqueued and return their ids and kinds, for the
    caller to put on the queue after committing.

    ``held_until`` is for a queue in the caller's own memory: the caller
    holds the jobs from now on and must renew their lease (``renew_holds``)
    until it starts them, since they die with it.
    """
    due = _due_for_dispatch(now, stale_after).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    taken = [(job_id, kind) for job_id, kind in session.execute(due)]
    if taken:
        session.execute(
            update(Job)
            .where(Job.id.in_([job_id for job_id, _ in taken]))
            .values(enqueued_at=now, held_until=held_until)
        )
    return taken


def forget_enqueued(session: Session, *, now: datetime) -> None:
    """An in-process queue starts empty: whatever it held before a restart
    is gone, so every pending job must be dispatched again, but for those
    another live process holds (its lease has not run out)."""
    session.execute(
        update(Job)
        .where(
            Job.state == JobState.PENDING,
            or_(Job.held_until.is_(None), Job.held_until < now),
        )
        .values(enqueued_at=None, held_until=None)
    )


@dataclass(frozen=True)
class StartedJob:
    id: int
    kind: str
    payload: dict[str, Any]
    attempts: int
    # When it fell due: how long it waited is measured from here.
    due: datetime


def start_jobs(session: Session, ids: list[int], *, held_until: datetime) -> list[StartedJob]:
    """The jobs among ``ids`` that still have work to do (a redelivered
    message for a finished job finds none), each counted as attempted and
    held by the caller until ``held_until``: one claim for a whole batch."""
    rows = session.execute(
        select(Job.id, Job.kind, Job.payload, Job.attempts, Job.run_after)
        .where(Job.id.in_(ids), Job.state == JobState.PENDING)
        .order_by(Job.id)
    ).all()
    if rows:
        session.execute(
            update(Job)
            .where(Job.id.in_([row.id for row in rows]))
            .values(attempts=Job.attempts + 1, held_until=held_until)
        )
    return [
        StartedJob(row.id, row.kind, dict(row.payload), row.attempts + 1, row.run_after)
        for row in rows
    ]


def renew_holds(session: Session, ids: list[int], *, now: datetime, until: datetime) -> None:
    """Extend the lease on jobs this worker still holds (a heartbeat).  A
    job finished or let go meanwhile has no lease, and is not given one;
    nor is one whose lease ran out (another worker may have it now)."""
    renew_lease(
        session, Job.held_until, ids, still_held=Job.state == JobState.PENDING, now=now, until=until
    )


def release_holds(session: Session, ids: list[int]) -> None:
    """Give up jobs held but not run: due for dispatch again at once."""
    session.execute(
        update(Job)
        .where(Job.id.in_(ids), Job.state == JobState.PENDING, Job.held_until.is_not(None))
        .values(held_until=None, enqueued_at=None)
    )


def finish_jobs(session: Session, ids: list[int], *, now: datetime) -> None:
    session.execute(
        update(Job)
        .where(Job.id.in_(ids))
        .values(state=JobState.DONE, finished_at=now, last_error=None, held_until=None)
    )


def run_jobs_again(session: Session, ids: list[int], *, at: datetime) -> None:
    session.execute(
        update(Job).where(Job.id.in_(ids)).values(run_after=at, enqueued_at=None, held_until=None)
    )


def retry_or_fail_job(
    session: Session, job: StartedJob, *, error: str, now: datetime, max_attempts: int
) -> bool:
    """Record a failed attempt: the job runs again after a back-off that
    grows with its attempts, or fails for good after ``max_attempts``.
    True when it has failed for good."""
    given_up = job.attempts >= max_attempts
    values: dict[str, Any] = {"last_error": error, "enqueued_at": None, "held_until": None}
    if given_up:
        values |= {"state": JobState.FAILED, "finished_at": now}
    else:
        values["run_after"] = now + timedelta(seconds=min(60, 2**job.attempts))
    session.execute(update(Job).where(Job.id == job.id).values(**values))
    return given_up
