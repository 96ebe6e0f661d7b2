"""A person replies to an alert email over SMTP and gets a link to confirm
their answer: the whole path, with the real inbound server, worker and
relay."""

from __future__ import annotations

import re
import smtplib
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.config import Settings
from mailflow.core.links import CONFIRM_LINK
from mailflow.core.models import Delivery, DeliveryState, InboundMessage, PendingAnswer
from mailflow.core.runtime import Runtime
from mailflow.gateway.smtpd import InboundServer
from mailflow.workers.key_kinds import REPLY_KEY_KINDS
from mailflow.workers.queue import QueueWorker
from tests.support.mail import delivery_status_notification, reply
from tests.support.relay import CapturingRelay
from tests.support.seed import issue, seed_people
from tests.support.waiting import wait_until


@pytest.fixture
def running(settings: Settings, session: Session) -> Iterator[tuple[Runtime, InboundServer]]:
    seed_people(session)
    issue(session)
    session.commit()
    runtime = Runtime(settings)
    server = InboundServer(runtime, "127.0.0.1", 0, key_kinds=REPLY_KEY_KINDS)
    worker = QueueWorker(runtime, poll_seconds=0.05)
    server.start()
    worker.start()
    try:
        yield runtime, server
    finally:
        worker.stop()
        server.stop()
        runtime.close()


def test_a_reply_over_smtp_comes_back_as_a_confirm_link(
    running: tuple[Runtime, InboundServer],
    relay: CapturingRelay,
    session: Session,
    settings: Settings,
) -> None:
    _, server = running
    alert_emails = relay.wait_for(6)
    to_ann = next(r for r in alert_emails if r.recipients == ["ann@riverside.example"])
    reply_address = str(to_ann.message["Reply-To"])

    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.sendmail(
            "ann@riverside.example",
            [reply_address],
            reply("Ann Lee <ann@riverside.example>", "RXA: complete\n\n> RXA: not applicable"),
        )

    received = relay.wait_for(7)
    confirm = received[-1]
    assert confirm.recipients == ["ann@riverside.example"]
    text = confirm.message.get_body(("plain",)).get_content()
    [link] = re.findall(r"https://mailflow\.test/c/\S+", text)
    payload = CONFIRM_LINK.tokens(settings).verify(link.rsplit("/", 1)[1])
    session.rollback()
    answers = session.scalars(select(PendingAnswer)).all()
    assert [(a.status, a.confirmation_id) for a in answers] == [("complete", payload["c"])]


def test_a_bounce_and_an_out_of_office_over_smtp_get_no_answer(
    running: tuple[Runtime, InboundServer],
    relay: CapturingRelay,
    session: Session,
) -> None:
    _, server = running
    relay.wait_for(6)
    raj = session.scalars(
        select(Delivery).join(Delivery.user).where(Delivery.user.has(email="raj@riverside.example"))
    ).one()
    bounce_to = f"bounce+{raj.bounce_key}@alerts.test"
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.sendmail("<>", [bounce_to], delivery_status_notification(bounce_to))
        client.sendmail(
            "raj@riverside.example",
            [f"reply+{raj.reply_key}@alerts.test"],
            reply(
                "raj@riverside.example",
                "I am away until Monday.",
                headers={"Auto-Submitted": "auto-replied"},
            ),
        )

    def processed() -> bool:
        session.rollback()
        states = [m.state for m in session.scalars(select(InboundMessage))]
        return len(states) == 2 and "received" not in states

    wait_until(processed, timeout=20, what="both messages to be processed")
    assert session.get_one(Delivery, raj.id).state == DeliveryState.BOUNCED
    assert len(relay.received) == 6  # nothing sent back
