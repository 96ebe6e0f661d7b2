"""Hostile mail at the door: an attacker sends it over real SMTP into the
inbound server, the real worker processes it, and the relay shows what
mailflow sent back.  Nothing an attacker sends may be attributed to
someone else, hold up anyone else, or reach an operator's terminal raw."""

from __future__ import annotations

import smtplib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mailflow.cli.main import cli
from mailflow.config import parse_relay
from mailflow.core.models import (
    Delivery,
    InboundMessage,
    InboundState,
    Job,
    JobState,
    OutgoingEmail,
    PendingAnswer,
)
from mailflow.core.runtime import Runtime
from mailflow.gateway.inbound_messages import PROCESS_INBOUND
from mailflow.gateway.smtpd import InboundServer
from mailflow.workers.key_kinds import REPLY_KEY_KINDS
from mailflow.workers.queue import QueueWorker
from tests.support.relay import CapturingRelay
from tests.support.seed import issue, seed_people
from tests.support.waiting import wait_until

ALERT_EMAILS = 6
ANN = "ann@riverside.example"
READ_SECONDS = 1.0


@dataclass
class Service:
    runtime: Runtime
    server: InboundServer
    relay: CapturingRelay
    session: Session
    ann_reply_to: str

    def send(self, raw: bytes, *, to: str | None = None, sender: str = ANN) -> tuple[int, bytes]:
        """DATA's reply to the message (raises for a refused recipient)."""
        with smtplib.SMTP("127.0.0.1", self.server.port, timeout=60) as client:
            client.ehlo("client.example")
            client.mail(sender)
            code, _ = client.rcpt(to or self.ann_reply_to)
            assert code == 250
            return client.data(raw)

    def messages(self) -> list[InboundMessage]:
        self.session.rollback()
        return list(self.session.scalars(select(InboundMessage).order_by(InboundMessage.id)))

    def wait_processed(self, count: int, timeout: float = 30) -> list[InboundMessage]:
        wait_until(
            lambda: (
                len(self.messages()) == count
                and all(m.state != InboundState.RECEIVED for m in self.messages())
            ),
            timeout=timeout,
            what=f"{count} messages to be processed",
        )
        return self.messages()

    def pending(self) -> list[PendingAnswer]:
        self.session.rollback()
        return list(self.session.scalars(select(PendingAnswer)))

    def outgoing(self) -> list[OutgoingEmail]:
        self.session.rollback()
        return list(self.session.scalars(select(OutgoingEmail)))


@pytest.fixture
def service(
    settings_for: Any, database_url: str, relay: CapturingRelay, session: Session
) -> Iterator[Service]:
    seed_people(session)
    issue(session)
    session.commit()
    ann = session.scalars(select(Delivery).where(Delivery.user.has(email=ANN))).one()
    settings = settings_for(
        database_url,
        smtp_relay=parse_relay(f"smtp://127.0.0.1:{relay.port}"),
        inbound_read_seconds=READ_SECONDS,
    )
    runtime = Runtime(settings)
    server = InboundServer(runtime, "127.0.0.1", 0, key_kinds=REPLY_KEY_KINDS)
    worker = QueueWorker(runtime, poll_seconds=0.05)
    server.start()
    worker.start()
    try:
        relay.wait_for(ALERT_EMAILS)
        yield Service(runtime, server, relay, session, f"reply+{ann.reply_key}@alerts.test")
    finally:
        worker.stop()
        server.stop()
        runtime.close()


def message(head: str, body: str = "RXA: complete\r\n") -> bytes:
    return (
        f"{head}\r\nTo: reply@alerts.test\r\nSubject: Re: [HIGH] CC-4720\r\n\r\n{body}"
    ).encode()


# ------------------------------------------ finding 1: slow to read, for all


def test_a_from_header_with_200000_addresses_is_refused_at_once_and_nothing_is_stored(
    service: Service,
) -> None:
    addresses = ",\r\n ".join(f"{n}@x.ex" for n in range(200_000))
    hostile = message(f"From: {addresses}")

    started = time.monotonic()
    code, reply = service.send(hostile, to="alerts@alerts.test", sender="m@evil.example")

    assert time.monotonic() - started < 5
    assert code == 552
    assert reply.startswith(b"5.3.4 Message refused: the header block is larger than 256 KiB")
    assert service.messages() == []
    assert len(service.relay.received) == ALERT_EMAILS


def deeply_nested_and_long(depth: int = 45, lines: int = 1_000_000) -> bytes:
    """Within every size limit, yet slow to parse: the email package checks
    each body line against every open MIME boundary (some seconds)."""
    head = "".join(
        f'Content-Type: multipart/mixed; boundary="b{n}"\r\n\r\n--b{n}\r\n' for n in range(depth)
    )
    start = f"From: {ANN}\r\nMIME-Version: 1.0\r\n{head}Content-Type: text/plain\r\n\r\n"
    return start.encode() + b"x\r\n" * lines


def test_a_message_too_slow_to_read_is_failed_without_holding_up_anyone(
    service: Service,
) -> None:
    assert service.send(deeply_nested_and_long())[0] == 250
    wait_until(lambda: _reading_started(service), timeout=10, what="the worker to start reading")
    # While it is being read, others are answered and others commit.
    waits = []
    for _ in range(5):
        started = time.monotonic()
        assert service.send(message(f"From: {ANN}", "hello"), to="alerts@alerts.test")[0] == 250
        with service.runtime.sessions.begin() as writing:
            writing.execute(update(Job).where(Job.id == -1).values(attempts=0))
        waits.append(time.monotonic() - started)
        time.sleep(0.1)

    [slow, *others] = service.wait_processed(6)
    assert max(waits) < READ_SECONDS, waits
    assert slow.state == InboundState.FAILED
    assert f"longer than {READ_SECONDS:g} s" in (slow.error or "")
    assert slow.attempts == 1
    # Its job is finished, not left to be run again by itself.
    wait_until(lambda: _first_job(service).state != JobState.PENDING, timeout=10, what="the job")
    job = _first_job(service)
    assert job.state == JobState.DONE and job.attempts == 1
    assert [m.state for m in others] == [InboundState.IGNORED] * 5
    assert service.pending() == [] and len(service.relay.received) == ALERT_EMAILS


def _first_job(service: Service) -> Job:
    service.session.rollback()
    return service.session.scalars(
        select(Job).where(Job.kind == PROCESS_INBOUND).order_by(Job.id).limit(1)
    ).one()


def _reading_started(service: Service) -> bool:
    service.session.rollback()
    job = service.session.scalars(select(Job).where(Job.kind == PROCESS_INBOUND)).first()
    return job is not None and job.attempts > 0


# ---------------------------------- finding 2: someone else's From, repaired


@pytest.mark.parametrize(
    "from_header",
    [
        f"From: {ANN} <mallory@evil.example>",
        "From: =?utf-8?q?ann=40riverside=2Eexample?=",
        "From: =?utf-8?q?ann@riverside.example?=",
        "From: =?utf-8?q?ann=40riverside.example?= <@evil.example>",
        f"From: {ANN})<mallory@evil.example>",
        f"From: {ANN}, mallory@evil.example",
        f"From: {ANN}\r\nFrom: mallory@evil.example",
    ],
    ids=[
        "address-as-display-name",
        "encoded-word-address",
        "encoded-word-with-at",
        "encoded-name-empty-route",
        "parenthesis-trick",
        "two-mailboxes",
        "two-from-headers",
    ],
)
def test_a_reply_whose_from_only_a_lenient_parser_reads_as_ann_gets_nothing(
    service: Service, from_header: str
) -> None:
    assert service.send(message(from_header), sender="mallory@evil.example")[0] == 250

    [stored] = service.wait_processed(1)
    assert stored.state == InboundState.IGNORED
    assert "no trustworthy From address" in (stored.outcome or "")
    assert service.pending() == [] and service.outgoing() == []
    time.sleep(0.3)  # anything queued would be on its way by now
    assert len(service.relay.received) == ALERT_EMAILS


# ------------------ finding 4: the key checked at RCPT cannot be sidestepped


def test_mail_to_a_service_address_that_names_a_reply_key_in_its_headers_is_no_reply(
    service: Service,
) -> None:
    # The envelope says alerts@ (accepted without a key); only the headers,
    # which the sender writes, name Ann's reply address.
    forged = (
        f"From: {ANN}\r\nTo: {service.ann_reply_to}\r\nDelivered-To: {service.ann_reply_to}"
        "\r\nSubject: Re: CC-4720\r\n\r\nRXA: complete\r\n"
    ).encode()

    assert service.send(forged, to="alerts@alerts.test")[0] == 250

    [stored] = service.wait_processed(1)
    assert stored.state == InboundState.IGNORED
    assert stored.outcome == "not sent to a reply address"
    assert service.pending() == [] and service.outgoing() == []
    assert len(service.relay.received) == ALERT_EMAILS


# ---------------------------------- finding 8: a Message-ID hiding CR and LF


def test_a_reply_whose_message_id_hides_a_line_break_still_gets_its_confirm_email(
    service: Service,
) -> None:
    hidden = "Message-ID: =?utf-8?q?<x@client.example>=0D=0ABcc:_mallory@evil.example?="
    assert service.send(message(f"From: {ANN}\r\n{hidden}"))[0] == 250

    [stored] = service.wait_processed(1)
    assert stored.state == InboundState.PROCESSED, stored.error
    [confirm] = service.relay.wait_for(ALERT_EMAILS + 1)[ALERT_EMAILS:]
    assert confirm.recipients == [ANN]
    # Threaded under Ann's alert email alone: the hidden id is left out.
    alert_id = str(confirm.message["References"]).split()[0]
    assert str(confirm.message["In-Reply-To"]) == alert_id
    assert "client.example" not in str(confirm.message["References"])
    assert confirm.message["Bcc"] is None and b"mallory" not in confirm.data


# ------------------------------- finding 9: control characters in the terminal


def test_control_characters_in_a_message_never_reach_the_operators_terminal(
    service: Service, settings_for: Any, database_url: str
) -> None:
    in_name = f'From: "Ann \x1b]0;owned\x07Lee" <{ANN}>'
    in_header = f"From: {ANN}\r\nAuto-Submitted: auto-replied\x1b[2J\x1b[31m"
    assert service.send(message(in_name))[0] == 250
    assert service.send(message(in_header))[0] == 250
    first, second = service.wait_processed(2)
    # A row stored before outcomes were escaped is listed safely too.
    with service.runtime.sessions.begin() as writing:
        writing.execute(
            update(InboundMessage)
            .where(InboundMessage.id == first.id)
            .values(outcome="old outcome \x1b[2J\x9b\u202e")
        )

    env = {"MAILFLOW_DATABASE_URL": database_url, "MAILFLOW_SECRET_KEY": "k" * 40}
    listed = CliRunner().invoke(cli, ["inbound", "list"], env=env)

    assert listed.exit_code == 0, listed.output
    assert first.state == InboundState.IGNORED and "control characters" in (first.outcome or "")
    assert (
        second.outcome
        == "automatic mail (Auto-Submitted: auto-replied\\x1b[2j\\x1b[31m): no answer"
    )
    for unsafe in "\x1b\x07\x9b\u202e":
        assert unsafe not in listed.output
    assert "\\x1b[2j\\x1b[31m" in listed.output and "\\x9b\\u202e" in listed.output
    assert service.pending() == [] and service.outgoing() == []
