"""The `mailflow web` command."""

from __future__ import annotations

import logging
import socket
from importlib import import_module
from typing import TYPE_CHECKING

import click

from mailflow.cli.context import Context, fail
from mailflow.cli.metrics_server import (
    child_metrics_address,
    metrics_listen_option,
    metrics_server,
)
from mailflow.cli.running import HostPort
from mailflow.cli.web_workers import run_workers
from mailflow.core.runtime import Runtime

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger("mailflow")


def web_server(runtime: Runtime, host: str, port: int) -> uvicorn.Server:
    """A uvicorn server for the web app; ``serve`` runs it in a thread and
    stops it with ``should_exit``."""
    # Imported here: only the commands that serve the pages pay for loading
    # uvicorn, Starlette and the page templates.
    import uvicorn

    from mailflow.web import create_app

    config = uvicorn.Config(
        create_app(runtime),
        host=host,
        port=port,
        log_level="warning",
        # No logging set-up of uvicorn's own: its loggers pass their lines
        # to the process's handler, in MAILFLOW_LOG_FORMAT like the rest.
        log_config=None,
        # Behind a TLS proxy the client's address and scheme come from it.
        proxy_headers=True,
        server_header=False,
    )
    return uvicorn.Server(config)


def listening_socket(host: str, port: int) -> socket.socket:
    """The web server's socket, bound here so that an address in use or not
    ours is one clear OSError, not uvicorn's own log line and exit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # The protocol is named, not left 0 as socket.create_server leaves it:
    # asyncio sets TCP_NODELAY only on sockets whose proto is TCP, and
    # without it every keep-alive response waited ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)
    except OSError:
        sock.close()
        raise
    return sock


@click.command("web")
@click.option(
    "--listen",
    type=HostPort(),
    metavar="HOST:PORT",
    help="Where to listen (default: MAILFLOW_WEB_ADDR, 127.0.0.1:8000).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Server processes sharing the one port (each with its own database connections).",
)
@metrics_listen_option
@click.pass_obj
def web(
    ctx: Context,
    listen: tuple[str, int] | None,
    workers: int,
    metrics_listen: tuple[str, int] | None,
) -> None:
    """Serve the web pages: confirming answers with a second factor
    (the /r/ and /c/ links in emails) and setting up an authenticator
    app (the /enrol/ link in welcome emails).

    Serves plain HTTP: put it behind a TLS proxy at MAILFLOW_BASE_URL.
    Stops on SIGTERM or Ctrl-C; with --workers, a worker that dies is
    replaced.

    /healthz and /readyz are served on the web port too; /metrics only
    on --metrics-listen (MAILFLOW_METRICS_ADDR).  With --workers N, worker
    i serves them on that port plus i."""
    ctx.require_schema()
    host, port = listen or ctx.settings.web_addr
    try:
        sock = listening_socket(host, port)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", code=2)
    log.info("web pages on http://%s:%s for %s", host, port, ctx.settings.base_url)
    if workers > 1:
        serve_in_workers(ctx, sock, host, port, workers, metrics_listen)
        return
    server = web_server(ctx.runtime, host, port)
    health = metrics_server(ctx.runtime, metrics_listen, broker=False, queue=False)
    if health is not None:
        health.start()
    # uvicorn handles SIGTERM and Ctrl-C itself, finishing requests in flight.
    try:
        server.run(sockets=[sock])
    finally:
        if health is not None:
            health.stop()
    if not server.started:
        fail(f"cannot listen on {host}:{port}", code=2)
    log.info("web server stopped")


def serve_in_workers(
    ctx: Context,
    sock: socket.socket,
    host: str,
    port: int,
    workers: int,
    metrics: tuple[str, int] | None,
) -> None:
    # Loaded once here, before forking, rather than by every worker.
    import_module("uvicorn")
    import_module("mailflow.web")
    settings = ctx.settings
    # Connections opened here (the schema check) must not be shared by
    # the forked workers: each makes its own.
    ctx.close()

    def serve(sock: socket.socket, slot: int) -> bool:
        runtime = Runtime(settings)
        health = None
        try:
            address = child_metrics_address(runtime, metrics, slot)
            try:
                health = metrics_server(runtime, address, broker=False, queue=False)
            except SystemExit:
                return False  # it has said why; another try would fail the same way
            if health is not None:
                health.start()
            server = web_server(runtime, host, port)
            server.run(sockets=[sock])
            return server.started
        finally:
            if health is not None:
                health.stop()
            runtime.close()

    if not run_workers(serve, sock, workers):
        fail(f"the web workers on {host}:{port} could not start", code=2)
    log.info("web server stopped")
