"""`mailflow serve`: every edge in one process, and the small supervisor
that starts them in order and stops them in reverse."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

import click

from mailflow.cli.context import Context, fail, pass_context
from mailflow.cli.metrics_server import metrics_listen_option, metrics_server
from mailflow.cli.running import run_until_stopped, show_addr, warn_unless_commits_are_durable
from mailflow.cli.web_command import listening_socket, web_server
from mailflow.config import Settings
from mailflow.core.runtime import Runtime
from mailflow.workers.queue import QueueWorker
from mailflow.workers.scheduler import Scheduler

log = logging.getLogger("mailflow")


class Supervisor:
    """The parts of one process: started in the order added, stopped in
    reverse; if one cannot start, those already started are stopped."""

    def __init__(self) -> None:
        self._parts: list[tuple[Callable[[], None], Callable[[], None]]] = []

    def add(self, start: Callable[[], None], stop: Callable[[], None]) -> None:
        self._parts.append((start, stop))

    def start_all(self) -> None:
        started: list[Callable[[], None]] = []
        try:
            for start, stop in self._parts:
                start()
                started.append(stop)
        except OSError as exc:
            # The inbound server's address is in use or not ours.
            for stop in reversed(started):
                stop()
            fail(f"cannot start: {exc.strerror or exc}", code=2)

    def stop_all(self) -> None:
        for _start, stop in reversed(self._parts):
            stop()


def default_worker_threads() -> int:
    """Two threads a CPU, at least 2 and at most 8: the queue worker's
    threads mostly wait on the relay and the database, but share one GIL
    with every other edge of this process."""
    return max(2, min(8, 2 * (os.cpu_count() or 1)))


@click.command()
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=default_worker_threads,
    show_default="2 a CPU, 2 to 8",
    help="Worker threads.",
)
@click.option("--no-smtpd", is_flag=True, help="Do not run the inbound SMTP server.")
@click.option("--no-web", is_flag=True, help="Do not run the web server.")
@click.option("--no-scheduler", is_flag=True, help="Do not run the scheduler.")
@metrics_listen_option
@pass_context
def serve(
    ctx: Context,
    threads: int,
    no_smtpd: bool,
    no_web: bool,
    no_scheduler: bool,
    metrics_listen: tuple[str, int] | None,
) -> None:
    """Run every part of mailflow in one process, on the embedded defaults
    unless configured otherwise: the queue worker, the scheduler, the
    inbound SMTP server (MAILFLOW_INBOUND_ADDR), the web pages
    (MAILFLOW_WEB_ADDR) and, when MAILFLOW_IMAP_URL is set, the IMAP
    poller."""
    ctx.require_schema()
    warn_unless_commits_are_durable(ctx.runtime.engine)
    settings = ctx.settings
    runtime = ctx.runtime
    supervisor = Supervisor()
    queue_worker = QueueWorker(runtime, threads=threads)
    supervisor.add(queue_worker.start, queue_worker.stop)
    if not no_scheduler:
        scheduler = Scheduler(runtime)
        supervisor.add(scheduler.start, scheduler.stop)
    if not no_smtpd:
        add_inbound_server(supervisor, runtime, settings)
    if settings.imap_url:
        add_imap_poller(supervisor, runtime)
    if not no_web:
        add_web_server(supervisor, runtime, settings)
    health = metrics_server(runtime, metrics_listen, broker=True, queue=True)
    if health is not None:
        supervisor.add(health.start, health.stop)

    def start_all() -> None:
        supervisor.start_all()
        log_serving(settings, smtpd=not no_smtpd, web=not no_web)

    run_until_stopped(start_all, supervisor.stop_all)


def add_inbound_server(supervisor: Supervisor, runtime: Runtime, settings: Settings) -> None:
    # Imported here, as in `mailflow smtpd`: only the commands that run
    # the server pay for loading aiosmtpd.
    from mailflow.gateway.smtpd import InboundServer
    from mailflow.workers.key_kinds import REPLY_KEY_KINDS

    host, port = settings.inbound_addr
    server = InboundServer(runtime, host, port, key_kinds=REPLY_KEY_KINDS)
    supervisor.add(server.start, server.stop)


def add_imap_poller(supervisor: Supervisor, runtime: Runtime) -> None:
    # Imported here, as in `mailflow imap`: only the commands that poll
    # pay for loading imapclient.
    from mailflow.gateway.imap import ImapPoller

    stop_polling = threading.Event()
    poller_thread = threading.Thread(
        target=ImapPoller(runtime).run, args=(stop_polling,), name="imap", daemon=True
    )

    def stop_poller() -> None:
        stop_polling.set()
        poller_thread.join(timeout=10)

    supervisor.add(poller_thread.start, stop_poller)


def add_web_server(supervisor: Supervisor, runtime: Runtime, settings: Settings) -> None:
    try:
        web_socket = listening_socket(*settings.web_addr)
    except OSError as exc:
        fail(f"cannot listen on {show_addr(*settings.web_addr)}: {exc.strerror}", code=2)
    # In a thread uvicorn leaves the signals to run_until_stopped.
    web = web_server(runtime, *settings.web_addr)
    web_thread = threading.Thread(
        target=web.run, kwargs={"sockets": [web_socket]}, name="web", daemon=True
    )

    def stop_web() -> None:
        web.should_exit = True
        web_thread.join(timeout=10)

    supervisor.add(web_thread.start, stop_web)


def log_serving(settings: Settings, *, smtpd: bool, web: bool) -> None:
    where = settings.smtp_relay.redacted() if settings.smtp_relay else settings.maildir
    log.info("mailflow serving: mail goes to %s", where)
    if smtpd:
        log.info("inbound SMTP on %s:%s", *settings.inbound_addr)
    if web:
        log.info("web pages on http://%s:%s", *settings.web_addr)
