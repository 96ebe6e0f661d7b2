"""Where a reply goes: to whatever its reply key belongs to (an alert's
delivery today, say an access request tomorrow), and only after the checks
every reply passes, so a new kind of key gets them without writing them
again."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from datetime import datetime

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.answers.alert_reply_key import DeliveryReplies
from mailflow.config import Settings
from mailflow.core.models import Delivery, InboundState, User
from mailflow.core.runtime import Runtime
from mailflow.gateway.context import KeyOwner, Outcome, ReplyContext, processed
from mailflow.gateway.imap import envelope_recipients
from mailflow.gateway.reading import DELIVERY_HEADERS, InboundReading
from mailflow.gateway.routing import KeyKinds
from mailflow.gateway.smtpd import InboundServer
from tests.support.mail import MAIL_DOMAIN, receive, reply
from tests.support.seed import issue, seed_people

REQUEST_KEY = "accessrequestkey2345672345672345"
ANN = "ann@riverside.example"


class AccessRequestReplies:
    """A stand-in for a kind of key that is not an alert's: replies to an
    access request, noting what each step saw."""

    name = "access request"

    def __init__(self) -> None:
        self.prepared: list[str] = []
        self.handled: list[str] = []

    def accepts(self, session: Session, key: str, *, settings: Settings, now: datetime) -> bool:
        return key == REQUEST_KEY

    def owner(self, session: Session, key: str) -> KeyOwner | None:
        if key != REQUEST_KEY:
            return None
        ann = session.scalars(select(User).where(User.email == ANN)).one()
        return KeyOwner(self, ann, "request 7")

    def prepare(
        self,
        session: Session,
        owner: KeyOwner,
        reading: InboundReading,
        *,
        settings: Settings,
        now: datetime,
    ) -> object:
        self.prepared.append(reading.text.strip())
        return reading.text.strip().upper()

    def handle(self, reply: ReplyContext, prepared: object) -> Outcome:
        self.handled.append(f"{reply.owner.thing} by {reply.owner.person.email}: {prepared}")
        return processed(f"{reply.owner.thing} answered")


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime(settings)
    yield rt
    rt.close()


@pytest.fixture
def requests(session: Session, monkeypatch: pytest.MonkeyPatch) -> AccessRequestReplies:
    """CC-4720 issued, and an access request's key registered beside the
    alert emails' keys: the one line a new kind needs."""
    seed_people(session)
    issue(session)
    session.commit()
    kind = AccessRequestReplies()
    monkeypatch.setattr("mailflow.workers.inbound.REPLY_KEY_KINDS", with_alert_replies(kind))
    return kind


def with_alert_replies(kind: AccessRequestReplies) -> KeyKinds:
    return KeyKinds((DeliveryReplies(), kind))


def request_address() -> str:
    return f"reply+{REQUEST_KEY}@{MAIL_DOMAIN}"


def test_a_reply_to_an_access_request_reaches_its_handler_with_what_was_read_first(
    runtime: Runtime, requests: AccessRequestReplies
) -> None:
    message = receive(runtime, reply(ANN, "approve", key=REQUEST_KEY), to=request_address())

    assert (message.state, message.outcome) == (InboundState.PROCESSED, "request 7 answered")
    assert requests.prepared == ["approve"]
    assert requests.handled == [f"request 7 by {ANN}: APPROVE"]


def test_a_reply_to_an_access_request_from_someone_else_is_neither_read_nor_handled(
    runtime: Runtime, requests: AccessRequestReplies
) -> None:
    raw = reply("raj@riverside.example", "approve", key=REQUEST_KEY)

    message = receive(runtime, raw, to=request_address())

    assert message.state == InboundState.IGNORED
    assert message.outcome == (
        "sent from raj@riverside.example, not the person the reply address belongs to"
    )
    assert (requests.prepared, requests.handled) == ([], [])


def test_an_auto_reply_or_a_second_copy_to_an_access_request_is_not_handled(
    runtime: Runtime, requests: AccessRequestReplies
) -> None:
    away = reply(ANN, "I am away", key=REQUEST_KEY, headers={"Auto-Submitted": "auto-replied"})
    first = reply(ANN, "approve", key=REQUEST_KEY)

    auto = receive(runtime, away, to=request_address())
    once = receive(runtime, first, to=request_address())
    again = receive(runtime, first, to=request_address())

    assert auto.outcome == "automatic mail (Auto-Submitted: auto-replied): no answer"
    assert once.state == InboundState.PROCESSED
    assert (again.state, again.outcome) == (
        InboundState.IGNORED,
        "a copy of a message already received",
    )
    assert len(requests.handled) == 1


def test_a_strangers_reply_to_an_alert_is_refused_without_its_words_being_parsed(
    runtime: Runtime, requests: AccessRequestReplies, monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_parse(text: str, **_: object) -> list[object]:
        raise AssertionError("a stranger's reply was parsed")

    monkeypatch.setattr("mailflow.answers.alert_reply_key.parse_reply", must_not_parse)
    with runtime.sessions() as session:
        ann = session.scalars(select(Delivery).join(User).where(User.email == ANN)).one()
        key = ann.reply_key
    raw = reply("mallory@elsewhere.example", "RXA: complete", key=key)

    message = receive(runtime, raw, to=f"reply+{key}@{MAIL_DOMAIN}")

    assert message.state == InboundState.IGNORED, message.error
    assert message.outcome == (
        "sent from mallory@elsewhere.example, not the person the reply address belongs to"
    )


def test_the_inbound_server_takes_mail_for_a_key_any_kind_knows_and_refuses_others(
    runtime: Runtime, requests: AccessRequestReplies
) -> None:
    server = InboundServer(
        runtime, "127.0.0.1", 0, key_kinds=with_alert_replies(requests), lmtp=False
    )
    server.start()
    try:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
            client.ehlo("client.example")
            client.mail(ANN)
            assert client.rcpt(request_address())[0] == 250
            unknown = f"reply+{'q' * 32}@{MAIL_DOMAIN}"
            assert client.rcpt(unknown)[0] == 550
    finally:
        server.stop()


def test_an_imap_message_is_looked_for_in_the_same_delivery_headers_as_processing_reads() -> None:
    # Exim's Envelope-To names the reply address; the poller used to skip it.
    raw = (
        b"To: Cyber alerts <alerts@alerts.test>\r\n"
        b"Envelope-To: reply+" + REQUEST_KEY.encode() + b"@alerts.test\r\n"
        b"\r\n"
        b"approve\r\n"
    )
    assert envelope_recipients(raw) == [request_address(), "alerts@alerts.test"]
    assert "Envelope-To" in DELIVERY_HEADERS
