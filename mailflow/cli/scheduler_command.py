"""`mailflow scheduler`: the edge that runs what falls due with time
(reminders, escalations, update chasers, expired access requests,
reviews) every MAILFLOW_SCHEDULER_SECONDS, or one pass by hand."""

from __future__ import annotations

import logging
import threading
from datetime import datetime

import click

from mailflow.cli.context import Context, fail, parse_time, pass_context
from mailflow.cli.metrics_server import metrics_listen_option, metrics_server
from mailflow.cli.running import run_until_stopped
from mailflow.workers.periodic import run_pass
from mailflow.workers.scheduler import Scheduler, leadership_for

log = logging.getLogger("mailflow")


@click.command()
@click.option("--once", is_flag=True, help="Run one pass and stop.")
@click.option("--at", "at", metavar="TIME", help="With --once: as if at TIME (ISO 8601).")
@click.option(
    "--dry-run", is_flag=True, help="With --once: print what it would do, and change nothing."
)
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=120.0,
    show_default=True,
    metavar="SECONDS",
    help="With --once: how long to wait for the scheduler that leads to let go.",
)
@metrics_listen_option
@pass_context
def scheduler(
    ctx: Context,
    once: bool,
    at: str | None,
    dry_run: bool,
    wait: float,
    metrics_listen: tuple[str, int] | None,
) -> None:
    """Run the scheduler: a pass of the work that falls due with time
    every MAILFLOW_SCHEDULER_SECONDS, until SIGTERM or Ctrl-C.  On
    PostgreSQL one scheduler leads at a time; the others wait.

    With --once, run one pass and print what it did; --at catches up or
    previews as at another time, --dry-run says what it would do."""
    if not once and (at is not None or dry_run):
        fail("--at and --dry-run go with --once", code=2)
    ctx.require_schema()
    if once:
        now = parse_time(at, ctx.settings.timezone) if at else ctx.runtime.clock()
        _run_once(ctx, now, dry_run=dry_run, wait=wait)
        return
    loop = Scheduler(ctx.runtime)
    # A pass writes its work to the outbox table; the broker is the worker's.
    health = metrics_server(ctx.runtime, metrics_listen, broker=False, queue=False)
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,), name="scheduler")
    log.info("scheduler started: a pass every %s seconds", loop.interval)

    def start_loop() -> None:
        thread.start()
        if health is not None:
            health.start()

    def stop_loop() -> None:
        if health is not None:
            health.stop()
        stop.set()
        thread.join()

    run_until_stopped(start_loop, stop_loop)


def _run_once(ctx: Context, now: datetime, *, dry_run: bool, wait: float) -> None:
    leadership = leadership_for(ctx.runtime)
    try:
        if not leadership.lead(threading.Event(), timeout=wait):
            fail(f"another scheduler leads and did not let go within {wait:g} seconds", code=2)
        done = run_pass(ctx.runtime, now, dry_run=dry_run)
    finally:
        leadership.release()
    for line in done:
        click.echo(f"would: {line}" if dry_run else line)
    if not done:
        click.echo("nothing would be done" if dry_run else "nothing was due")
