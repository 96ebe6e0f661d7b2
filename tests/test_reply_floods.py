"""Someone sends reply after genuine reply (a broken mail client in a loop,
or an attacker who got past nothing but can make a person's client send):
the person gets a bounded number of "confirm your answer" emails, and only
the newest link for the same organisations works."""

from __future__ import annotations

import dataclasses
import re
import smtplib
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import make_msgid

import pytest
from sqlalchemy import select

from mailflow.core.models import Confirmation, Delivery, InboundMessage, OutgoingEmail, User
from mailflow.core.runtime import Runtime
from mailflow.gateway.smtpd import InboundServer
from mailflow.workers.key_kinds import REPLY_KEY_KINDS
from mailflow.workers.queue import QueueWorker
from tests.support.pages import Web
from tests.support.relay import CapturingRelay
from tests.support.waiting import wait_until

LIMIT = 3


@pytest.fixture
def inbound(web: Web, relay: CapturingRelay) -> Iterator[tuple[Web, InboundServer]]:
    limited = dataclasses.replace(
        web.settings, confirm_emails_per_hour=LIMIT, error_replies_per_hour=LIMIT
    )
    runtime = Runtime(limited)
    server = InboundServer(runtime, "127.0.0.1", 0, key_kinds=REPLY_KEY_KINDS)
    worker = QueueWorker(runtime, poll_seconds=0.05, threads=4)
    server.start()
    worker.start()
    relay.wait_for(6)  # the alert emails
    try:
        yield web, server
    finally:
        worker.stop()
        server.stop()
        runtime.close()


def send_replies(web: Web, server: InboundServer, email: str, bodies: list[str]) -> None:
    session = web.db()
    key = session.scalars(
        select(Delivery.reply_key)
        .join(User, User.id == Delivery.user_id)
        .where(User.email == email)
    ).one()
    to = f"reply+{key}@alerts.test"
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        for body in bodies:
            message = EmailMessage(policy=SMTP)
            message["From"], message["To"], message["Subject"] = email, to, "Re: CC-4720"
            message["Message-ID"] = make_msgid(domain="client.example")
            message.set_content(body)
            client.sendmail(email, [to], bytes(message))

    def all_processed() -> bool:
        states = list(web.db().scalars(select(InboundMessage.state)))
        return len(states) >= len(bodies) and "received" not in states

    wait_until(all_processed, timeout=30, what="the replies to be processed")


def confirm_links(relay: CapturingRelay, email: str) -> list[str]:
    links = []
    for received in relay.received:
        if received.recipients == [email] and "confirm" in str(received.message["Subject"]).lower():
            text = received.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
            links += re.findall(r"https://mailflow\.test(/c/\S+)", text)
    return links


def test_a_flood_of_genuine_replies_sends_a_bounded_number_of_links(
    inbound: tuple[Web, InboundServer], relay: CapturingRelay
) -> None:
    web, server = inbound

    send_replies(web, server, "raj@riverside.example", ["RXA: complete"] * (LIMIT + 5))

    wait_until(
        lambda: len(confirm_links(relay, "raj@riverside.example")) >= LIMIT,
        timeout=20,
        what="the confirm emails",
    )
    assert len(web.db().scalars(select(Confirmation)).all()) == LIMIT
    outcomes = web.db().scalars(select(InboundMessage.outcome)).all()
    assert sum("too many replies this hour" in (o or "") for o in outcomes) == 5
    assert len(confirm_links(relay, "raj@riverside.example")) == LIMIT


def test_only_the_newest_link_for_the_same_organisations_works(
    inbound: tuple[Web, InboundServer], relay: CapturingRelay
) -> None:
    web, server = inbound

    send_replies(web, server, "raj@riverside.example", ["RXA: in progress"])
    send_replies(web, server, "raj@riverside.example", ["RXA: complete"])
    wait_until(
        lambda: len(confirm_links(relay, "raj@riverside.example")) == 2,
        timeout=20,
        what="two confirm emails",
    )
    older, newer = confirm_links(relay, "raj@riverside.example")

    replaced = web.fresh_client().get(older)
    current = web.fresh_client().get(newer)

    assert replaced.status_code == 410 and "replaced by the one in your newest" in replaced.text
    assert current.status_code == 200 and "Complete" in current.text


def test_a_newer_reply_for_another_organisation_leaves_the_older_link_working(
    inbound: tuple[Web, InboundServer], relay: CapturingRelay
) -> None:
    web, server = inbound

    send_replies(web, server, "li@itservices.example", ["RXB: complete"])
    send_replies(web, server, "li@itservices.example", ["RXC: complete"])
    wait_until(
        lambda: len(confirm_links(relay, "li@itservices.example")) == 2,
        timeout=20,
        what="two confirm emails",
    )

    for link in confirm_links(relay, "li@itservices.example"):
        assert web.fresh_client().get(link).status_code == 200


def test_a_flood_of_unreadable_replies_gets_a_bounded_number_of_not_recorded_emails(
    inbound: tuple[Web, InboundServer], relay: CapturingRelay
) -> None:
    web, server = inbound

    send_replies(web, server, "raj@riverside.example", ["banana"] * (LIMIT + 5))

    problems = (
        web.db().scalars(select(OutgoingEmail).where(OutgoingEmail.kind == "reply_problem")).all()
    )
    assert len(problems) == LIMIT
    outcomes = web.db().scalars(select(InboundMessage.outcome)).all()
    assert sum("limit of error replies reached" in (o or "") for o in outcomes) == 5
