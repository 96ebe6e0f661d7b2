"""The `mailflow smtpd` command."""

from __future__ import annotations

import logging
import sys

import click

from mailflow.cli.context import Context, fail
from mailflow.cli.metrics_server import (
    child_metrics_arguments,
    metrics_listen_option,
    metrics_server,
)
from mailflow.cli.processes import ChildProcesses, child_argv, reserve_shared_port
from mailflow.cli.running import (
    HostPort,
    run_until_stopped,
    show_addr,
    warn_unless_commits_are_durable,
)

log = logging.getLogger("mailflow")


@click.command("smtpd")
@click.option(
    "--lmtp",
    is_flag=True,
    help="Speak LMTP (RFC 2033) instead of SMTP, for delivery from a local MTA "
    "(Postfix, Exim): one reply per recipient after DATA.",
)
@click.option(
    "--listen",
    type=HostPort(),
    metavar="HOST:PORT",
    help="Where to listen (default: MAILFLOW_INBOUND_ADDR, 127.0.0.1:8025).",
)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Server processes sharing the port (SO_REUSEPORT), started and watched "
    "by this one: a process that dies is replaced.",
)
@metrics_listen_option
# Set by the parent of --processes N on its children.
@click.option("--reuse-port", is_flag=True, hidden=True)
@click.pass_obj
def smtpd(
    ctx: Context,
    lmtp: bool,
    listen: tuple[str, int] | None,
    processes: int,
    metrics_listen: tuple[str, int] | None,
    reuse_port: bool,
) -> None:
    """Receive replies and bounces by SMTP (or LMTP) and store them.

    Takes mail only for reply+KEY@ and bounce+KEY@ the mail domain
    (MAILFLOW_MAIL_DOMAIN) whose key an alert email holds, and for the
    service addresses there (MAILFLOW_SERVICE_ADDRESSES); any other
    recipient is refused (550), and recipients past
    MAILFLOW_INBOUND_MAX_RECIPIENTS get 452.  A message is answered 250
    only once it is committed to the database with its processing job;
    if it cannot be stored the answer is 451 and the sender tries again
    later.  Messages over MAILFLOW_INBOUND_MAX_BYTES get 552; messages
    with a bare CR or LF get 550.  Replies are then processed by
    `mailflow worker`.

    Connections past MAILFLOW_INBOUND_MAX_SESSIONS (or
    MAILFLOW_INBOUND_MAX_SESSIONS_PER_CLIENT from one address) hear 421.
    Every hour, ignored messages older than
    MAILFLOW_INBOUND_RETENTION_DAYS are deleted.

    Point the domain's MX at it, or have your MTA deliver to it with
    --lmtp.  Stops on SIGTERM or Ctrl-C, letting messages being stored
    finish.

    With --processes N, N server processes listen on the one port (the
    kernel spreads connections among them); this process starts them,
    replaces one that dies, and stops them all on SIGTERM or Ctrl-C."""
    ctx.require_schema()
    warn_unless_commits_are_durable(ctx.runtime.engine)
    host, port = listen or ctx.settings.inbound_addr
    if processes > 1:
        sys.exit(
            run_server_processes(ctx, host, port, processes, lmtp=lmtp, metrics=metrics_listen)
        )
    serve_inbound(ctx, host, port, lmtp=lmtp, reuse_port=reuse_port, metrics=metrics_listen)


def run_server_processes(
    ctx: Context,
    host: str,
    port: int,
    count: int,
    *,
    lmtp: bool,
    metrics: tuple[str, int] | None,
) -> int:
    try:
        held = reserve_shared_port(host, port)
    except OSError as exc:
        fail(f"cannot listen on {show_addr(host, port)}: {exc.strerror or exc}", code=2)
    with held:
        port = held.getsockname()[1]
        if ctx.runtime.engine.dialect.name == "sqlite":
            # Measured: 2 processes stored 79-97 replies/s where 1 stored
            # 114-194 (bench/inbound.py): SQLite has one write lock, and
            # processes meet on its busy handler's sleeps, not a queue.
            log.warning(
                "on SQLite, server processes take turns on one write lock: "
                "more than one is slower, not faster"
            )
        # The children open their own connections; this one needs none.
        ctx.runtime.close()
        arguments = ["smtpd", "--listen", show_addr(host, port), "--reuse-port"]
        if lmtp:
            arguments.append("--lmtp")
        if log.getEffectiveLevel() <= logging.DEBUG:
            arguments.insert(0, "--verbose")
        children = ChildProcesses(
            "smtpd",
            lambda index: child_argv(
                *arguments, *child_metrics_arguments(ctx.runtime, metrics, index)
            ),
            count,
        )
        log.info("%d inbound server processes on %s", count, show_addr(host, port))
        return children.run()


def serve_inbound(
    ctx: Context,
    host: str,
    port: int,
    *,
    lmtp: bool,
    reuse_port: bool,
    metrics: tuple[str, int] | None,
) -> None:
    """One server process, until SIGTERM or Ctrl-C."""
    # Imported here: only the commands that run the server pay for
    # loading aiosmtpd.
    from mailflow.gateway.smtpd import InboundServer
    from mailflow.workers.key_kinds import REPLY_KEY_KINDS

    settings = ctx.settings
    server = InboundServer(
        ctx.runtime, host, port, key_kinds=REPLY_KEY_KINDS, lmtp=lmtp, reuse_port=reuse_port
    )
    # The inbound server writes to the database only; the broker is the worker's.
    health = metrics_server(ctx.runtime, metrics, broker=False, queue=False)

    def start() -> None:
        try:
            server.start()
        except OSError as exc:
            fail(f"cannot listen on {show_addr(host, port)}: {exc.strerror or exc}", code=2)
        log.info(
            "%s server listening on %s for mail to %s (at most %d bytes a message)",
            "LMTP" if lmtp else "SMTP",
            show_addr(host, server.port),
            settings.mail_domain,
            settings.inbound_max_bytes,
        )
        if health is not None:
            health.start()

    def stop() -> None:
        if health is not None:
            health.stop()
        server.stop()

    run_until_stopped(start, stop)
    log.info("inbound server stopped")
