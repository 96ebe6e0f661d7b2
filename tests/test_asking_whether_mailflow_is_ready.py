"""An operator's load balancer and orchestrator ask each edge over HTTP
whether it is up (/healthz) and whether it can work (/readyz: the
database, and for the worker the broker, answer).  When the database
goes away (a PostgreSQL database dropped, an SQLite file's folder moved),
/readyz says so with 503 and why, while /healthz still says the process
is up: restarting it would not bring the database back."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from prometheus_client import CollectorRegistry

from mailflow.cli.metrics_server import MAX_CONNECTIONS, MetricsServer
from mailflow.config import Settings
from mailflow.core.health import MAX_WAITING_CHECKS, Readiness, readiness
from mailflow.core.runtime import Runtime
from tests.support.cli import mailflow
from tests.support.environment import SECRET_KEY
from tests.support.machines import Machine, environment, running, start, wait_for_port
from tests.support.relay import free_port
from tests.support.scraping import (
    Breakable,
    breakable_database,
    get,
    scrape,
    table_locked,
    value,
)
from tests.support.waiting import wait_until
from tests.support.web_server import web_server


@pytest.fixture
def breakable(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> Iterator[Breakable]:
    template = request.getfixturevalue("sqlite_template") if backend == "sqlite" else None
    yield from breakable_database(backend, template, tmp_path)


def edge_environment(database_url: str) -> dict[str, str]:
    return environment(
        {
            "MAILFLOW_DATABASE_URL": database_url,
            "MAILFLOW_SECRET_KEY": SECRET_KEY,
            "MAILFLOW_MAIL_DOMAIN": "alerts.test",
            "MAILFLOW_QUEUE_NAME": f"mailflow-ready-{uuid.uuid4().hex[:8]}",
        }
    )


def assert_ready_then_not(port: int, breakable: Breakable, *, why: bool = True) -> None:
    assert get(port, "/healthz") == (200, "ok\n")
    assert get(port, "/readyz") == (200, "ready\n")

    breakable.take_away()

    # An answer is reused for about a second (REUSE_SECONDS): the next
    # check after it says the database is gone.
    wait_until(lambda: get(port, "/readyz")[0] == 503, timeout=30, what="not ready")
    status, body = get(port, "/readyz")
    assert status == 503, body
    if why:
        assert body.startswith("not ready\ndatabase: "), body
    else:
        # The public port names the part, not the driver's words about it.
        assert body == "not ready\ndatabase\n"
    assert get(port, "/healthz") == (200, "ok\n")


def test_the_web_edge_says_it_is_not_ready_when_its_database_is_gone(
    breakable: Breakable, settings_for: Any
) -> None:
    settings: Settings = settings_for(breakable.url)
    runtime = Runtime(settings)
    port = free_port()
    try:
        with web_server(runtime, port):
            assert_ready_then_not(port, breakable, why=False)
            # The pages' own port never shows the metrics.
            assert get(port, "/metrics")[0] == 404
    finally:
        runtime.close()


@pytest.mark.parametrize("command", ["worker", "smtpd", "scheduler"])
def test_each_background_edge_says_on_its_metrics_port_when_the_database_is_gone(
    command: str, breakable: Breakable, tmp_path: Path
) -> None:
    port = free_port()
    args = [command, "--metrics-listen", f"127.0.0.1:{port}"]
    if command == "smtpd":
        args += ["--listen", f"127.0.0.1:{free_port()}"]
    machine = start(command, args, edge_environment(breakable.url), tmp_path)
    with running([machine]):
        wait_for_port(machine, port)
        assert_ready_then_not(port, breakable)
        assert machine.process.poll() is None, machine.log


def test_the_metrics_address_can_come_from_the_settings_and_answers_only_what_it_knows(
    breakable: Breakable, tmp_path: Path
) -> None:
    port = free_port()
    env = edge_environment(breakable.url) | {"MAILFLOW_METRICS_ADDR": f"127.0.0.1:{port}"}
    machine: Machine = start("worker", ["worker"], env, tmp_path)
    with running([machine]):
        wait_for_port(machine, port)
        wait_until(lambda: get(port, "/readyz")[0] == 200, timeout=30, what="readiness")
        assert get(port, "/anything-else") == (404, "not found\n")
        assert get(port, "/metrics")[0] == 200


# What the command says does not depend on the database.
@pytest.mark.backends("sqlite")
def test_a_metrics_address_already_in_use_stops_the_command_saying_so(
    breakable: Breakable,
) -> None:
    with socket_held() as port:
        result = mailflow(
            "worker",
            "--metrics-listen",
            f"127.0.0.1:{port}",
            database_url=breakable.url,
        )
    assert result.exit_code == 2, result.output
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


# What the command says does not depend on the database.
@pytest.mark.backends("sqlite")
def test_a_malformed_metrics_address_is_refused_by_name(breakable: Breakable) -> None:
    result = mailflow("worker", database_url=breakable.url, MAILFLOW_METRICS_ADDR="nowhere")
    assert result.exit_code == 2, result.output
    assert "MAILFLOW_METRICS_ADDR" in result.stderr


def test_each_of_several_web_workers_serves_its_metrics_on_a_port_of_its_own(
    breakable: Breakable, tmp_path: Path
) -> None:
    metrics_port, web_port = two_free_ports(), free_port()
    machine = start(
        "web",
        [
            "web",
            "--workers",
            "2",
            "--listen",
            f"127.0.0.1:{web_port}",
            "--metrics-listen",
            f"127.0.0.1:{metrics_port}",
        ],
        edge_environment(breakable.url),
        tmp_path,
    )
    with running([machine]):
        for port in (metrics_port, metrics_port + 1):
            wait_for_port(machine, port)
        for _ in range(6):
            assert get(web_port, "/healthz") == (200, "ok\n")
        # Each request was timed by the worker that served it, once.
        timed = sum(
            value(
                scrape(port),
                "mailflow_http_request_duration_seconds_count",
                route="/healthz",
                method="GET",
                status="200",
            )
            for port in (metrics_port, metrics_port + 1)
        )
        assert timed == 6


@contextmanager
def socket_held() -> Iterator[int]:
    """A loopback port some other program already listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_serve_answers_for_every_edge_it_runs_on_one_metrics_address(
    breakable: Breakable, tmp_path: Path
) -> None:
    metrics_port, web_port = free_port(), free_port()
    env = edge_environment(breakable.url) | {
        "MAILFLOW_INBOUND_ADDR": f"127.0.0.1:{free_port()}",
        "MAILFLOW_WEB_ADDR": f"127.0.0.1:{web_port}",
    }
    machine = start(
        "serve", ["serve", "--metrics-listen", f"127.0.0.1:{metrics_port}"], env, tmp_path
    )
    with running([machine]):
        wait_for_port(machine, metrics_port)
        wait_for_port(machine, web_port)
        assert get(metrics_port, "/readyz") == (200, "ready\n")
        status, text = get(metrics_port, "/metrics")
        assert status == 200
        # The worker's part: the queue's depth, read from the database.
        assert "mailflow_jobs_oldest_due_seconds 0.0" in text
        assert get(web_port, "/healthz") == (200, "ok\n")


def test_each_of_several_worker_processes_answers_on_a_port_of_its_own(
    breakable: Breakable, tmp_path: Path
) -> None:
    port = two_free_ports()
    machine = start(
        "workers",
        ["worker", "--processes", "2", "--metrics-listen", f"127.0.0.1:{port}"],
        edge_environment(breakable.url),
        tmp_path,
    )
    with running([machine]):
        for child_port in (port, port + 1):
            wait_for_port(machine, child_port)
            assert get(child_port, "/readyz") == (200, "ready\n")
            assert get(child_port, "/metrics")[0] == 200


def two_free_ports() -> int:
    """A port whose next one is free too."""
    while True:
        port = free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


@pytest.mark.backends("sqlite")  # the broker's part does not depend on the database
@pytest.mark.parametrize("broker_url", ["rabbitmq", "redis"], indirect=True)
def test_the_worker_is_ready_only_while_its_broker_answers(
    broker_url: str, breakable: Breakable, settings_for: Any
) -> None:
    with refusing_port() as closed:
        away = broker_url.replace(f":{urlsplit(broker_url).port}", f":{closed}")
        assert readiness(settings_for(breakable.url, broker_url=broker_url), broker=True).ready
        not_ready = readiness(settings_for(breakable.url, broker_url=away), broker=True)
    assert not not_ready.ready
    assert [p.split(":", 1)[0] for p in not_ready.problems] == ["broker"]
    # The password in the broker's address is never shown.
    assert ":guest@" not in not_ready.text()
    # An edge that does not use the broker is ready all the same.
    assert readiness(settings_for(breakable.url, broker_url=away), broker=False).ready


@contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port nothing listens on (bound, so nobody else takes it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_the_metrics_port_serves_a_few_connections_at_once_and_closes_any_more() -> None:
    server = MetricsServer(
        "127.0.0.1", 0, registry=CollectorRegistry(), readiness=lambda: Readiness(())
    )
    server.start()
    try:
        address = ("127.0.0.1", server.port)
        idle = [socket.create_connection(address) for _ in range(MAX_CONNECTIONS)]
        # Each idle connection holds a thread until it speaks or times out.
        wait_until(lambda: _closed_at_once(server.port), timeout=10, what="the limit to bite")
        for sock in idle:
            sock.close()
        wait_until(
            lambda: get(server.port, "/healthz") == (200, "ok\n"),
            timeout=10,
            what="room again once the idle connections closed",
        )
    finally:
        server.stop()


def _closed_at_once(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        sock.settimeout(5)
        try:
            return sock.recv(100) == b""
        except ConnectionResetError:
            return True


@pytest.mark.backends("postgresql")  # a query made to wait on a lock the test holds
def test_a_flood_of_readiness_probes_on_the_public_port_is_answered_by_one_check(
    breakable: Breakable, settings_for: Any
) -> None:
    runtime = Runtime(settings_for(breakable.url))
    port = free_port()
    answers: list[tuple[int, str]] = []
    try:
        with web_server(runtime, port), table_locked(breakable.url, "alembic_version") as waiting:
            probes = [
                threading.Thread(target=lambda: answers.append(get(port, "/readyz")))
                for _ in range(3 * MAX_WAITING_CHECKS)
            ]
            for probe in probes:
                probe.start()
            # One check waits on the lock; the other probes wait for its answer.
            wait_until(lambda: waiting() >= 1, timeout=30, what="a check waiting on the lock")
            # (Not a timed assertion: time for every probe to reach the server,
            # where each used to start a check of its own and, past
            # MAX_WAITING_CHECKS of them, answer 503 at once.)
            time.sleep(0.5)
            assert waiting() == 1
        for probe in probes:
            probe.join(30)
    finally:
        runtime.close()
    assert answers == [(200, "ready\n")] * len(probes)
