"""The small HTTP server each long-running edge (smtpd, worker, imap,
scheduler, web, serve) may run on its metrics address (MAILFLOW_METRICS_ADDR or
--metrics-listen): /healthz, /readyz and /metrics.

A thread beside the edge, not the edge's own server: the inbound server
speaks SMTP, the worker nothing at all, and the web edge's public port
should not show its metrics to the internet.  It answers GET and HEAD
only and changes nothing."""

from __future__ import annotations

import logging
import socket
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import click
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from mailflow.cli.context import fail
from mailflow.cli.running import HostPort, show_addr
from mailflow.core.health import Readiness, describe, shared_readiness
from mailflow.core.metrics import edge_registry
from mailflow.core.runtime import Runtime
from mailflow.workers.queue_depth import queue_depth_collector

log = logging.getLogger("mailflow")

F = TypeVar("F", bound=Callable[..., object])

# A client that opens a connection and sends nothing is dropped after this.
REQUEST_SECONDS = 10.0
# Connections served at once; past it, a new one is closed unanswered (a
# scraper and a probe or two are all that should ever come).
MAX_CONNECTIONS = 16


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most MAX_CONNECTIONS at once, on IPv4
    or IPv6 as the host is written."""

    daemon_threads = True

    def __init__(self, host: str, port: int, handler: type[BaseHTTPRequestHandler]) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__((host, port), handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver would print a traceback to stderr, past the log's
        # format (JSON lines stay JSON lines): one line through logging.
        error = sys.exc_info()[1]
        why = describe(error) if isinstance(error, Exception) else "unknown error"
        log.warning("metrics address: a request was not answered: %s", why)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class MetricsServer:
    """Serves health and metrics for one process until ``stop``."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        registry: CollectorRegistry,
        readiness: Callable[[], Readiness],
    ) -> None:
        self.host = host
        handler = _handler(registry, readiness)
        # Bound here, so an address in use is an OSError the command reports.
        self._server = _BoundedServer(host, port, handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        log.info("health and metrics on http://%s", show_addr(self.host, self.port))

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


def _handler(
    registry: CollectorRegistry, readiness: Callable[[], Readiness]
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = REQUEST_SECONDS
        server_version = "mailflow"
        sys_version = ""

        def do_GET(self) -> None:
            self._answer(body=True)

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def _answer(self, *, body: bool) -> None:
            # The query string is not ours to read; only the path counts.
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                self._send(200, "text/plain; charset=utf-8", b"ok\n", body)
            elif path == "/readyz":
                ready = readiness()
                self._send(
                    200 if ready.ready else 503,
                    "text/plain; charset=utf-8",
                    ready.text().encode(),
                    body,
                )
            elif path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry), body)
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found\n", body)

        def _send(self, status: int, content_type: str, content: bytes, body: bool) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(content)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if body:
                self.wfile.write(content)

        def log_message(self, format: str, *args: object) -> None:
            # Probes every few seconds would flood the log; errors are
            # answered, not logged.
            pass

    return Handler


def metrics_listen_option(command: F) -> F:
    """The --metrics-listen option every long-running edge takes."""
    return click.option(
        "--metrics-listen",
        type=HostPort(),
        metavar="HOST:PORT",
        help="Serve /healthz, /readyz and /metrics here (default: MAILFLOW_METRICS_ADDR; "
        "unset: not served).",
    )(command)


def metrics_server(
    runtime: Runtime,
    listen: tuple[str, int] | None,
    *,
    broker: bool,
    queue: bool,
) -> MetricsServer | None:
    """The edge's metrics server on ``listen`` or MAILFLOW_METRICS_ADDR, or
    None when neither is set; it reports the broker in /readyz when
    ``broker`` (the edge uses it) and the queue's depth when ``queue``."""
    address = listen or runtime.settings.metrics_addr
    if address is None:
        return None
    extra = [queue_depth_collector(runtime)] if queue else []
    try:
        return MetricsServer(
            *address,
            registry=edge_registry(extra),
            readiness=lambda: shared_readiness(runtime.settings, broker=broker),
        )
    except OSError as exc:
        fail(f"cannot listen on {show_addr(*address)}: {exc.strerror or exc}", code=2)


def child_metrics_arguments(
    runtime: Runtime, listen: tuple[str, int] | None, index: int
) -> list[str]:
    """The --metrics-listen a child of --processes N is given: each its own
    port, the address's port plus the child's index (counters live in
    each process, so each is scraped on its own)."""
    address = child_metrics_address(runtime, listen, index)
    return [] if address is None else ["--metrics-listen", show_addr(*address)]


def child_metrics_address(
    runtime: Runtime, listen: tuple[str, int] | None, index: int
) -> tuple[str, int] | None:
    """Where child ``index`` of several processes serves its metrics."""
    address = listen or runtime.settings.metrics_addr
    if address is None:
        return None
    host, port = address
    return host, port + index if port else 0
