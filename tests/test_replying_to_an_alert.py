"""What happens to a reply once it is stored: who sent it, what they
answered, and what mailflow sends back (or, for automatic mail and anything
untrusted, does not)."""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.cli.main import cli
from mailflow.config import Settings
from mailflow.core.links import CONFIRM_LINK
from mailflow.core.models import (
    Confirmation,
    Delivery,
    DeliveryState,
    InboundMessage,
    InboundState,
    Organisation,
    OutgoingEmail,
    PendingAnswer,
)
from mailflow.core.runtime import Runtime
from mailflow.gateway.inbound_messages import store_inbound_message
from mailflow.workers.inbound import process_inbound
from mailflow.workers.queue import QueueWorker
from tests.support.mail import delivery_status_notification, html_message, receive, reply
from tests.support.relay import CapturingRelay
from tests.support.reply_corpus import (
    ANSWER,
    CONFLICT,
    HTML_WORDS,
    corpus,
    corpus_names,
    rewrite_standard,
)
from tests.support.seed import NOW, issue, seed_people
from tests.support.waiting import wait_until

DOMAIN = "alerts.test"


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime(settings)
    yield rt
    rt.close()


@pytest.fixture
def keys(session: Session) -> dict[str, Delivery]:
    """The alert CC-4720 issued to RXA, RXB and RXC: each recipient's delivery."""
    seed_people(session)
    issue(session)
    session.commit()
    return {d.user.email: d for d in session.scalars(select(Delivery))}


def reply_to(delivery: Delivery) -> str:
    return f"reply+{delivery.reply_key}@{DOMAIN}"


def pending(session: Session) -> list[tuple[str, str]]:
    session.rollback()
    rows = session.execute(
        select(PendingAnswer.organisation_id, PendingAnswer.status).order_by(PendingAnswer.id)
    ).all()
    codes = dict(session.execute(select(Organisation.id, Organisation.code)).all())
    return [(codes[org], status) for org, status in rows]


def outgoing(session: Session) -> list[OutgoingEmail]:
    session.rollback()
    return list(session.scalars(select(OutgoingEmail).order_by(OutgoingEmail.id)))


def test_a_reply_becomes_pending_answers_and_a_confirm_email(
    runtime: Runtime,
    keys: dict[str, Delivery],
    session: Session,
    settings: Settings,
) -> None:
    ann = keys["ann@riverside.example"]
    raw = reply("Ann Lee <Ann@Riverside.example>", "RXA: complete\n\nThanks, Ann")

    message = receive(runtime, raw, to=reply_to(ann), envelope_from="ann@riverside.example")

    assert message.state == InboundState.PROCESSED, message.outcome
    assert pending(session) == [("RXA", "complete")]
    confirmation = session.scalars(select(Confirmation)).one()
    assert confirmation.used_at is None
    assert confirmation.user_id == ann.user_id
    assert confirmation.expires_at - confirmation.created_at == timedelta(hours=24)
    [email] = outgoing(session)
    assert email.kind == "confirm_answer" and email.recipient == "ann@riverside.example"
    from email import message_from_bytes
    from email.policy import default

    sent = message_from_bytes(email.raw, policy=default)
    assert sent["Auto-Submitted"] == "auto-replied"
    assert sent["In-Reply-To"] and sent["In-Reply-To"] in raw.decode()
    text = sent.get_body(("plain",)).get_content()
    assert "Nothing has been recorded yet" in text
    assert "Riverside Acute NHS Trust (RXA): Complete" in text
    [link] = re.findall(r"https://mailflow\.test/c/\S+", text)
    payload = CONFIRM_LINK.tokens(settings).verify(link.rsplit("/", 1)[1])
    assert payload == {"c": confirmation.id, "n": confirmation.nonce, "u": ann.user_id}


def test_one_line_for_all_organisations_and_further_information(
    runtime: Runtime,
    keys: dict[str, Delivery],
    session: Session,
) -> None:
    li = keys["li@itservices.example"]
    body = "ALL: unable: no patch from the supplier; mitigations: service taken offline\n"
    message = receive(runtime, reply("li@itservices.example", body), to=reply_to(li))

    assert message.state == InboundState.PROCESSED, message.outcome
    assert pending(session) == [("RXB", "unable"), ("RXC", "unable")]
    answers = session.scalars(select(PendingAnswer)).all()
    assert {a.reason for a in answers} == {"no patch from the supplier"}
    assert {a.mitigations for a in answers} == {"service taken offline"}


def test_a_reply_that_cannot_be_understood_gets_an_email_saying_why(
    runtime: Runtime,
    keys: dict[str, Delivery],
    session: Session,
) -> None:
    li = keys["li@itservices.example"]
    message = receive(
        runtime, reply("li@itservices.example", "RXB: compleet\nRXC: done"), to=reply_to(li)
    )

    assert message.state == InboundState.PROCESSED
    assert "not understood" in (message.outcome or "")
    assert pending(session) == []
    [email] = outgoing(session)
    assert email.kind == "reply_problem"
    from email import message_from_bytes
    from email.policy import default

    text = message_from_bytes(email.raw, policy=default).get_body(("plain",)).get_content()
    assert "Nothing has been recorded" in text
    assert 'Line 1: "RXB: compleet"' in text
    assert "'compleet' is not a status" in text
    # The form again, for the organisations this person answers for.
    assert "Your organisations: RXB, RXC" in text


def test_error_replies_are_limited_per_sender(
    runtime: Runtime,
    keys: dict[str, Delivery],
    session: Session,
    settings: Settings,
) -> None:
    bea = keys["bea@brookfield.example"]
    for n in range(settings.error_replies_per_hour + 2):
        receive(runtime, reply("bea@brookfield.example", f"RXB: gibberish {n}"), to=reply_to(bea))
    assert len(outgoing(session)) == settings.error_replies_per_hour


@pytest.mark.parametrize(
    ("sender", "key", "outcome"),
    [
        ("ann@riverside.example", "unknown", "unknown reply key"),
        ("mallory@evil.example", None, "not the person the reply address belongs to"),
        ("raj@riverside.example", None, "not the person the reply address belongs to"),
    ],
)
def test_untrusted_replies_record_nothing_and_get_no_answer(
    runtime: Runtime,
    keys: dict[str, Delivery],
    session: Session,
    sender: str,
    key: str | None,
    outcome: str,
) -> None:
    ann = keys["ann@riverside.example"]
    to = f"reply+{'a' * 32}@{DOMAIN}" if key == "unknown" else reply_to(ann)
    message = receive(runtime, reply(sender, "RXA: complete"), to=to)

    assert message.state == InboundState.IGNORED
    assert outcome in (message.outcome or "")
    assert pending(session) == [] and outgoing(session) == []


OURS = "mx.alerts.test; spf=pass smtp.mailfrom=riverside.example; dmarc="
RECEIVED = "Received: from client.example by mx.alerts.test; Mon, 30 Nov 2026 09:00:00 +0000"


@pytest.mark.parametrize(
    ("results", "trusted"),
    [
        ([OURS + "pass (p=reject) header.from=riverside.example"], True),
        ([OURS + "fail header.from=riverside.example"], False),
        ([OURS + "none header.from=riverside.example"], False),
        ([OURS + "permerror header.from=riverside.example"], False),
        ([OURS + "pass header.from=evil.example"], False),
        (["mx.alerts.test; spf=pass smtp.mailfrom=riverside.example"], False),
        ([], False),
        # Anyone can write an Authentication-Results header: only our own
        # server's counts, and ours is the one on top.
        (["mx.forger.example; dmarc=pass header.from=riverside.example"], False),
        (
            [
                OURS + "fail header.from=riverside.example",
                OURS + "pass header.from=riverside.example",
            ],
            False,
        ),
        # Our server's first field may carry no DMARC result (another
        # filter wrote it); a field below its Received line, written by
        # the sender with our name in it, still does not count.
        (
            [
                "mx.alerts.test; spf=pass smtp.mailfrom=riverside.example",
                RECEIVED,
                OURS + "pass header.from=riverside.example",
            ],
            False,
        ),
        # Two filters of ours, each adding a field above our Received line.
        (
            [
                "mx.alerts.test; dkim=pass header.d=riverside.example",
                OURS + "pass header.from=riverside.example",
                RECEIVED,
            ],
            True,
        ),
    ],
)
def test_only_our_own_servers_dmarc_pass_for_the_senders_domain_is_trusted(
    settings_for: object,
    database_url: str,
    relay: CapturingRelay,
    keys: dict[str, Delivery],
    session: Session,
    results: list[str],
    trusted: bool,
) -> None:
    from mailflow.config import parse_relay

    settings = settings_for(  # type: ignore[operator]
        database_url,
        authserv_id="mx.alerts.test",
        smtp_relay=parse_relay(f"smtp://127.0.0.1:{relay.port}"),
    )
    runtime = Runtime(settings)
    ann = keys["ann@riverside.example"]
    head = "".join(
        f"{value}\r\n" if value.startswith("Received:") else f"Authentication-Results: {value}\r\n"
        for value in results
    )
    try:
        message = receive(
            runtime,
            head.encode() + reply("ann@riverside.example", "RXA: complete"),
            to=reply_to(ann),
        )
    finally:
        runtime.close()
    if trusted:
        assert message.state == InboundState.PROCESSED, message.outcome
        assert pending(session) == [("RXA", "complete")]
    else:
        assert message.state == InboundState.IGNORED
        assert "DMARC" in (message.outcome or "")
        assert pending(session) == [] and outgoing(session) == []


def test_an_expired_reply_key_records_nothing(
    runtime: Runtime,
    keys: dict[str, Delivery],
    session: Session,
    settings: Settings,
) -> None:
    ann = keys["ann@riverside.example"]
    session.get_one(Delivery, ann.id).created_at = NOW - timedelta(
        days=settings.answer_link_days + 1
    )
    session.commit()
    message = receive(runtime, reply("ann@riverside.example", "RXA: complete"), to=reply_to(ann))

    assert "expired" in (message.outcome or "")
    assert pending(session) == []
    [email] = outgoing(session)
    assert email.kind == "reply_problem"


def test_an_alert_only_contact_cannot_answer(
    runtime: Runtime,
    keys: dict[str, Delivery],
    session: Session,
) -> None:
    tom = keys["tom@castleton.example"]
    message = receive(runtime, reply("tom@castleton.example", "RXC: complete"), to=reply_to(tom))
    assert "answers for no organisation" in (message.outcome or "")
    assert pending(session) == []


@pytest.mark.parametrize(
    ("headers", "envelope_from", "why"),
    [
        ({"Auto-Submitted": "auto-replied"}, "ann@riverside.example", "Auto-Submitted"),
        ({"Auto-Submitted": "auto-generated"}, "ann@riverside.example", "Auto-Submitted"),
        ({"Precedence": "bulk"}, "ann@riverside.example", "Precedence"),
        ({"Precedence": "junk"}, "ann@riverside.example", "Precedence"),
        ({"Precedence": "list"}, "ann@riverside.example", "Precedence"),
        ({"X-Autoreply": "yes"}, "ann@riverside.example", "X-Autoreply"),
        ({}, None, "empty envelope sender"),
    ],
)
def test_automatic_mail_gets_no_answer(
    runtime: Runtime,
    keys: dict[str, Delivery],
    session: Session,
    headers: dict[str, str],
    envelope_from: str | None,
    why: str,
) -> None:
    ann = keys["ann@riverside.example"]
    out_of_office = "I am out of the office until Monday.\nRXA: complete"
    message = receive(
        runtime,
        reply("ann@riverside.example", out_of_office, headers=headers),
        to=reply_to(ann),
        envelope_from=envelope_from,
    )
    assert message.state == InboundState.IGNORED
    assert why in (message.outcome or "")
    assert pending(session) == [] and outgoing(session) == []


def test_outlooks_x_auto_response_suppress_is_not_an_auto_reply(
    runtime: Runtime,
    keys: dict[str, Delivery],
    session: Session,
) -> None:
    ann = keys["ann@riverside.example"]
    raw = reply(
        "ann@riverside.example", "RXA: complete", headers={"X-Auto-Response-Suppress": "All"}
    )
    message = receive(runtime, raw, to=reply_to(ann))
    assert message.state == InboundState.PROCESSED
    assert pending(session) == [("RXA", "complete")]


def test_a_bounce_marks_its_delivery_bounced_and_gets_no_answer(
    runtime: Runtime,
    keys: dict[str, Delivery],
    session: Session,
    settings: Settings,
) -> None:
    raj = keys["raj@riverside.example"]
    to = f"bounce+{raj.bounce_key}@{DOMAIN}"
    message = receive(runtime, delivery_status_notification(to), to=to, envelope_from=None)

    assert message.state == InboundState.PROCESSED, message.outcome
    session.rollback()
    delivery = session.get_one(Delivery, raj.id)
    assert delivery.state == DeliveryState.BOUNCED
    assert delivery.last_error is not None and delivery.last_error.startswith("bounced: 5.1.1")
    assert outgoing(session) == []
    env = {"MAILFLOW_DATABASE_URL": settings.database_url, "MAILFLOW_SECRET_KEY": "k" * 40}
    shown = CliRunner().invoke(cli, ["alert", "show", "CC-4720"], env=env)
    row = next(line for line in shown.output.splitlines() if "raj@riverside.example" in line)
    assert "bounced" in row and "5.1.1" in row


def test_a_delay_notice_is_not_a_bounce(
    runtime: Runtime,
    keys: dict[str, Delivery],
    session: Session,
) -> None:
    raj = keys["raj@riverside.example"]
    to = f"bounce+{raj.bounce_key}@{DOMAIN}"
    message = receive(
        runtime, delivery_status_notification(to, "delayed"), to=to, envelope_from=None
    )
    assert message.state == InboundState.IGNORED
    assert session.get_one(Delivery, raj.id).state != DeliveryState.BOUNCED


def test_the_same_message_twice_counts_once(
    runtime: Runtime,
    keys: dict[str, Delivery],
    session: Session,
) -> None:
    ann = keys["ann@riverside.example"]
    raw = reply("ann@riverside.example", "RXA: complete")
    first = receive(runtime, raw, to=reply_to(ann))
    again = receive(runtime, raw, to=reply_to(ann), source="imap")
    assert first.state == InboundState.PROCESSED
    assert again.state == InboundState.IGNORED and "copy" in (again.outcome or "")
    assert len(pending(session)) == 1 and len(outgoing(session)) == 1


def random_bytes() -> bytes:
    return random.Random(7).randbytes(50_000)


def many_parts() -> bytes:
    parts = "".join(f"--b\r\nContent-Type: text/plain\r\n\r\npart {n}\r\n" for n in range(10_000))
    return (
        "From: ann@riverside.example\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/mixed; boundary="b"\r\n\r\n{parts}--b--\r\n'
    ).encode()


def deeply_nested() -> bytes:
    head = "".join(
        f'Content-Type: multipart/mixed; boundary="b{n}"\r\n\r\n--b{n}\r\n' for n in range(1000)
    )
    tail = "".join(f"\r\n--b{n}--\r\n" for n in reversed(range(1000)))
    return (
        "From: ann@riverside.example\r\nMIME-Version: 1.0\r\n"
        f"{head}Content-Type: text/plain\r\n\r\nRXA: complete{tail}"
    ).encode()


def unknown_charset() -> bytes:
    # Bytes that are not text in any charset where the status should be.
    return (
        b"From: ann@riverside.example\r\nSubject: =?x-klingon?q?qapla?=\r\n"
        b'Content-Type: text/plain; charset="x-klingon"\r\n\r\nRXA: \xff\xfe complete\r\n'
    )


def test_an_answer_in_an_unknown_charset_is_still_read(
    runtime: Runtime,
    keys: dict[str, Delivery],
    session: Session,
) -> None:
    raw = (
        b"From: ann@riverside.example\r\nSubject: =?x-klingon?q?qapla?=\r\n"
        b'Content-Type: text/plain; charset="x-klingon"\r\n\r\nRXA: complete\r\n'
    )
    ann = keys["ann@riverside.example"]
    message = receive(runtime, raw, to=reply_to(ann))
    assert message.state == InboundState.PROCESSED, message.outcome
    assert pending(session) == [("RXA", "complete")]


def no_from() -> bytes:
    return b"To: someone\r\nSubject: hello\r\n\r\nRXA: complete\r\n"


def header_injection() -> bytes:
    return (
        b"From: ann@riverside.example\r\n"
        b"Subject: =?utf-8?q?hi=0D=0ABcc:_everyone@example.org?=\r\n"
        b"Reply-To: =?utf-8?q?x=0D=0ATo:_mallory@evil.example?=\r\n\r\nRXA: nonsense\r\n"
    )


@pytest.mark.parametrize(
    "make", [random_bytes, many_parts, deeply_nested, unknown_charset, no_from, header_injection]
)
def test_bad_input_records_nothing_and_loses_nothing(
    runtime: Runtime,
    keys: dict[str, Delivery],
    session: Session,
    make: object,
) -> None:
    ann = keys["ann@riverside.example"]
    raw = make()  # type: ignore[operator]
    message = receive(runtime, raw, to=reply_to(ann), envelope_from="ann@riverside.example")

    assert message.raw == raw  # kept as received
    assert message.state in (InboundState.IGNORED, InboundState.PROCESSED), message.error
    assert pending(session) == []
    # Whatever was sent back went only to the person the key belongs to.
    assert {e.recipient for e in outgoing(session)} <= {"ann@riverside.example"}


def test_a_processing_error_leaves_the_message_failed_for_retry(
    runtime: Runtime,
    keys: dict[str, Delivery],
    session: Session,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ann = keys["ann@riverside.example"]

    def broken(text: str, **_: object) -> list[object]:
        raise RuntimeError("the reply parser broke")

    monkeypatch.setattr("mailflow.answers.alert_reply_key.parse_reply", broken)
    message = receive(runtime, reply("ann@riverside.example", "RXA: complete"), to=reply_to(ann))
    assert message.state == InboundState.FAILED
    assert "the reply parser broke" in (message.error or "")
    assert pending(session) == []

    monkeypatch.undo()
    env = {"MAILFLOW_DATABASE_URL": settings.database_url, "MAILFLOW_SECRET_KEY": "k" * 40}
    listed = CliRunner().invoke(cli, ["inbound", "list", "--failed"], env=env)
    assert listed.exit_code == 0, listed.output
    assert f"{message.id}" in listed.output and "the reply parser broke" in listed.output
    retried = CliRunner().invoke(cli, ["inbound", "retry", str(message.id)], env=env)
    assert retried.exit_code == 0, retried.output
    worker = QueueWorker(runtime, poll_seconds=0.05)
    worker.start()
    try:
        wait_until(lambda: len(pending(session)) == 1, timeout=20, what="the retried reply")
    finally:
        worker.stop()
    assert pending(session) == [("RXA", "complete")]


# ------------------------------------------------- replies from real clients


def corpus_reply(raw: bytes, sender: str) -> bytes:
    from email import message_from_bytes
    from email.policy import default

    message = message_from_bytes(raw, policy=default)
    for name in ("From", "Sender", "Reply-To", "Auto-Submitted", "Precedence"):
        del message[name]
    message["From"] = sender
    return message.as_bytes()


@pytest.mark.parametrize("name", corpus_names("standard", "*.eml"))
def test_replies_from_every_mail_client_record_exactly_the_answer(
    runtime: Runtime,
    keys: dict[str, Delivery],
    session: Session,
    name: str,
) -> None:
    raw = rewrite_standard((corpus() / "standard" / name).read_bytes(), name)
    ann = keys["ann@riverside.example"]
    message = receive(runtime, corpus_reply(raw, "ann@riverside.example"), to=reply_to(ann))
    assert message.state == InboundState.PROCESSED, message.outcome
    assert ANSWER == "RXA: complete" and CONFLICT
    assert pending(session) == [("RXA", "complete")]


@pytest.mark.parametrize("name", corpus_names("html", "*.html"))
def test_html_replies_from_every_mail_client_record_exactly_the_answer(
    runtime: Runtime,
    keys: dict[str, Delivery],
    session: Session,
    name: str,
) -> None:
    markup = (corpus() / "html" / name).read_text(encoding="utf-8")
    markup = re.sub(re.escape(HTML_WORDS[0]), ANSWER, markup, count=1)
    markup = re.sub(r"Hello! How are you\?", CONFLICT[0], markup)
    message = html_message(markup)
    message["From"] = "ann@riverside.example"
    ann = keys["ann@riverside.example"]
    stored = receive(runtime, message.as_bytes(), to=reply_to(ann))
    assert stored.state == InboundState.PROCESSED, stored.outcome
    assert pending(session) == [("RXA", "complete")]


def test_our_own_confirm_email_sent_back_to_us_gets_no_answer(
    runtime: Runtime,
    keys: dict[str, Delivery],
    session: Session,
) -> None:
    ann = keys["ann@riverside.example"]
    receive(runtime, reply("ann@riverside.example", "RXA: complete"), to=reply_to(ann))
    [confirm] = outgoing(session)
    # A forwarding rule sends our own email straight back: no loop.
    bounced_back = receive(
        runtime,
        confirm.raw.replace(
            b"From: Cyber alerts <alerts@alerts.test>", b"From: ann@riverside.example"
        ),
        to=reply_to(ann),
    )
    assert bounced_back.state == InboundState.IGNORED
    assert len(outgoing(session)) == 1


def test_the_confirm_email_goes_out_through_the_relay_from_a_bounce_address_of_its_own(
    runtime: Runtime,
    keys: dict[str, Delivery],
    session: Session,
    relay: CapturingRelay,
) -> None:
    ann = keys["ann@riverside.example"]
    alert_emails = len(keys)
    worker = QueueWorker(runtime, poll_seconds=0.05)
    worker.start()
    try:
        # The alert's own emails go out first; then Ann replies.
        relay.wait_for(alert_emails)
        receive(runtime, reply("ann@riverside.example", "RXA: complete"), to=reply_to(ann))
        received = relay.wait_for(alert_emails + 1)
    finally:
        worker.stop()
    confirm = received[-1]
    # It goes to a person, so a bounce is traced to it; nothing answers a
    # report sent to a bounce address, so nothing loops.
    [email] = outgoing(session)
    assert email.bounce_key is not None
    assert confirm.mail_from == f"bounce+{email.bounce_key}@{DOMAIN}"
    assert confirm.recipients == ["ann@riverside.example"]
    assert str(confirm.message["Subject"]).strip().startswith("Confirm your answer: CC-4720")
    assert email.state == "sent"


def test_a_job_delivered_twice_at_once_processes_and_sends_once(
    runtime: Runtime,
    keys: dict[str, Delivery],
    session: Session,
    relay: CapturingRelay,
) -> None:
    import threading

    from mailflow.workers.outgoing import send_outgoing

    ann = keys["ann@riverside.example"]
    with runtime.sessions.begin() as writing:
        stored = store_inbound_message(
            writing,
            reply("ann@riverside.example", "RXA: complete"),
            source="smtp",
            envelope_from="ann@riverside.example",
            envelope_to=[reply_to(ann)],
            now=runtime.clock(),
        )
        message_id = stored.id

    def twice(work: object, arg: int) -> None:
        threads = [threading.Thread(target=work, args=(runtime, arg)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)

    twice(process_inbound, message_id)
    assert pending(session) == [("RXA", "complete")]
    [email] = outgoing(session)
    twice(send_outgoing, email.id)
    assert [r.recipients for r in relay.received] == [["ann@riverside.example"]]
    assert [e.state for e in outgoing(session)] == ["sent"]


def parsing_while_someone_writes(runtime: Runtime, finished_at_once: list[bool]) -> Any:
    """A stand-in for parse_reply that has another writer lock the message
    while the reply is parsed: that writer finishes at once (noted in
    ``finished_at_once``) only if parsing holds no write transaction."""
    import threading

    from mailflow.answers.reply_form import parse_reply

    def parse(text: str, **kwargs: object) -> object:
        def write() -> None:
            with runtime.sessions.begin() as writing:
                writing.get(InboundMessage, 1, with_for_update=True)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        writer.join(timeout=2)
        finished_at_once.append(not writer.is_alive())
        return parse_reply(text, **kwargs)  # type: ignore[arg-type]

    return parse


def test_a_reply_is_parsed_while_no_write_transaction_waits_for_it(
    runtime: Runtime,
    keys: dict[str, Delivery],
    session: Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ann = keys["ann@riverside.example"]
    finished_at_once: list[bool] = []
    parse_while_someone_writes = parsing_while_someone_writes(runtime, finished_at_once)

    monkeypatch.setattr("mailflow.answers.alert_reply_key.parse_reply", parse_while_someone_writes)
    message = receive(runtime, reply("ann@riverside.example", "RXA: complete"), to=reply_to(ann))

    assert finished_at_once == [True]
    assert message.state == InboundState.PROCESSED, message.outcome
    assert pending(session) == [("RXA", "complete")]


def test_a_reply_parsed_before_the_persons_access_changed_is_parsed_again_outside(
    runtime: Runtime,
    keys: dict[str, Delivery],
    session: Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mailflow.answers import alert_reply_key

    li = keys["li@itservices.example"]
    finished_at_once: list[bool] = []
    parse_while_someone_writes = parsing_while_someone_writes(runtime, finished_at_once)

    # The first parse saw Li holding only RXB (her RXC access came later).
    real_beforehand = alert_reply_key._parse_beforehand

    def stale(*args: Any, **kwargs: Any) -> Any:
        parsed = real_beforehand(*args, **kwargs)
        return dataclasses.replace(parsed, held=("RXB",)) if parsed else None

    monkeypatch.setattr(alert_reply_key, "_parse_beforehand", stale)
    monkeypatch.setattr(alert_reply_key, "parse_reply", parse_while_someone_writes)
    message = receive(
        runtime, reply("li@itservices.example", "RXB, RXC: complete"), to=reply_to(li)
    )

    assert finished_at_once == [True, True]
    assert message.state == InboundState.PROCESSED, message.outcome
    assert sorted(pending(session)) == [("RXB", "complete"), ("RXC", "complete")]
