"""An operator's Prometheus keeps scraping a worker while its PostgreSQL
database fails: dropped, or hanging on a lock.  The scrape still answers,
at once or within the read's bound, with every counter and without the
queue's depth (mailflow_queue_depth_up 0 says so); the worker logs the
failure once through its log, never a traceback; /healthz never waits
behind a scrape.  The worker runs as a real process."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailflow.cli.metrics_server import MAX_CONNECTIONS
from tests.support.environment import SECRET_KEY
from tests.support.machines import Machine, environment, running, start, wait_for_port
from tests.support.relay import free_port
from tests.support.scraping import (
    Breakable,
    SampleKey,
    breakable_database,
    get,
    scrape,
    table_locked,
    value,
)
from tests.support.waiting import wait_until

# The database fails here by being dropped or locked: PostgreSQL's ways.
pytestmark = pytest.mark.backends("postgresql")

DEPTH_UP = "mailflow_queue_depth_up"
A_DEPTH_GAUGE = "mailflow_jobs_oldest_due_seconds"
A_COUNTER = "process_cpu_seconds_total"
# What socketserver prints to stderr, past the log's format, when a request fails.
UNLOGGED_ERROR = "Exception occurred during processing of request"


@pytest.fixture
def breakable(backend: str, tmp_path: Path) -> Iterator[Breakable]:
    yield from breakable_database(backend, None, tmp_path)


@pytest.fixture
def worker(breakable: Breakable, tmp_path: Path) -> Iterator[tuple[Machine, int]]:
    port = free_port()
    env = environment(
        {
            "MAILFLOW_DATABASE_URL": breakable.url,
            "MAILFLOW_SECRET_KEY": SECRET_KEY,
            "MAILFLOW_MAIL_DOMAIN": "alerts.test",
            "MAILFLOW_QUEUE_NAME": f"mailflow-scrape-{uuid.uuid4().hex[:8]}",
        }
    )
    machine = start("worker", ["worker", "--metrics-listen", f"127.0.0.1:{port}"], env, tmp_path)
    with running([machine]):
        wait_for_port(machine, port)
        yield machine, port


def names(samples: dict[SampleKey, float]) -> set[str]:
    return {name for name, _labels in samples}


def test_a_scrape_after_the_database_is_dropped_answers_without_the_queue_depth(
    breakable: Breakable, worker: tuple[Machine, int]
) -> None:
    machine, port = worker
    samples = scrape(port)
    assert value(samples, DEPTH_UP) == 1
    assert A_DEPTH_GAUGE in names(samples)

    breakable.take_away()

    for _ in range(3):
        samples = scrape(port)
        assert value(samples, DEPTH_UP) == 0
        assert A_DEPTH_GAUGE not in names(samples)
        assert A_COUNTER in names(samples)
    assert get(port, "/healthz") == (200, "ok\n")
    # Said once, in the log's own format, not a traceback per scrape.
    assert machine.log.count(f"{DEPTH_UP}: metrics left out") == 1, machine.log
    assert UNLOGGED_ERROR not in machine.log, machine.log
    assert machine.process.poll() is None, machine.log


def test_scrapes_while_the_database_hangs_answer_and_never_hold_up_healthz(
    breakable: Breakable, worker: tuple[Machine, int]
) -> None:
    machine, port = worker
    assert value(scrape(port), DEPTH_UP) == 1
    answers: list[dict[SampleKey, float]] = []
    with table_locked(breakable.url, "jobs") as waiting:
        # As many scrapes at once as leave a connection for the probe.
        scrapes = [
            threading.Thread(target=lambda: answers.append(scrape(port)))
            for _ in range(MAX_CONNECTIONS - 1)
        ]
        for one in scrapes:
            one.start()
        wait_until(lambda: waiting() >= 1, timeout=30, what="the depth read waiting on the lock")
        assert get(port, "/healthz") == (200, "ok\n")
        for one in scrapes:
            one.join(30)
        # Every scrape answered while the lock is still held: none waited
        # for the read past its bound.
        assert len(answers) == len(scrapes)
    for samples in answers:
        assert value(samples, DEPTH_UP) == 0
        assert A_COUNTER in names(samples)
    # Once the lock is gone, the depth is read again.
    wait_until(lambda: value(scrape(port), DEPTH_UP) == 1, timeout=30, what="the depth again")
    assert UNLOGGED_ERROR not in machine.log, machine.log
