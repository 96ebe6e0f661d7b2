"""Sending an alert's emails: claim due deliveries, compose each, hand it to
the transport, and record every outcome the moment it is known."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.alerts.alert_email import AlertEmailComposer
from mailflow.alerts.deliveries import (
    ClaimedDelivery,
    claim_due_deliveries,
    next_due_time,
    record_outcomes,
    renew_claims,
)
from mailflow.alerts.progress import ProgressPace, fanout_progress
from mailflow.core import events
from mailflow.core.leases import Heartbeat
from mailflow.core.models import Alert, AlertAudience, Organisation
from mailflow.core.runtime import Runtime
from mailflow.core.sending import Outcome, SendPolicy, SendResult

log = logging.getLogger(__name__)

# One run of the job sends for at most this long, then leaves the rest to a
# fresh run, so a large alert never trips the queue's time limit and other
# jobs get a turn.
TIME_SLICE_SECONDS = 60.0
CLAIM_PER_CONNECTION = 8
BATCHES_IN_FLIGHT = 3

Batch = list[tuple[asyncio.Task[SendResult], ClaimedDelivery]]


def deliver_alert(runtime: Runtime, alert_id: int) -> datetime | None:
    """Send every due delivery of the alert.  Returns when the job should
    run again (a retry is due later, or the time slice ran out), or None
    when every delivery has reached an end state."""
    settings = runtime.settings
    with runtime.sessions() as session:
        alert = session.get(Alert, alert_id)
        if alert is None:
            log.error("deliver_alert: no alert %s", alert_id)
            return None
        audience = {
            org.id: org
            for org in session.scalars(
                select(Organisation)
                .join(AlertAudience, AlertAudience.organisation_id == Organisation.id)
                .where(AlertAudience.alert_id == alert_id)
            )
        }
    composer = AlertEmailComposer(alert, audience, settings, runtime.clock())
    return runtime.transport.run(_fan_out(runtime, composer, alert_id))


async def _fan_out(
    runtime: Runtime, composer: AlertEmailComposer, alert_id: int
) -> datetime | None:
    """Runs on the transport's event loop.  The database calls block the
    loop for a moment each; that costs less than handing every outcome
    between threads."""
    settings = runtime.settings
    hold = timedelta(seconds=settings.send_lease_seconds)
    heartbeat = Heartbeat(settings.send_lease_seconds)
    # Keep every relay connection busy: while one batch goes out, the next
    # is being sent too.  When the oldest batch is done, its outcomes are
    # recorded and the next batch claimed in one commit.
    claim_size = CLAIM_PER_CONNECTION * settings.smtp_connections
    batches: deque[Batch] = deque()
    finished: list[tuple[ClaimedDelivery, SendResult]] = []
    stop_at = time.monotonic() + TIME_SLICE_SECONDS
    pace = ProgressPace(runtime.clock(), timedelta(seconds=settings.progress_seconds))
    more = True

    while True:
        claiming = more and len(batches) < BATCHES_IN_FLIGHT and time.monotonic() < stop_at
        if claiming or finished:
            now = runtime.clock()
            with runtime.sessions.begin() as session:
                _record(session, runtime.send_policy, finished, now)
                if finished and pace.due(now):
                    _log_progress(session, alert_id)
                finished = []
                claimed = (
                    claim_due_deliveries(
                        session, alert_id=alert_id, now=now, hold=hold, limit=claim_size
                    )
                    if claiming
                    else []
                )
            if claiming:
                more = bool(claimed)
            if claimed:
                send = runtime.transport.send
                batches.append(
                    [
                        (asyncio.ensure_future(send(partial(composer.compose, d))), d)
                        for d in claimed
                    ]
                )
            continue
        if not batches:
            break
        # A message the relay has taken but that is not yet recorded is what
        # a crash at this moment could send twice: at most these batches.
        await _wait_renewing(runtime, batches, heartbeat, hold)
        oldest = batches.popleft()
        finished = [(delivery, _outcome(task)) for task, delivery in oldest]

    with runtime.sessions() as session:
        # Where this run leaves the alert, whenever the last line was.
        _log_progress(session, alert_id)
        return next_due_time(session, alert_id=alert_id)


def _log_progress(session: Session, alert_id: int) -> None:
    progress = fanout_progress(session, alert_id=alert_id)
    events.fanout_progress(
        alert_id,
        sent=progress.sent,
        failed=progress.failed,
        waiting=progress.waiting,
        total=progress.total,
    )


async def _wait_renewing(
    runtime: Runtime, batches: deque[Batch], heartbeat: Heartbeat, hold: timedelta
) -> None:
    """Wait for the oldest batch to be sent, renewing the hold on every
    delivery in flight whenever the heartbeat is due, however slow the
    relay: another sender takes them only if this one has died."""
    pending = {task for task, _ in batches[0]}
    while pending:
        if heartbeat.due():
            in_flight = [delivery.id for batch in batches for _, delivery in batch]
            now = runtime.clock()
            try:
                with runtime.sessions.begin() as session:
                    renewed = renew_claims(session, in_flight, now=now, hold=hold)
            except Exception:
                # The sends go on, and their outcomes must still be
                # recorded: a missed renewal only risks a second sender
                # once the hold runs out; giving up here would make one.
                log.exception("alert fan-out: renewing the hold failed; trying again")
                renewed = len(in_flight)
            heartbeat.beat()
            if renewed < len(in_flight):
                # Their hold ran out before this renewal (the process was
                # paused, or the database slow): another sender may send
                # them too.
                log.warning(
                    "alert fan-out: the hold on %d of %d deliveries in flight ran out",
                    len(in_flight) - renewed,
                    len(in_flight),
                )
        _, pending = await asyncio.wait(pending, timeout=heartbeat.seconds_left())


def _outcome(task: asyncio.Task[SendResult]) -> SendResult:
    try:
        return task.result()
    except Exception as exc:
        # Composing failed: a fault of ours, which no retry will mend.
        log.error("could not compose an alert email", exc_info=exc)
        return SendResult(Outcome.PERMANENT, f"could not compose the email: {exc!r}")


def _record(
    session: Session,
    policy: SendPolicy,
    outcomes: list[tuple[ClaimedDelivery, SendResult]],
    now: datetime,
) -> None:
    states = record_outcomes(session, outcomes, now=now, policy=policy)
    for (delivery, result), state in zip(outcomes, states, strict=True):
        if state is None:
            continue  # another sender has it: its line is that sender's
        events.email_outcome(
            session,
            "delivery",
            delivery.id,
            delivery.recipient_email,
            result,
            state,
            user_id=delivery.user_id,
            attempts=delivery.attempts,
        )
