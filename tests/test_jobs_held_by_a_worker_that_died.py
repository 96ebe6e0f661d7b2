"""A worker holds the jobs it runs (and those in its in-process queue)
under a lease its heartbeat renews: while it lives nobody else takes them;
once it dies they are dispatched again as soon as the lease lapses, not
after the minutes a lost queue message waits."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.config import Settings
from mailflow.core.jobs import add_job, start_jobs, take_jobs_for_dispatch
from mailflow.core.models import Job, JobState
from mailflow.core.runtime import Runtime
from mailflow.workers import job_kinds
from mailflow.workers.job_runs import JobRuns
from mailflow.workers.queue import REDISPATCH_AFTER, JobQueue, QueueWorker
from tests.support.seed import NOW
from tests.support.waiting import wait_until

LEASE = timedelta(seconds=20)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def runtime(settings: Settings, clock: Clock) -> Iterator[Runtime]:
    rt = Runtime(dataclasses.replace(settings, send_lease_seconds=20.0), clock=clock)
    yield rt
    rt.close()


@pytest.fixture
def job_id(runtime: Runtime) -> int:
    with runtime.sessions.begin() as session:
        job = add_job(session, "test_job", {}, now=NOW)
        session.flush()
        return job.id


def due(runtime: Runtime, at: datetime) -> list[int]:
    """What a dispatcher would take at ``at`` (rolled back: it takes nothing)."""
    with runtime.sessions() as session:
        taken = take_jobs_for_dispatch(session, now=at, stale_after=REDISPATCH_AFTER)
        session.rollback()
    return [taken_id for taken_id, _ in taken]


def held_until(session: Session, job_id: int) -> datetime | None:
    session.rollback()
    return session.scalar(select(Job.held_until).where(Job.id == job_id))


def test_a_started_job_is_left_alone_until_its_lease_lapses(runtime: Runtime, job_id: int) -> None:
    with runtime.sessions.begin() as session:
        [started] = start_jobs(session, [job_id], held_until=NOW + LEASE)
    assert started.attempts == 1

    assert due(runtime, NOW + LEASE - timedelta(seconds=1)) == []
    # Its worker died: nothing renewed the lease.
    assert due(runtime, NOW + LEASE + timedelta(seconds=1)) == [job_id]


def test_a_job_on_a_broker_is_dispatched_again_only_after_the_long_wait(
    runtime: Runtime, job_id: int
) -> None:
    with runtime.sessions.begin() as session:
        take_jobs_for_dispatch(session, now=NOW, stale_after=REDISPATCH_AFTER)

    # Nobody holds it: the broker has its message, and may be slow.
    assert due(runtime, NOW + LEASE * 2) == []
    assert due(runtime, NOW + REDISPATCH_AFTER + timedelta(seconds=1)) == [job_id]


def test_the_heartbeat_renews_what_this_worker_holds_and_nothing_else(
    runtime: Runtime, clock: Clock, job_id: int, session: Session
) -> None:
    with runtime.sessions.begin() as writing:
        other = add_job(writing, "test_job", {}, now=NOW)
        writing.flush()
        other_id = other.id
        start_jobs(writing, [job_id, other_id], held_until=NOW + LEASE)
    runs = JobRuns(runtime)
    runs.hold([job_id])

    clock.now = NOW + timedelta(seconds=15)
    runs.renew()

    assert held_until(session, job_id) == clock.now + LEASE
    assert held_until(session, other_id) == NOW + LEASE
    assert due(runtime, NOW + LEASE + timedelta(seconds=1)) == [other_id]

    # A job let go (finished, say) is not given a lease again.
    runs.let_go([job_id])
    with runtime.sessions.begin() as writing:
        writing.get_one(Job, job_id).held_until = None
    runs.hold([job_id])
    runs.renew()
    assert held_until(session, job_id) is None


def test_a_finished_job_has_no_lease_and_is_not_dispatched_again(
    runtime: Runtime, job_id: int, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(job_kinds.HANDLERS, "test_job", lambda runtime, payload: None)

    assert JobRuns(runtime).run([job_id])

    session.rollback()
    job = session.get_one(Job, job_id)
    assert (job.state, job.held_until, job.attempts) == (JobState.DONE, None, 1)
    assert due(runtime, NOW + REDISPATCH_AFTER * 2) == []


def test_a_failing_job_is_tried_again_after_a_back_off_then_given_up(
    runtime: Runtime, clock: Clock, job_id: int, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fails(runtime: Runtime, payload: dict[str, Any]) -> None:
        raise RuntimeError("the handler failed")

    monkeypatch.setitem(job_kinds.HANDLERS, "test_job", fails)
    runs = JobRuns(runtime)
    for attempt in range(1, 11):
        assert not runs.run([job_id])
        session.rollback()
        job = session.get_one(Job, job_id)
        assert job.attempts == attempt and "the handler failed" in (job.last_error or "")
        if attempt < 10:
            assert job.state == JobState.PENDING and job.held_until is None
            assert job.run_after > clock.now
            clock.now = job.run_after
    assert job.state == JobState.FAILED


def test_a_job_of_a_kind_nobody_handles_fails_at_once(
    runtime: Runtime, job_id: int, session: Session
) -> None:
    JobRuns(runtime).run([job_id])

    job = session.get_one(Job, job_id)
    assert job.state == JobState.FAILED
    assert "no handler for job kind 'test_job'" in (job.last_error or "")


def test_a_running_worker_keeps_its_job_from_a_second_worker(
    settings: Settings, job_id: int, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real time, real threads: the job runs longer than its lease, and the
    heartbeat keeps a second dispatcher off it."""
    lease = 2.0
    running = threading.Event()
    release = threading.Event()

    def long_job(runtime: Runtime, payload: dict[str, Any]) -> None:
        running.set()
        release.wait(30)

    monkeypatch.setitem(job_kinds.HANDLERS, "test_job", long_job)
    with session.begin():
        session.get_one(Job, job_id).run_after = NOW - timedelta(days=3650)
    short = Runtime(dataclasses.replace(settings, send_lease_seconds=lease))
    other = Runtime(dataclasses.replace(settings, send_lease_seconds=lease))
    worker = QueueWorker(short, poll_seconds=0.05)
    second = JobQueue(other, broker=None)
    worker.start()
    try:
        assert running.wait(30)
        first_lease = held_until(session, job_id)
        assert first_lease is not None
        wait_until(
            lambda: datetime.now(UTC) > first_lease + timedelta(seconds=lease / 2),
            timeout=lease * 3,
            what="the first lease to run out",
        )
        # Past the first lease: renewed, and the second worker finds nothing.
        assert (held_until(session, job_id) or first_lease) > datetime.now(UTC)
        assert second.dispatch_due() == 0
    finally:
        release.set()
        worker.stop()
        second.close()
        short.close()
        other.close()
    session.rollback()
    assert session.get_one(Job, job_id).state == JobState.DONE


def test_a_restarted_in_process_queue_forgets_only_what_nobody_holds(
    runtime: Runtime, job_id: int
) -> None:
    from mailflow.core.jobs import forget_enqueued

    with runtime.sessions.begin() as session:
        start_jobs(session, [job_id], held_until=NOW + LEASE)
    with runtime.sessions.begin() as session:
        forget_enqueued(session, now=NOW)
    # Another process still runs it: left alone.
    assert due(runtime, NOW + timedelta(seconds=1)) == []
    with runtime.sessions.begin() as session:
        forget_enqueued(session, now=NOW + LEASE + timedelta(seconds=1))
    assert due(runtime, NOW + LEASE + timedelta(seconds=1)) == [job_id]
