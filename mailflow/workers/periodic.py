"""Work that falls due with time rather than with a change: each task
works out from the database what is due at ``now`` and does it in its own
transactions, marking what it did in the same transaction, so a pass run
twice, or by two processes at once, does each thing once.  The scheduler
runs a pass every ``MAILFLOW_SCHEDULER_SECONDS``; `mailflow scheduler
--once --at TIME [--dry-run]` runs one by hand.  A capability adds its
task here with one line."""

from __future__ import annotations

import logging
from datetime import datetime

from mailflow.access.expiry import access_requests_due
from mailflow.access.people_review import send_due_reviews
from mailflow.core.runtime import Runtime
from mailflow.core.scheduling import SchedulerPass, Task
from mailflow.deadlines.chasing import chase
from mailflow.reports.digest_scheduling import queue_digests

log = logging.getLogger(__name__)

TASKS: tuple[tuple[str, Task], ...] = (
    ("chasing", chase),  # reminders, overdue, escalations, updates (mailflow/deadlines/)
    ("access requests", access_requests_due),  # reminders and expiry (mailflow/access/)
    ("access review", send_due_reviews),  # administrators' reviews of their people
    ("digests", queue_digests),  # the auditors' scheduled digests (mailflow/reports/)
)


def run_pass(
    runtime: Runtime,
    now: datetime,
    tasks: tuple[tuple[str, Task], ...] | None = None,
    *,
    dry_run: bool = False,
) -> list[str]:
    """Run every task once as at ``now``; what they did (or, in a dry run,
    would do), one line each.  A task that fails is logged and the others
    still run."""
    run = SchedulerPass(runtime, now, dry_run=dry_run)
    done: list[str] = []
    for name, task in TASKS if tasks is None else tasks:
        try:
            done.extend(f"{name}: {line}" for line in task(run))
        except Exception:
            log.exception("periodic task %s failed; it runs again next pass", name)
    return done
