"""Prometheus metrics, defined once, and the small calls the places where
things happen make.

Counts of what the database records (an email sent, a reply processed, a
confirmation committed, a wrong code) are added only when the transaction
that records it commits (``count_on_commit``): a rolled-back transaction
did not happen, and a retried one must not count twice.

Labels hold only values from a small set the code names (an email's kind,
a route's template, a message's state), never anything a person or a
message supplied: link tokens and reply keys must never reach a metric.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from functools import partial

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session

from mailflow.core.health import CHECK_SECONDS, describe
from mailflow.core.on_commit import after_commit

log = logging.getLogger("mailflow")
# How long a scrape waits for metrics read from the database.
READ_SECONDS = CHECK_SECONDS

# One registry for mailflow's own metrics (and the process's), not the
# library's global one, so nothing a dependency registers leaks in.
REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

EMAILS_SENT = Counter(
    "mailflow_emails_sent",
    "Emails the relay took, by kind (alert, or a one-off email's kind).",
    ["kind"],
    registry=REGISTRY,
)
EMAILS_DEFERRED = Counter(
    "mailflow_emails_deferred",
    "Tries at sending that failed for now; the email is tried again later.",
    ["kind"],
    registry=REGISTRY,
)
EMAILS_FAILED = Counter(
    "mailflow_emails_failed",
    "Emails given up: the relay refused them for good, or every try failed.",
    ["kind"],
    registry=REGISTRY,
)
EMAILS_BOUNCED = Counter(
    "mailflow_emails_bounced",
    "Delivery reports received about emails sent (the first about each).",
    ["kind"],
    registry=REGISTRY,
)
REPLIES_RECEIVED = Counter(
    "mailflow_replies_received",
    "Inbound messages stored, by the edge that took them (smtp, lmtp, imap).",
    ["source"],
    registry=REGISTRY,
)
REPLIES_PROCESSED = Counter(
    "mailflow_replies_processed",
    "Inbound messages read and acted on (processed) or set aside (ignored).",
    ["state"],
    registry=REGISTRY,
)
REPLIES_FAILED = Counter(
    "mailflow_replies_failed",
    "Inbound messages whose processing failed (kept for `mailflow inbound retry`).",
    registry=REGISTRY,
)
CONFIRMATIONS_COMMITTED = Counter(
    "mailflow_confirmations_committed",
    "Changes committed on a web page after a second factor.",
    registry=REGISTRY,
)
MFA_FAILURES = Counter(
    "mailflow_mfa_failures",
    "Wrong second-factor codes.",
    registry=REGISTRY,
)
MFA_LOCKOUTS = Counter(
    "mailflow_mfa_lockouts",
    "Wrong codes that made their source wait before trying again.",
    registry=REGISTRY,
)
JOB_LATENCY = Histogram(
    "mailflow_job_latency_seconds",
    "From when a job fell due to when a worker finished it, by job kind.",
    ["kind"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
    registry=REGISTRY,
)
HTTP_REQUEST_DURATION = Histogram(
    "mailflow_http_request_duration_seconds",
    "Web requests, by route template (never the path: it holds link tokens), method and status.",
    ["route", "method", "status"],
    registry=REGISTRY,
)


def count_on_commit(session: Session, counter: Counter, amount: float = 1) -> None:
    """Add ``amount`` to ``counter`` (already labelled) when the session's
    outermost transaction commits; nothing if the transaction, or the
    savepoint it was counted in, rolls back."""
    if amount:
        after_commit(session, partial(counter.inc, amount))


def email_tried(session: Session, step: str, kind: str, count: int = 1) -> None:
    """One or more tries at sending emails of ``kind`` left them ``step``
    (sent, deferred or failed: core.sending.Step)."""
    counter = {"sent": EMAILS_SENT, "deferred": EMAILS_DEFERRED, "failed": EMAILS_FAILED}[step]
    count_on_commit(session, counter.labels(kind=kind), count)


def email_bounced(session: Session, kind: str) -> None:
    count_on_commit(session, EMAILS_BOUNCED.labels(kind=kind))


def replies_stored(session: Session, sources: list[str]) -> None:
    for source in sources:
        count_on_commit(session, REPLIES_RECEIVED.labels(source=source))


def mfa_failed(session: Session, *, locked_out: bool) -> None:
    count_on_commit(session, MFA_FAILURES)
    if locked_out:
        count_on_commit(session, MFA_LOCKOUTS)


def job_finished(kind: str, due: datetime, finished: datetime) -> None:
    JOB_LATENCY.labels(kind=kind).observe(max((finished - due).total_seconds(), 0.0))


class Forwarding(Collector):
    """Another registry's metrics, for a registry that adds its own
    (an edge's queue depth) to the process-wide ones."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        return self.registry.collect()


class ScrapeTimeCollector(Collector):
    """Metrics read when scraped, by ``read`` (a bounded query), and
    ``<up_name>`` 1 when they were read, 0 when not.

    A scrape never waits long on ``read``: it is run in a thread of its own
    for at most ``seconds``, and a scrape that finds a read still going
    (a database that hangs) leaves its metrics out at once rather than
    queue behind it.  A failure is logged once, not on every scrape; the
    scrape still answers with every other metric."""

    def __init__(
        self,
        read: Callable[[], Iterator[Metric]],
        *,
        up_name: str,
        up_help: str,
        seconds: float = READ_SECONDS,
    ) -> None:
        self.read = read
        self.up_name, self.up_help, self.seconds = up_name, up_help, seconds
        self._reading = threading.Lock()
        self._failing = False

    def collect(self) -> Iterator[Metric]:
        if not self._reading.acquire(blocking=False):
            # Another scrape's read is going: a slow one was logged by the
            # scrape that started it, and a quick one (two scrapers at the
            # same moment) is not worth a line.
            return iter([self._gauge(0)])
        outcome: list[list[Metric] | Exception] = []
        done = threading.Event()

        def run() -> None:
            try:
                outcome.append(list(self.read()))
            except Exception as exc:  # every driver raises its own kinds
                outcome.append(exc)
            finally:
                self._reading.release()
                done.set()

        threading.Thread(target=run, name="scrape-read", daemon=True).start()
        done.wait(self.seconds)
        return self._finish(outcome)

    def _finish(self, outcome: list[list[Metric] | Exception]) -> Iterator[Metric]:
        if not outcome:
            return self._up(None, f"no answer within {self.seconds:g} s")
        if isinstance(outcome[0], Exception):
            return self._up(None, describe(outcome[0]))
        return self._up(outcome[0], "")

    def _up(self, metrics: list[Metric] | None, why: str) -> Iterator[Metric]:
        if metrics is None and not self._failing:
            log.warning("%s: metrics left out: %s", self.up_name, why)
        elif metrics is not None and self._failing:
            log.info("%s: metrics read again", self.up_name)
        self._failing = metrics is None
        return iter([*(metrics or []), self._gauge(0 if metrics is None else 1)])

    def _gauge(self, up: int) -> Metric:
        gauge = GaugeMetricFamily(self.up_name, self.up_help)
        gauge.add_metric([], up)
        return gauge

    def describe(self) -> Iterator[Metric]:
        # Not read at registration (the database may be away then).
        return iter(())


def edge_registry(extra: Sequence[Collector]) -> CollectorRegistry:
    """A registry an edge serves: the process-wide metrics and ``extra``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Forwarding(REGISTRY))
    for collector in extra:
        registry.register(collector)
    return registry
