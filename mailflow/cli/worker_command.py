"""`mailflow worker`: the queue worker alone."""

from __future__ import annotations

import logging

import click

from mailflow.cli.context import Context, pass_context
from mailflow.cli.running import run_until_stopped
from mailflow.workers.queue import QueueWorker

log = logging.getLogger("mailflow")


@click.command()
@click.option(
    "--threads", type=click.IntRange(min=1), default=2, show_default=True, help="Worker threads."
)
@pass_context
def worker(ctx: Context, threads: int) -> None:
    """Run the queue worker alone: sends alert emails (and, later, every
    other job).  Uses MAILFLOW_BROKER_URL, or an in-process queue."""
    ctx.require_schema()
    queue_worker = QueueWorker(ctx.runtime, threads=threads)
    where = ctx.settings.smtp_relay.redacted() if ctx.settings.smtp_relay else ctx.settings.maildir
    log.info("worker started: mail goes to %s", where)
    run_until_stopped(queue_worker.start, queue_worker.stop)
