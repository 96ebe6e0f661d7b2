"""Sending an alert's emails: claim due deliveries, compose each, hand it to
the transport, and record every outcome the moment it is known."""

from __future__ import annotations

import concurrent.futures
import logging
import time
from datetime import datetime, timedelta

from sqlalchemy import select

from mailflow.domain.deliveries import (
    claim_due_deliveries,
    next_due_time,
    record_deferred,
    record_failed,
    record_sent,
)
from mailflow.domain.models import Alert, AlertAudience, Delivery, Organisation
from mailflow.mail.alert_email import AlertEmailComposer
from mailflow.mail.transport import Outcome, SendResult
from mailflow.workers.runtime import Runtime

log = logging.getLogger(__name__)

# One run of the job sends for at most this long, then leaves the rest to a
# fresh run, so a large alert never trips the queue's time limit and other
# jobs get a turn.
TIME_SLICE_SECONDS = 60.0


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
    hold = timedelta(seconds=settings.send_lease_seconds)
    # Keep the relay's connections busy: claim a connection's worth of
    # deliveries while up to two connections' worth are still in flight.
    claim_size = settings.smtp_connections
    window = 2 * settings.smtp_connections
    in_flight: dict[concurrent.futures.Future[SendResult], Delivery] = {}
    stop_at = time.monotonic() + TIME_SLICE_SECONDS
    more = True

    while True:
        claiming = more and time.monotonic() < stop_at
        if claiming and len(in_flight) < window:
            with runtime.sessions.begin() as session:
                batch = claim_due_deliveries(
                    session, alert_id=alert_id, now=runtime.clock(), hold=hold, limit=claim_size
                )
            more = bool(batch)
            for delivery in batch:
                try:
                    message = composer.compose(delivery)
                except Exception as exc:  # a fault of ours, not the relay's: say so and go on
                    log.exception("could not compose delivery %s", delivery.id)
                    with runtime.sessions.begin() as session:
                        record_failed(
                            session,
                            delivery.id,
                            now=runtime.clock(),
                            error=f"could not compose the email: {exc!r}",
                        )
                    continue
                in_flight[runtime.transport.submit(message)] = delivery
            continue
        if not in_flight:
            break
        done, _ = concurrent.futures.wait(
            in_flight, timeout=1.0, return_when=concurrent.futures.FIRST_COMPLETED
        )
        for future in done:
            _record(runtime, in_flight.pop(future), future.result())

    with runtime.sessions() as session:
        return next_due_time(session, alert_id=alert_id)


def _record(runtime: Runtime, delivery: Delivery, result: SendResult) -> None:
    settings = runtime.settings
    now = runtime.clock()
    with runtime.sessions.begin() as session:
        if result.outcome is Outcome.SENT:
            record_sent(session, delivery.id, now=now, reply=result.reply)
        elif result.outcome is Outcome.PERMANENT:
            record_failed(session, delivery.id, now=now, error=result.reply)
        else:
            state = record_deferred(
                session,
                delivery,
                now=now,
                error=result.reply,
                retry_base_seconds=settings.send_retry_base_seconds,
                max_attempts=settings.send_max_attempts,
            )
            log.info("delivery %s %s: %s", delivery.id, state, result.reply)
