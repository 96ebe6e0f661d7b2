"""The job queue: dramatiq over RabbitMQ, Redis, or an in-process queue.

The database's jobs table is the source of truth (the outbox); a queue
message carries only a job id.  The dispatcher moves due jobs onto the
queue, and the one actor runs a job by id, doing nothing for a job that is
already finished, so a redelivered message is harmless.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import dramatiq
from dramatiq.brokers.stub import StubBroker

from mailflow.alerts.fanout import deliver_alert
from mailflow.alerts.issuing import DELIVER_ALERT
from mailflow.config import Settings
from mailflow.core.jobs import (
    any_jobs_for_dispatch,
    fail_job,
    finish_job,
    forget_enqueued,
    run_job_again,
    start_job,
    take_jobs_for_dispatch,
)
from mailflow.core.models import Job
from mailflow.core.outgoing import SEND_EMAIL
from mailflow.core.runtime import Runtime
from mailflow.deadlines.chaser_emails import send_chasers
from mailflow.deadlines.chasing import SEND_CHASERS
from mailflow.gateway.inbound_messages import PROCESS_INBOUND
from mailflow.reports.digest_job import SEND_DIGESTS, send_digests
from mailflow.workers.inbound import process_inbound
from mailflow.workers.outgoing import send_outgoing

log = logging.getLogger(__name__)

# A job put on the queue this long ago and still pending is put on it again
# (its message may have been lost with a process that died).
REDISPATCH_AFTER = timedelta(minutes=5)
# A job that keeps raising is given up after this many runs, so one bad job
# cannot occupy the workers for ever; it stays in the table with its error.
MAX_JOB_ATTEMPTS = 10
JOB_TIME_LIMIT_MS = 15 * 60 * 1000

Handler = Callable[[Runtime, dict[str, Any]], datetime | None]


def _process_inbound(runtime: Runtime, payload: dict[str, Any]) -> None:
    process_inbound(runtime, int(payload["inbound_message_id"]))


HANDLERS: dict[str, Handler] = {
    DELIVER_ALERT: lambda runtime, payload: deliver_alert(runtime, int(payload["alert_id"])),
    PROCESS_INBOUND: _process_inbound,
    SEND_EMAIL: lambda runtime, payload: send_outgoing(runtime, int(payload["outgoing_email_id"])),
    SEND_CHASERS: send_chasers,
    SEND_DIGESTS: send_digests,
}


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
    def __init__(self, runtime: Runtime, broker: dramatiq.Broker | None = None) -> None:
        self.runtime = runtime
        self.broker = broker if broker is not None else make_broker(runtime.settings)
        self.in_process = isinstance(self.broker, StubBroker)
        self.actor = dramatiq.actor(
            broker=self.broker,
            actor_name="run_job",
            queue_name=runtime.settings.queue_name,
            max_retries=3,
            min_backoff=1_000,
            max_backoff=60_000,
            time_limit=JOB_TIME_LIMIT_MS,
        )(self._run)
        self._dispatch_lock = threading.Lock()

    def dispatch_due(self) -> int:
        """Put every due job on the queue; returns how many."""
        with self._dispatch_lock:
            with self.runtime.readers() as session:
                if not any_jobs_for_dispatch(
                    session, now=self.runtime.clock(), stale_after=REDISPATCH_AFTER
                ):
                    return 0
            with self.runtime.sessions.begin() as session:
                ids = take_jobs_for_dispatch(
                    session, now=self.runtime.clock(), stale_after=REDISPATCH_AFTER
                )
            for job_id in ids:
                self.actor.send(job_id)
        return len(ids)

    def close(self) -> None:
        self.broker.close()

    def _run(self, job_id: int) -> None:
        sessions = self.runtime.sessions
        with sessions.begin() as session:
            job = start_job(session, job_id)
            if job is None:
                return
            kind, payload, attempts = job.kind, dict(job.payload), job.attempts
        handler = HANDLERS.get(kind)
        try:
            if handler is None:
                raise LookupError(f"no handler for job kind {kind!r}")
            again_at = handler(self.runtime, payload)
        except Exception as exc:
            log.exception("job %s (%s) failed on attempt %s", job_id, kind, attempts)
            if attempts >= MAX_JOB_ATTEMPTS or handler is None:
                with sessions.begin() as session:
                    fail_job(
                        session.get_one(Job, job_id), now=self.runtime.clock(), error=repr(exc)
                    )
                return
            raise
        now = self.runtime.clock()
        with sessions.begin() as session:
            job = session.get_one(Job, job_id)
            if again_at is None:
                finish_job(job, now=now)
            else:
                run_job_again(job, at=again_at)
        # The job may have queued others (a processed reply queues its
        # confirm email), or be due again at once: hand them over now rather
        # than at the dispatcher's next round.
        if again_at is None or again_at <= now:
            self.dispatch_due()


class QueueWorker:
    """A dramatiq worker plus the dispatcher loop: what `mailflow worker`
    runs, and `mailflow serve` runs beside the other edges."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        threads: int = 2,
        poll_seconds: float = 1.0,
        broker: dramatiq.Broker | None = None,
    ) -> None:
        self.queue = JobQueue(runtime, broker)
        self.runtime = runtime
        self.threads = threads
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._worker: dramatiq.Worker | None = None
        self._dispatcher: threading.Thread | None = None

    def start(self) -> None:
        if self.queue.in_process:
            with self.runtime.sessions.begin() as session:
                forget_enqueued(session)
        self._worker = dramatiq.Worker(
            self.queue.broker, worker_threads=self.threads, worker_timeout=100
        )
        self._worker.start()
        self._dispatcher = threading.Thread(
            target=self._dispatch_loop, name="dispatcher", daemon=True
        )
        self._dispatcher.start()

    def _dispatch_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.queue.dispatch_due()
            except Exception:
                # The database or broker may be away for a moment; the jobs
                # wait in the table until the next round.
                log.exception("dispatching jobs failed; trying again")
            self._stop.wait(self.poll_seconds)

    def stop(self) -> None:
        self._stop.set()
        if self._dispatcher is not None:
            self._dispatcher.join(timeout=10)
        if self._worker is not None:
            self._worker.stop()
        self.queue.close()
