"""Work that falls due with time rather than with a change: each task
works out from the database what is due at ``now`` and does it in its own
transaction, marking what it did in the same transaction, so a pass run
twice, or by two processes at once, does each thing once.  The queue
worker runs a pass every minute; `mailflow scheduler --once --at TIME`
runs one by hand.  A capability adds its task here with one line."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from mailflow.access.expiry import access_requests_due
from mailflow.access.people_review import send_due_reviews
from mailflow.core.runtime import Runtime

log = logging.getLogger(__name__)

# A task returns one line for each thing it did (for the command's output
# and the log); it must not raise for one bad row and leave the others.
Task = Callable[[Runtime, datetime], list[str]]

TASKS: tuple[tuple[str, Task], ...] = (
    ("access requests", access_requests_due),  # reminders and expiry (mailflow/access/)
    ("access review", send_due_reviews),  # administrators' reviews of their people
)


def run_pass(
    runtime: Runtime, now: datetime, tasks: tuple[tuple[str, Task], ...] | None = None
) -> list[str]:
    """Run every task once as at ``now``; what they did, one line each.  A
    task that fails is logged and the others still run."""
    done: list[str] = []
    for name, task in TASKS if tasks is None else tasks:
        try:
            done.extend(f"{name}: {line}" for line in task(runtime, now))
        except Exception:
            log.exception("periodic task %s failed; it runs again next pass", name)
    return done
