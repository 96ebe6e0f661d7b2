"""`mailflow worker`: the queue worker alone, as one process or several."""

from __future__ import annotations

import logging
import sys

import click

from mailflow.cli.context import Context, pass_context
from mailflow.cli.metrics_server import (
    child_metrics_arguments,
    metrics_listen_option,
    metrics_server,
)
from mailflow.cli.processes import ChildProcesses, child_argv
from mailflow.cli.running import run_until_stopped
from mailflow.core.jobs import forget_enqueued
from mailflow.workers.queue import QueueWorker

log = logging.getLogger("mailflow")


@click.command()
@click.option(
    "--threads", type=click.IntRange(min=1), default=2, show_default=True, help="Worker threads."
)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes, each with --threads threads.",
)
# Set by the parent of --processes N on its children: the parent has
# already let go of what an in-process queue held before, and a child
# must not let go of what its siblings hold now.
@click.option("--child", is_flag=True, hidden=True)
@metrics_listen_option
@pass_context
def worker(
    ctx: Context,
    threads: int,
    processes: int,
    child: bool,
    metrics_listen: tuple[str, int] | None,
) -> None:
    """Run the queue worker alone: sends every email and runs every other
    job.  Uses MAILFLOW_BROKER_URL, or an in-process queue (each process
    then dispatches its own share of the jobs from the database).

    With --processes N, N worker processes run; this process starts them,
    replaces one that dies, and stops them all on SIGTERM or Ctrl-C.  A
    job held by a process that died is taken up by another once its lease
    (MAILFLOW_SEND_LEASE_SECONDS) runs out."""
    ctx.require_schema()
    if processes > 1:
        sys.exit(run_worker_processes(ctx, threads, processes, metrics_listen))
    queue_worker = QueueWorker(ctx.runtime, threads=threads, forget_on_start=not child)
    health = metrics_server(ctx.runtime, metrics_listen, broker=True, queue=True)
    where = ctx.settings.smtp_relay.redacted() if ctx.settings.smtp_relay else ctx.settings.maildir
    log.info("worker started: mail goes to %s", where)

    def start() -> None:
        queue_worker.start()
        if health is not None:
            health.start()

    def stop() -> None:
        if health is not None:
            health.stop()
        queue_worker.stop()

    run_until_stopped(start, stop)


def run_worker_processes(
    ctx: Context, threads: int, count: int, metrics: tuple[str, int] | None
) -> int:
    if ctx.settings.broker_url is None:
        # Whatever an in-process queue held before this start is gone.
        with ctx.runtime.sessions.begin() as session:
            forget_enqueued(session, now=ctx.runtime.clock())
    # The children open their own connections; this one needs none.
    ctx.runtime.close()
    arguments = ["worker", "--threads", str(threads), "--child"]
    if log.getEffectiveLevel() <= logging.DEBUG:
        arguments.insert(0, "--verbose")
    children = ChildProcesses(
        "worker",
        lambda index: child_argv(*arguments, *child_metrics_arguments(ctx.runtime, metrics, index)),
        count,
    )
    return children.run()
