"""A worker killed with SIGKILL in the middle of a fan-out loses nothing:
another worker takes over its deliveries once its short lease has run out
(it was renewing it while it lived), finishes the job, and only a message
that was in flight at the moment of the kill can arrive twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mailflow.alerts.fanout import BATCHES_IN_FLIGHT, CLAIM_PER_CONNECTION
from mailflow.core.models import Delivery, DeliveryState, User
from tests.support.environment import SECRET_KEY
from tests.support.relay import CapturingRelay
from tests.support.seed import issue, seed_crowd
from tests.support.waiting import settled, wait_until

CONNECTIONS = 4
# The shortest lease the setting allows: a killed worker's deliveries are
# taken over this soon after its last renewal.
LEASE_SECONDS = 5


def start_worker(database_url: str, relay_port: int, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "MAILFLOW_DATABASE_URL": database_url,
        "MAILFLOW_SECRET_KEY": SECRET_KEY,
        "MAILFLOW_SMTP_RELAY": f"smtp://127.0.0.1:{relay_port}",
        "MAILFLOW_SMTP_CONNECTIONS": str(CONNECTIONS),
        "MAILFLOW_MAIL_DOMAIN": "alerts.test",
        "MAILFLOW_SEND_LEASE_SECONDS": str(LEASE_SECONDS),
    }
    env.pop("MAILFLOW_BROKER_URL", None)
    with (tmp_path / "worker.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "mailflow", "worker"],
            env=env,
            stdout=log,
            stderr=log,
            cwd=tmp_path,
        )


def sent_emails(session: Session) -> set[str]:
    session.rollback()  # a fresh snapshot
    return set(
        session.scalars(
            select(User.email)
            .join(Delivery, Delivery.user_id == User.id)
            .where(Delivery.state == DeliveryState.SENT)
        )
    )


def held_until(session: Session) -> dict[int, datetime]:
    """Each delivery some sender holds, with when its hold runs out."""
    session.rollback()
    return {
        delivery_id: until
        for delivery_id, until in session.execute(
            select(Delivery.id, Delivery.claimed_until).where(
                Delivery.state == DeliveryState.SENDING
            )
        )
    }


def test_sigkill_mid_fan_out_then_another_worker_sends_everything_once_but_what_was_in_flight(
    session: Session, database_url: str, relay: CapturingRelay, tmp_path: Path
) -> None:
    crowd = seed_crowd(session, organisations=20, per_organisation=10)
    alert_id = issue(session, audience={"organisations": crowd.org_codes}).alert.id
    session.commit()
    # A slow relay, so the kill lands in the middle of the fan-out.
    relay.handler.delay_seconds = 0.03

    worker = start_worker(database_url, relay.port, tmp_path)
    try:
        relay.wait_for(60, timeout=60)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    killed_at = datetime.now(UTC)
    held = held_until(session)
    assert held, "the kill left no delivery held"
    # Held for one short lease at most, not for minutes.
    assert max(held.values()) <= killed_at + timedelta(seconds=LEASE_SECONDS)
    # The relay finishes whatever DATA it had fully received.
    time.sleep(0.3)
    received_before = Counter(r.recipients[0] for r in relay.received)
    recorded_before = sent_emails(session)
    assert 0 < len(received_before) < len(crowd.emails), "the kill did not land mid fan-out"
    in_flight = set(received_before) - recorded_before
    assert recorded_before <= set(received_before)
    # At most the messages a sender keeps in flight can be unrecorded.
    assert len(in_flight) <= BATCHES_IN_FLIGHT * CLAIM_PER_CONNECTION * CONNECTIONS

    relay.handler.delay_seconds = 0.0
    another = start_worker(database_url, relay.port, tmp_path)
    try:
        readers = sessionmaker(session.get_bind())
        wait_until(
            lambda: settled(readers, alert_id), timeout=60, what="the other worker to finish"
        )
    finally:
        another.send_signal(signal.SIGTERM)
        assert another.wait(timeout=30) == 0

    copies = Counter(r.recipients[0] for r in relay.received)
    assert set(copies) == set(crowd.emails), "someone got no email"
    twice = {address for address, n in copies.items() if n > 1}
    assert max(copies.values()) <= 2
    # Only a message the relay had taken but the worker had not yet recorded
    # as sent can have gone out again; nothing recorded as sent did.
    assert twice <= in_flight
    assert not twice & recorded_before
    assert sent_emails(session) == set(crowd.emails)
    # The other worker sent what the killed one held only once its hold had
    # run out (its first run found them held and came back then).
    session.rollback()
    sent_at = dict(
        session.execute(
            select(Delivery.id, Delivery.sent_at).where(Delivery.id.in_(list(held)))
        ).all()
    )
    assert all(sent_at[d] is not None and sent_at[d] >= until for d, until in held.items())
