"""`mailflow alert show REFERENCE --watch`: how far the alert's emails
have gone, a line every couple of seconds, until none is waiting (each
sent or failed), for a publisher following a fan-out of thousands."""

from __future__ import annotations

import time
from collections.abc import Callable

import click

from mailflow.alerts.issuing import get_alert
from mailflow.alerts.progress import FanoutProgress, fanout_progress
from mailflow.cli.context import Context, reported_errors

WATCH_SECONDS = 2.0


def progress_line(reference: str, progress: FanoutProgress) -> str:
    line = f"{reference}: {progress.sent}/{progress.total} sent"
    if progress.failed:
        line += f", {progress.failed} failed"
    return line + (f", {progress.waiting} waiting" if progress.waiting else ", done")


def watch_fanout(
    ctx: Context,
    reference: str,
    every: float = WATCH_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Print the alert's progress every ``every`` seconds (only when it
    has changed, and always the last) until nothing is waiting."""
    ctx.require_schema()
    last = None
    while True:
        # A reader's session each time: on SQLite it takes no write lock
        # from the workers sending.
        with reported_errors(), ctx.runtime.readers() as session:
            alert = get_alert(session, reference)
            progress = fanout_progress(session, alert_id=alert.id)
            name = alert.reference
        if progress != last or progress.done:
            click.echo(progress_line(name, progress))
        if progress.done:
            return
        last = progress
        sleep(every)
