"""`mailflow scheduler`: run what falls due with time (expired access
requests, reminders, reviews), as the queue worker does every minute."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import click

from mailflow.cli.context import Context, fail, pass_context
from mailflow.workers.periodic import run_pass


def parse_time(text: str, zone_name: str) -> datetime:
    """An ISO 8601 time; without an offset, in MAILFLOW_TIMEZONE."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        fail(f"--at: {text!r} is not an ISO 8601 time (e.g. 2026-12-01T09:00 or ...+00:00)")
    if when.tzinfo is None:
        when = when.replace(tzinfo=ZoneInfo(zone_name))
    return when.astimezone(UTC)


@click.command()
@click.option("--once", is_flag=True, required=True, help="Run one pass and stop.")
@click.option("--at", "at", metavar="TIME", help="Run the pass as if at TIME (ISO 8601).")
@pass_context
def scheduler(ctx: Context, once: bool, at: str | None) -> None:
    """Run one pass of the work that falls due with time and print what it
    did.  The queue worker (and `mailflow serve`) runs a pass every minute;
    --at catches up or previews as at another time."""
    ctx.require_schema()
    now = parse_time(at, ctx.settings.timezone) if at else ctx.runtime.clock()
    done = run_pass(ctx.runtime, now)
    for line in done:
        click.echo(line)
    if not done:
        click.echo("nothing was due")
