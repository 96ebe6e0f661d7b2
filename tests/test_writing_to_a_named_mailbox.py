"""Mail to one of our named mailboxes (access@, people@): it reaches the
capability that reads it only after the checks every message passes, with
the person its strict From names (or none, for a stranger), and the
inbound server takes it even when the operator's list of service
addresses leaves the name out."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from mailflow.answers.alert_reply_key import DeliveryReplies
from mailflow.config import Settings, parse_relay
from mailflow.core.models import InboundState, User
from mailflow.core.runtime import Runtime
from mailflow.gateway.context import MailboxContext, Outcome, processed
from mailflow.gateway.reading import InboundReading
from mailflow.gateway.routing import KeyKinds
from mailflow.gateway.smtpd import InboundServer
from tests.support.mail import MAIL_DOMAIN, a_reply, delivery_report, receive
from tests.support.relay import CapturingRelay
from tests.support.seed import seed_people

ANN = "ann@riverside.example"
ACCESS = f"access@{MAIL_DOMAIN}"


class AccessMailbox:
    """A stand-in for the capability reading access@, noting what it saw."""

    name = "access"

    def __init__(self) -> None:
        self.prepared: list[tuple[str | None, str]] = []
        self.handled: list[tuple[str | None, str, object]] = []

    def prepare(
        self,
        session: Session,
        person: User | None,
        reading: InboundReading,
        *,
        settings: Settings,
        now: datetime,
    ) -> object:
        self.prepared.append((person.email if person else None, reading.text.strip()))
        return reading.text.strip().upper()

    def handle(self, message: MailboxContext, prepared: object) -> Outcome:
        who = message.person.email if message.person else None
        self.handled.append((who, message.sender, prepared))
        return processed("read by access")


@pytest.fixture
def mailbox(session: Session, monkeypatch: pytest.MonkeyPatch) -> AccessMailbox:
    seed_people(session)
    session.commit()
    kind = AccessMailbox()
    monkeypatch.setattr("mailflow.workers.inbound.REPLY_KEY_KINDS", with_mailbox(kind))
    return kind


def with_mailbox(kind: AccessMailbox) -> KeyKinds:
    return KeyKinds((DeliveryReplies(),), mailboxes=(kind,))


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime(settings)
    yield rt
    rt.close()


def test_a_persons_message_to_access_reaches_its_reader_with_the_person(
    runtime: Runtime, mailbox: AccessMailbox
) -> None:
    message = receive(runtime, a_reply(ANN, ACCESS, "request RXB"), to=ACCESS)

    assert (message.state, message.outcome) == (InboundState.PROCESSED, "read by access")
    assert mailbox.prepared == [(ANN, "request RXB")]
    assert mailbox.handled == [(ANN, ANN, "REQUEST RXB")]


def test_a_strangers_message_reaches_its_reader_with_no_person(
    runtime: Runtime, mailbox: AccessMailbox
) -> None:
    stranger = "Someone.New@Elsewhere.example"

    receive(runtime, a_reply(stranger, ACCESS, "request RXB"), to=ACCESS)

    assert mailbox.handled == [(None, "someone.new@elsewhere.example", "REQUEST RXB")]


def test_an_auto_reply_to_access_is_neither_read_nor_handled(
    runtime: Runtime, mailbox: AccessMailbox
) -> None:
    away = a_reply(ANN, ACCESS, "I am away", headers={"Auto-Submitted": "auto-replied"})

    message = receive(runtime, away, to=ACCESS)

    assert message.state == InboundState.IGNORED
    assert message.outcome == "automatic mail (Auto-Submitted: auto-replied): no answer"
    assert (mailbox.prepared, mailbox.handled) == ([], [])


@pytest.mark.parametrize("mailbox_name", ["access", "people"])
def test_a_bounce_to_a_named_mailbox_gets_nothing_and_records_nothing(
    runtime: Runtime, session: Session, mailbox_name: str
) -> None:
    # The real readers of access@ and people@, not the stand-in.
    seed_people(session)
    session.commit()
    address = f"{mailbox_name}@{MAIL_DOMAIN}"
    # A report that mail "from" the mailbox did not arrive (forged, or
    # misdirected), with the null sender reports use.
    report = delivery_report(address, ANN)

    message = receive(runtime, report, to=address, envelope_from=None)

    assert message.state == InboundState.IGNORED
    assert message.outcome is not None and message.outcome.startswith("automatic mail")
    for table in ("pending_actions", "outgoing_emails", "access_requests"):
        assert session.scalar(sa.text(f"select count(*) from {table}")) == 0


def test_a_forged_from_to_access_is_neither_read_nor_handled(
    settings_for: Any, database_url: str, relay: CapturingRelay, mailbox: AccessMailbox
) -> None:
    settings = settings_for(
        database_url,
        authserv_id="mx.alerts.test",
        smtp_relay=parse_relay(f"smtp://127.0.0.1:{relay.port}"),
    )
    forged = (
        b"Authentication-Results: mx.alerts.test; dmarc=fail header.from=riverside.example\r\n"
        + a_reply(ANN, ACCESS, "request RXB")
    )
    runtime = Runtime(settings)
    try:
        message = receive(runtime, forged, to=ACCESS)
    finally:
        runtime.close()

    assert message.state == InboundState.IGNORED
    assert "DMARC" in (message.outcome or "")
    assert (mailbox.prepared, mailbox.handled) == ([], [])


def test_a_message_polled_over_imap_is_known_by_its_delivery_header(
    runtime: Runtime, mailbox: AccessMailbox
) -> None:
    raw = f"Delivered-To: {ACCESS}\r\n".encode() + a_reply(ANN, ACCESS, "request RXB")

    message = receive(runtime, raw, to=f"inbox@{MAIL_DOMAIN}", source="imap")

    assert message.outcome == "read by access"


def test_mail_to_another_service_address_is_not_handed_to_the_mailbox(
    runtime: Runtime, mailbox: AccessMailbox
) -> None:
    alerts = f"alerts@{MAIL_DOMAIN}"

    message = receive(runtime, a_reply(ANN, alerts, "request RXB"), to=alerts)

    assert message.state == InboundState.IGNORED
    assert mailbox.handled == []


def test_the_inbound_server_takes_mail_for_a_mailbox_it_was_not_told_is_a_service_address(
    settings_for: Any, database_url: str, relay: CapturingRelay, mailbox: AccessMailbox
) -> None:
    settings = settings_for(database_url, service_addresses=("postmaster",))
    runtime = Runtime(settings)
    server = InboundServer(runtime, "127.0.0.1", 0, key_kinds=with_mailbox(mailbox), lmtp=False)
    server.start()
    try:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
            client.ehlo("client.example")
            client.mail(ANN)
            assert client.rcpt(f"Access@{MAIL_DOMAIN}")[0] == 250
            assert client.rcpt(f"people@{MAIL_DOMAIN}")[0] == 550
            assert client.rcpt(f"alerts@{MAIL_DOMAIN}")[0] == 550
    finally:
        server.stop()
        runtime.close()
