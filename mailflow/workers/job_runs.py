"""Running what one queue message names: a single job, or a batch of jobs
of one kind.  Each run claims its jobs in one transaction, holds them
under a lease the worker's heartbeat renews, and records every outcome in
one more: done, due again at a time, or failed (run again after a
back-off, given up after MAX_JOB_ATTEMPTS).  A job that fails never holds
back the others of its batch."""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from mailflow.core import metrics
from mailflow.core.jobs import (
    JobResult,
    StartedJob,
    finish_jobs,
    release_holds,
    renew_holds,
    retry_or_fail_job,
    run_jobs_again,
    start_jobs,
)
from mailflow.core.runtime import Runtime
from mailflow.workers.job_kinds import BATCH_HANDLERS, HANDLERS

log = logging.getLogger(__name__)

# A job that keeps raising is given up after this many runs, so one bad job
# cannot occupy the workers for ever; it stays in the table with its error.
MAX_JOB_ATTEMPTS = 10


class JobRuns:
    """Runs jobs by id, and knows which jobs this process holds."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._held: set[int] = set()
        self._lock = threading.Lock()

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.runtime.settings.send_lease_seconds)

    def hold(self, ids: list[int]) -> None:
        with self._lock:
            self._held.update(ids)

    def let_go(self, ids: list[int]) -> None:
        with self._lock:
            self._held.difference_update(ids)

    def held_count(self) -> int:
        with self._lock:
            return len(self._held)

    def renew(self) -> None:
        """The heartbeat: extend the lease on every job held here."""
        with self._lock:
            ids = sorted(self._held)
        if ids:
            now = self.runtime.clock()
            with self.runtime.sessions.begin() as session:
                renew_holds(session, ids, now=now, until=now + self.lease)

    def release(self) -> None:
        """Let go of every job still held here (on a clean stop: those an
        in-process queue held but never ran), so that another worker takes
        them at once rather than when their lease runs out."""
        with self._lock:
            ids, self._held = sorted(self._held), set()
        if ids:
            with self.runtime.sessions.begin() as session:
                release_holds(session, ids)

    def run(self, ids: list[int]) -> bool:
        """Run the jobs; True when one of them may have queued others or is
        due again now, so the caller should dispatch at once."""
        self.hold(ids)
        try:
            with self.runtime.sessions.begin() as session:
                jobs = start_jobs(session, ids, held_until=self.runtime.clock() + self.lease)
            if not jobs:
                return False
            results = self._results(jobs)
            return self._settle(jobs, results)
        finally:
            self.let_go(ids)

    def _results(self, jobs: list[StartedJob]) -> dict[int, JobResult]:
        kind = jobs[0].kind
        batch = BATCH_HANDLERS.get(kind)
        try:
            if batch is not None and all(job.kind == kind for job in jobs):
                return batch(self.runtime, {job.id: job.payload for job in jobs})
            return {job.id: self._run_one(job) for job in jobs}
        except Exception as exc:
            log.exception("jobs %s (%s) failed", [job.id for job in jobs], kind)
            return {job.id: exc for job in jobs}

    def _run_one(self, job: StartedJob) -> JobResult:
        handler = HANDLERS.get(job.kind)
        try:
            if handler is None:
                raise LookupError(f"no handler for job kind {job.kind!r}")
            return handler(self.runtime, job.payload)
        except Exception as exc:
            log.exception("job %s (%s) failed on attempt %s", job.id, job.kind, job.attempts)
            return exc

    def _settle(self, jobs: list[StartedJob], results: dict[int, JobResult]) -> bool:
        now = self.runtime.clock()
        done: list[int] = []
        again: dict[datetime, list[int]] = {}
        with self.runtime.sessions.begin() as session:
            for job in jobs:
                result = results.get(job.id, _MISSING)
                if isinstance(result, Exception):
                    # A kind nobody handles fails at once: no retry will mend it.
                    attempts = MAX_JOB_ATTEMPTS if _handled(job.kind) else 0
                    retry_or_fail_job(
                        session, job, error=repr(result)[:2000], now=now, max_attempts=attempts
                    )
                elif result is None:
                    done.append(job.id)
                else:
                    again.setdefault(result, []).append(job.id)
            if done:
                finish_jobs(session, done, now=now)
            for at, ids in again.items():
                run_jobs_again(session, ids, at=at)
        job_latency(jobs, done, now)
        return bool(done) or any(at <= now for at in again)


def job_latency(jobs: list[StartedJob], done: list[int], now: datetime) -> None:
    """Observed once the jobs are recorded done: how long each waited."""
    finished = set(done)
    for job in jobs:
        if job.id in finished:
            metrics.job_finished(job.kind, job.due, now)


# A batch handler that gave no result for a job did not do it.
_MISSING = LookupError("the batch handler gave no result for this job")


def _handled(kind: str) -> bool:
    return kind in HANDLERS or kind in BATCH_HANDLERS
