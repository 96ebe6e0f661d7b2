"""The job queue: dramatiq over RabbitMQ, Redis, or an in-process queue.

The database's jobs table is the source of truth (the outbox); a queue
message carries only job ids.  The dispatcher moves due jobs onto the
queue, those of a kind that runs in batches grouped into one message, and
the one actor runs them by id (``job_runs``), doing nothing for a job that
is already finished, so a redelivered message is harmless.
"""

from __future__ import annotations

import logging
import math
import threading
from datetime import timedelta

import dramatiq
from dramatiq.brokers.stub import StubBroker

from mailflow.config import Settings
from mailflow.core.jobs import any_jobs_for_dispatch, forget_enqueued, take_jobs_for_dispatch
from mailflow.core.leases import RENEWALS_PER_LEASE
from mailflow.core.runtime import Runtime
from mailflow.workers.job_kinds import BATCH_HANDLERS
from mailflow.workers.job_runs import JobRuns

log = logging.getLogger(__name__)

# A job put on the queue this long ago, held by nobody and still pending
# is put on it again (its message may have been lost with a broker that
# forgot it).  A job held by a worker that died is dispatched again as
# soon as its lease lapses, which is much sooner.
REDISPATCH_AFTER = timedelta(minutes=5)
JOB_TIME_LIMIT_MS = 15 * 60 * 1000
# The most jobs of one kind in one queue message, and so in one claim.
BATCH_SIZE = 50
DISPATCH_LIMIT = 200


def make_broker(settings: Settings) -> dramatiq.Broker:
    url = settings.broker_url
    if url is None:
        # dramatiq's in-memory broker: the embedded default.  Jobs are durable
        # all the same, because the outbox table is dispatched again after a
        # restart (see JobQueue.start).
        return StubBroker()
    if url.startswith(("amqp://", "amqps://")):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        return RabbitmqBroker(url=url)
    from dramatiq.brokers.redis import RedisBroker

    return RedisBroker(url=url)  # type: ignore[no-untyped-call]


class JobQueue:
    def __init__(
        self, runtime: Runtime, broker: dramatiq.Broker | None = None, *, threads: int = 2
    ) -> None:
        self.runtime = runtime
        self.broker = broker if broker is not None else make_broker(runtime.settings)
        self.in_process = isinstance(self.broker, StubBroker)
        self.threads = threads
        self.runs = JobRuns(runtime)
        self.actor = dramatiq.actor(
            broker=self.broker,
            actor_name="run_job",
            queue_name=runtime.settings.queue_name,
            # A job's own failures are retried by job_runs, with its own
            # back-off; dramatiq retries only when the database was away
            # as a run began or ended.
            max_retries=3,
            min_backoff=1_000,
            max_backoff=60_000,
            time_limit=JOB_TIME_LIMIT_MS,
        )(self._run)
        self._dispatch_lock = threading.Lock()
        self.stopping = threading.Event()

    def dispatch_due(self) -> int:
        """Put due jobs on the queue; returns how many."""
        with self._dispatch_lock:
            if self.stopping.is_set():
                return 0
            room = self._room()
            if room <= 0:
                return 0
            now = self.runtime.clock()
            with self.runtime.readers() as session:
                if not any_jobs_for_dispatch(session, now=now, stale_after=REDISPATCH_AFTER):
                    return 0
            # An in-process queue dies with this process, so the jobs in it
            # are held under a lease (see JobRuns.renew).
            held_until = now + self.runs.lease if self.in_process else None
            with self.runtime.sessions.begin() as session:
                taken = take_jobs_for_dispatch(
                    session,
                    now=now,
                    stale_after=REDISPATCH_AFTER,
                    limit=room,
                    held_until=held_until,
                )
            if self.in_process:
                self.runs.hold([job_id for job_id, _ in taken])
            for message in self._messages(taken):
                self.actor.send(message)
        return len(taken)

    def _room(self) -> int:
        """How many jobs to take now.  An in-process queue takes only what
        its threads will soon run, so that a worker that dies holds few,
        and other worker processes get their share."""
        if not self.in_process:
            return DISPATCH_LIMIT
        return min(DISPATCH_LIMIT, 2 * self.threads * BATCH_SIZE - self.runs.held_count())

    def _messages(self, taken: list[tuple[int, str]]) -> list[int | list[int]]:
        """One message per job, but jobs of a kind that runs in batches are
        grouped, spread over the worker's threads."""
        singles: list[int | list[int]] = []
        grouped: dict[str, list[int]] = {}
        for job_id, kind in taken:
            if kind in BATCH_HANDLERS:
                grouped.setdefault(kind, []).append(job_id)
            else:
                singles.append(job_id)
        for ids in grouped.values():
            size = min(BATCH_SIZE, math.ceil(len(ids) / self.threads))
            singles.extend(ids[i : i + size] for i in range(0, len(ids), size))
        return singles

    def close(self) -> None:
        self.broker.close()

    def _run(self, job_ids: int | list[int]) -> None:
        ids = [job_ids] if isinstance(job_ids, int) else [int(i) for i in job_ids]
        if self.runs.run(ids):
            # A job may have queued others (a processed reply queues its
            # confirm email), or be due again at once: hand them over now
            # rather than at the dispatcher's next round.
            self.dispatch_due()


class QueueWorker:
    """A dramatiq worker plus the dispatcher loop and the heartbeat that
    renews the lease on the jobs it holds: what `mailflow worker` runs, and
    `mailflow serve` runs beside the other edges."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        threads: int = 2,
        poll_seconds: float = 0.2,
        broker: dramatiq.Broker | None = None,
        forget_on_start: bool = True,
    ) -> None:
        self.queue = JobQueue(runtime, broker, threads=threads)
        self.runtime = runtime
        self.threads = threads
        self.poll_seconds = poll_seconds
        # Only one process may forget what an in-process queue held: the
        # parent of `mailflow worker --processes N` does, its children not.
        self.forget_on_start = forget_on_start
        self._stop = threading.Event()
        self._stop_dispatcher = threading.Event()
        self._worker: dramatiq.Worker | None = None
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        if self.queue.in_process and self.forget_on_start:
            with self.runtime.sessions.begin() as session:
                forget_enqueued(session, now=self.runtime.clock())
        self._worker = dramatiq.Worker(
            self.queue.broker, worker_threads=self.threads, worker_timeout=100
        )
        self._worker.start()
        for name, loop in (("dispatcher", self._dispatch_loop), ("heartbeat", self._heartbeat)):
            thread = threading.Thread(target=loop, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _dispatch_loop(self) -> None:
        while not self._stop_dispatcher.is_set():
            try:
                self.queue.dispatch_due()
            except Exception:
                # The database or broker may be away for a moment; the jobs
                # wait in the table until the next round.
                log.exception("dispatching jobs failed; trying again")
            self._stop_dispatcher.wait(self.poll_seconds)

    def _heartbeat(self) -> None:
        every = self.runtime.settings.send_lease_seconds / RENEWALS_PER_LEASE
        while not self._stop.wait(every):
            try:
                self.queue.runs.renew()
            except Exception:
                # Missing a beat is survivable: a lease is several beats long.
                log.exception("renewing the lease on held jobs failed; trying again")

    def stop(self) -> None:
        # Take no more jobs; let those running finish while the heartbeat
        # still renews their leases (else another worker would run them
        # too); then let go of what was held but never run.
        self.queue.stopping.set()
        self._stop_dispatcher.set()
        for thread in self._threads[:1]:
            thread.join(timeout=10)
        if self._worker is not None:
            self._worker.stop()
        self._stop.set()
        for thread in self._threads[1:]:
            thread.join(timeout=10)
        try:
            self.queue.runs.release()
        except Exception:
            # Their lease runs out by itself: nothing is lost, only later.
            log.exception("letting go of the jobs held here failed")
        self.queue.close()
