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
# With emails waiting and none sent or failed for this long, something is
# wrong (no worker running, or its job given up): say so once, and again
# after each change that is followed by as long a wait.
STALL_SECONDS = 60.0
# Looked up when called, so a test can run the clock on.
CLOCK: Callable[[], float] = time.monotonic
WAIT: Callable[[float], None] = time.sleep


def progress_line(reference: str, progress: FanoutProgress) -> str:
    line = f"{reference}: {progress.sent}/{progress.total} sent"
    if progress.failed:
        line += f", {progress.failed} failed"
    return line + (f", {progress.waiting} waiting" if progress.waiting else ", done")


def stalled_line(reference: str, seconds: float) -> str:
    return (
        f"{reference}: nothing sent or failed for {seconds:.0f} s: is a worker running "
        f"(`mailflow worker`)? `mailflow alert show {reference}` shows each email's state"
    )


def watch_fanout(ctx: Context, reference: str, every: float = WATCH_SECONDS) -> None:
    """Print the alert's progress every ``every`` seconds (only when it
    has changed, and always the last) until nothing is waiting; on
    standard error, a word when nothing has moved for STALL_SECONDS."""
    ctx.require_schema()
    last = None
    moved_at, warned = CLOCK(), False
    while True:
        # A reader's session each time: on SQLite it takes no write lock
        # from the workers sending.
        with reported_errors(), ctx.runtime.readers() as session:
            alert = get_alert(session, reference)
            progress = fanout_progress(session, alert_id=alert.id)
            name = alert.reference
        if progress != last or progress.done:
            click.echo(progress_line(name, progress))
            moved_at, warned = CLOCK(), False
        if progress.done:
            return
        if not warned and CLOCK() - moved_at >= STALL_SECONDS:
            click.echo(stalled_line(name, CLOCK() - moved_at), err=True)
            warned = True
        last = progress
        WAIT(every)
