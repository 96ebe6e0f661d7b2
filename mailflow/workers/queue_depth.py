"""Queue depth, read from the database when scraped: the jobs table is
the queue's source of truth (a broker's own count misses what is not yet
dispatched, and an in-process queue has none to ask).  Each query is
one indexed aggregate (jobs by state and run_after, inbound messages by
state), cheap at any size the service reaches."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import func, select

from mailflow.core.metrics import ScrapeTimeCollector
from mailflow.core.models import InboundMessage, InboundState, Job, JobState
from mailflow.core.runtime import Runtime


def queue_depth_collector(runtime: Runtime) -> ScrapeTimeCollector:
    def read() -> Iterator[Metric]:
        pending = GaugeMetricFamily(
            "mailflow_jobs_pending",
            "Jobs waiting to run or running, by kind (due now or later).",
            labels=["kind"],
        )
        overdue = GaugeMetricFamily(
            "mailflow_jobs_oldest_due_seconds",
            "How long the oldest pending job has been due (0 when none is).",
        )
        waiting = GaugeMetricFamily(
            "mailflow_replies_waiting",
            "Inbound messages stored and not yet processed.",
        )
        now = runtime.clock()
        with runtime.readers() as session:
            for kind, count in session.execute(
                select(Job.kind, func.count())
                .where(Job.state == JobState.PENDING)
                .group_by(Job.kind)
            ):
                pending.add_metric([kind], count)
            oldest = session.scalar(
                select(func.min(Job.run_after)).where(
                    Job.state == JobState.PENDING, Job.run_after <= now
                )
            )
            waiting.add_metric(
                [],
                session.scalar(
                    select(func.count()).where(InboundMessage.state == InboundState.RECEIVED)
                )
                or 0,
            )
        overdue.add_metric([], max((now - oldest).total_seconds(), 0.0) if oldest else 0.0)
        yield from (pending, overdue, waiting)

    return ScrapeTimeCollector(
        read,
        up_name="mailflow_queue_depth_up",
        up_help="1 when the queue's depth was read from the database for this scrape, "
        "0 when not (the database failed or did not answer in time).",
    )
