"""A sender holds the deliveries it is sending for a short lease, and
renews it while it lives: a slow relay does not let a second sender take
(and send again) what the first still has in flight, and the second is
told to come back when the first one's hold would run out."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from mailflow.alerts.deliveries import renew_claims
from mailflow.alerts.fanout import deliver_alert
from mailflow.config import parse_relay
from mailflow.core.models import Delivery, DeliveryState
from mailflow.core.runtime import Runtime
from tests.support.relay import CapturingRelay
from tests.support.seed import issue, seed_crowd
from tests.support.waiting import states, wait_until

LEASE_SECONDS = 1.0


def earliest_hold(session: Session, alert_id: int) -> datetime | None:
    session.rollback()  # a fresh snapshot
    return session.scalar(
        select(func.min(Delivery.claimed_until)).where(
            Delivery.alert_id == alert_id, Delivery.state == DeliveryState.SENDING
        )
    )


def test_a_sender_waiting_on_a_slow_relay_keeps_its_deliveries_past_the_first_lease(
    session: Session,
    database_url: str,
    relay: CapturingRelay,
    settings_for: Any,
) -> None:
    crowd = seed_crowd(session, organisations=1, per_organisation=4)
    alert_id = issue(session, audience={"organisations": crowd.org_codes}).alert.id
    session.commit()
    # Each message takes the relay three leases: without a heartbeat, the
    # first sender's hold would run out long before the relay answers.
    relay.handler.delay_seconds = 3 * LEASE_SECONDS
    settings = settings_for(
        database_url,
        smtp_relay=parse_relay(f"smtp://127.0.0.1:{relay.port}"),
        smtp_connections=4,
        send_lease_seconds=LEASE_SECONDS,
    )
    first, second = Runtime(settings), Runtime(settings)
    try:
        with ThreadPoolExecutor(1) as pool:
            sending = pool.submit(deliver_alert, first, alert_id)
            wait_until(
                lambda: states(first.sessions, alert_id)[DeliveryState.SENDING] == 4,
                timeout=20,
                what="the first sender to claim every delivery",
            )
            first_hold = earliest_hold(session, alert_id)
            assert first_hold is not None
            wait_until(
                lambda: datetime.now(UTC) > first_hold + timedelta(seconds=LEASE_SECONDS / 2),
                timeout=10,
                what="the first lease to run out",
            )
            # Past the lease it was claimed with, every delivery is still
            # held, so a second sender finds nothing to take...
            come_back_at = deliver_alert(second, alert_id)
            assert come_back_at is not None
            assert come_back_at > first_hold
            assert come_back_at <= datetime.now(UTC) + timedelta(seconds=LEASE_SECONDS)
            assert sending.result(timeout=30) is None
        assert states(first.sessions, alert_id) == Counter({DeliveryState.SENT.value: 4})
    finally:
        first.close()
        second.close()

    # ... and every recipient got exactly one email, from the first.
    copies = Counter(r.recipients[0] for r in relay.received)
    assert copies == Counter(crowd.emails)


def test_a_renewal_extends_only_holds_still_running_on_deliveries_still_sending(
    session: Session, database_url: str
) -> None:
    crowd = seed_crowd(session, organisations=1, per_organisation=4)
    alert_id = issue(session, audience={"organisations": crowd.org_codes}).alert.id
    session.flush()
    now = datetime.now(UTC)
    running, ran_out, recorded, queued = session.scalars(
        select(Delivery.id).where(Delivery.alert_id == alert_id).order_by(Delivery.id)
    ).all()
    for ids, values in (
        ([running], {"state": DeliveryState.SENDING, "claimed_until": now + timedelta(seconds=5)}),
        ([ran_out], {"state": DeliveryState.SENDING, "claimed_until": now - timedelta(seconds=1)}),
        ([recorded], {"state": DeliveryState.SENT, "claimed_until": None}),
    ):
        session.execute(update(Delivery).where(Delivery.id.in_(ids)).values(**values))
    session.commit()

    renewed = renew_claims(
        session, [running, ran_out, recorded, queued], now=now, hold=timedelta(seconds=20)
    )
    session.commit()

    assert renewed == 1
    holds = {
        delivery_id: until
        for delivery_id, until in session.execute(
            select(Delivery.id, Delivery.claimed_until).where(Delivery.alert_id == alert_id)
        )
    }
    assert holds[running] == now + timedelta(seconds=20)
    # Another sender may already have taken one whose hold ran out.
    assert holds[ran_out] == now - timedelta(seconds=1)
    assert holds[recorded] is None
    assert holds[queued] is None
