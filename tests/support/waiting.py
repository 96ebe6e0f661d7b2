"""Waiting for the queue worker to finish an alert's emails."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from mailflow.alerts.deliveries import count_by_state
from mailflow.core.models import DeliveryState
from mailflow.core.runtime import Runtime
from mailflow.workers.queue import QueueWorker

END_STATES = {DeliveryState.SENT, DeliveryState.FAILED, DeliveryState.BOUNCED}


def states(sessions: sessionmaker[Session], alert_id: int) -> Counter[str]:
    with sessions() as session:
        return count_by_state(session, alert_id=alert_id)


def wait_until(check: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def settled(sessions: sessionmaker[Session], alert_id: int) -> bool:
    counts = states(sessions, alert_id)
    return sum(counts.values()) > 0 and set(counts) <= {str(s) for s in END_STATES}


def run_worker_until_settled(runtime: Runtime, alert_id: int, *, timeout: float = 30.0) -> None:
    """Run the real queue worker (in-process queue) until every delivery of
    the alert has reached an end state."""
    worker = QueueWorker(runtime, poll_seconds=0.05)
    worker.start()
    try:
        wait_until(
            lambda: settled(runtime.sessions, alert_id),
            timeout=timeout,
            what=f"deliveries of alert {alert_id} to settle: {states(runtime.sessions, alert_id)}",
        )
    finally:
        worker.stop()
