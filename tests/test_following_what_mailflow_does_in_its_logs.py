"""An operator follows what mailflow does in its log: one line per email
sent (with its delivery and the relay's answer), deferred or failed, per
reply stored and processed, per refusal and per commit, as JSON lines for
a log collector or readable text, and never a token, a key or a whole
address."""

from __future__ import annotations

import json
import logging
import smtplib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.alerts.progress import ProgressPace
from mailflow.answers.statuses import AnswerStatus
from mailflow.config import Settings, parse_imap_url, parse_relay
from mailflow.core.logs import make_formatter
from mailflow.core.models import Delivery, InboundMessage, Organisation, User
from mailflow.core.runtime import Runtime
from mailflow.gateway.imap import ImapPoller
from mailflow.gateway.smtpd import InboundServer
from mailflow.workers.inbound import process_inbound
from mailflow.workers.key_kinds import REPLY_KEY_KINDS
from tests.support.dovecot import DovecotAccount
from tests.support.log_lines import captured_log
from tests.support.mail import a_reply
from tests.support.pages import Web, answer_link, post_form, user_id
from tests.support.relay import CapturingRelay
from tests.support.seed import (
    AUDIENCE_RECIPIENTS,
    delivery_with_keys,
    issue,
    seed_crowd,
    seed_people,
)
from tests.support.waiting import run_worker_until_settled

REFUSED = "tom@castleton.example"
REPLY_KEY = "replykeyofannsdeliveryabcdefghij"


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime(settings)
    yield rt
    rt.close()


def test_a_fan_out_logs_one_json_line_per_email_sent_with_its_delivery_and_the_relays_answer(
    session: Session, runtime: Runtime, relay: CapturingRelay
) -> None:
    seed_people(session)
    alert_id = issue(session).alert.id
    session.commit()
    # Relays often echo the address: a line keeps only its domain.
    relay.handler.refuse[REFUSED] = f"550 5.1.1 <{REFUSED}>: No such user here"

    with captured_log("json") as log:
        run_worker_until_settled(runtime, alert_id)

    lines = log.parsed()
    deliveries = {
        email: (delivery_id, user_id)
        for delivery_id, user_id, email in session.execute(
            select(Delivery.id, Delivery.user_id, User.email)
            .join(User)
            .where(Delivery.alert_id == alert_id)
        )
    }
    sent = log.events("email_sent")
    assert len(relay.received) == len(AUDIENCE_RECIPIENTS) - 1
    assert sorted(line["delivery_id"] for line in sent) == sorted(
        delivery_id for email, (delivery_id, _) in deliveries.items() if email != REFUSED
    )
    for line in sent:
        assert line["relay_reply"] == "250 2.0.0 Message accepted"
        assert line["kind"] == "delivery"
        assert line["level"] == "INFO"
        assert line["logger"] == "mailflow.events"
        assert line["message"] == "email sent"
        assert datetime.fromisoformat(line["time"]).utcoffset() == UTC.utcoffset(None)
        assert line["recipient_domain"].endswith(".example")
    failed = log.events("email_failed")
    assert [(line["delivery_id"], line["user_id"]) for line in failed] == [deliveries[REFUSED]]
    assert failed[0]["reason"] == "550 5.1.1 <…@castleton.example>: No such user here"
    assert REFUSED not in json.dumps(failed)
    assert failed[0]["recipient_domain"] == "castleton.example"
    # A whole address is personal data: the domain and the user's id do.
    text = "\n".join(log.lines)
    for address in AUDIENCE_RECIPIENTS:
        assert address not in text
    assert lines[-1]["event"] == "fanout_progress"
    assert (lines[-1]["sent"], lines[-1]["failed"], lines[-1]["waiting"]) == (5, 1, 0)


def test_a_fan_out_of_many_logs_its_progress_with_the_sent_count_rising_to_the_total(
    session: Session, settings_for: Any, database_url: str, relay: CapturingRelay
) -> None:
    # One connection claims 8 at a time: 40 emails go in 5 batches, and a
    # tiny interval lets every batch log its line.
    settings = settings_for(
        database_url,
        smtp_relay=parse_relay(f"smtp://127.0.0.1:{relay.port}"),
        smtp_connections=1,
        progress_seconds=0.001,
    )
    crowd = seed_crowd(session, organisations=40, per_organisation=1)
    alert_id = issue(session, audience={"organisations": crowd.org_codes}).alert.id
    session.commit()
    runtime = Runtime(settings)
    try:
        with captured_log("json") as log:
            run_worker_until_settled(runtime, alert_id)
    finally:
        runtime.close()

    progress = log.events("fanout_progress")
    sent = [line["sent"] for line in progress]
    assert len(progress) >= 3
    assert sent == sorted(sent)
    assert sent[0] < sent[-1] == 40
    assert {(line["alert_id"], line["total"]) for line in progress} == {(alert_id, 40)}
    assert progress[-1]["waiting"] == 0


def test_progress_is_due_at_most_once_an_interval_on_the_clock_it_is_given() -> None:
    start = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    pace = ProgressPace(start, timedelta(seconds=5))

    assert [pace.due(start + timedelta(seconds=s)) for s in (1, 4.9, 5, 6, 9.9, 10, 10, 16)] == [
        False,
        False,
        True,
        False,
        False,
        True,
        False,
        True,
    ]


def test_a_reply_over_smtp_logs_a_line_when_stored_and_when_processed_and_a_stranger_is_refused(
    session: Session, runtime: Runtime
) -> None:
    delivery_with_keys(session, reply_key=REPLY_KEY, bounce_key="bouncekeyofannsdeliveryabcdefghi")
    session.commit()
    raw = a_reply("ann@riverside.example", f"reply+{REPLY_KEY}@alerts.test", "RXA: complete")
    inbound = InboundServer(runtime, "127.0.0.1", 0, key_kinds=REPLY_KEY_KINDS)
    inbound.start()

    try:
        with captured_log("json") as log:
            with smtplib.SMTP("127.0.0.1", inbound.port) as client:
                client.sendmail("ann@riverside.example", [f"reply+{REPLY_KEY}@alerts.test"], raw)
                with pytest.raises(smtplib.SMTPRecipientsRefused):
                    client.sendmail("x@client.example", ["nobody@alerts.test"], raw)
            message_id = session.scalars(select(InboundMessage.id)).one()
            process_inbound(runtime, message_id)
    finally:
        inbound.stop()

    stored = log.events("reply_stored")
    assert stored == [
        {
            **stored[0],
            "message_id": message_id,
            "size": len(raw),
            "via": "smtp",
            "recipients": 1,
        }
    ]
    processed = log.events("reply_processed")
    assert [(line["message_id"], line["state"]) for line in processed] == [
        (message_id, "processed")
    ]
    assert "confirm" in processed[0]["outcome"]
    refused = log.events("refused")
    assert [(r["via"], r["stage"], r["code"]) for r in refused] == [("smtp", "RCPT", 550)]
    assert "No such mailbox" in refused[0]["reason"]
    text = "\n".join(log.lines)
    assert REPLY_KEY not in text
    assert "nobody@alerts.test" not in text


def test_a_message_polled_from_a_mailbox_logs_a_line_once_stored(
    settings_for: Any, database_url: str, dovecot: DovecotAccount, engine: sa.Engine
) -> None:
    raws = [
        a_reply("ann@riverside.example", "alerts@alerts.test", f"RXA: complete {n}") for n in (1, 2)
    ]
    for raw in raws:
        dovecot.append(raw)
    settings = settings_for(database_url, imap_url=parse_imap_url(dovecot.url()))
    runtime = Runtime(settings)
    poller = ImapPoller(runtime)
    try:
        with captured_log("json") as log:
            poller.poll_once()
            poller.poll_once()
    finally:
        poller.close()
        runtime.close()

    with Session(engine) as session:
        ids = list(session.scalars(select(InboundMessage.id).order_by(InboundMessage.id)))
    stored = log.events("reply_stored")
    assert [(line["message_id"], line["size"], line["via"]) for line in stored] == [
        (ids[0], len(raws[0]), "imap"),
        (ids[1], len(raws[1]), "imap"),
    ]


def test_a_tampered_link_and_a_commit_each_log_a_line_with_ids_and_a_digest_not_the_token(
    web: Web,
) -> None:
    path = answer_link(
        web.db(), web.settings, "raj@riverside.example", "RXA", AnswerStatus.COMPLETE
    )
    token = path.removeprefix("/r/")
    client = web.fresh_client(raise_errors=False)

    with captured_log("json") as log:
        tampered = client.get(path[:-3] + "abc")
        committed = post_form(client, path, {"code": web.code("raj@riverside.example")})

    assert tampered.status_code == 400
    assert committed.status_code == 200
    assert "recorded" in committed.text
    refused = log.events("refused")
    assert [(r["via"], r["status"], r["route"], r["reason"]) for r in refused] == [
        ("web", 400, "/r/{token}", "This link is not valid")
    ]
    assert refused[0]["token_digest"].startswith("sha256:")
    answered = log.events("answer_committed")
    assert len(answered) == 1
    assert answered[0]["route"] == "/r/{token}"
    assert answered[0]["user_id"] == user_id(web.db(), "raj@riverside.example")
    rxa = web.db().scalars(select(Organisation.id).where(Organisation.code == "RXA")).one()
    assert answered[0]["organisation_ids"] == [rxa]
    assert len(answered[0]["answer_ids"]) == 1
    assert token not in "\n".join(log.lines)
    assert token[:-3] not in "\n".join(log.lines)


def test_the_text_format_shows_an_events_fields_and_keeps_a_multi_line_reason_on_one_line() -> None:
    record = logging.LogRecord("mailflow.events", logging.INFO, __file__, 1, "refused", (), None)
    for name, value in {
        "event": "refused",
        "event_fields": ("via", "reason", "code"),
        "via": "smtp",
        "reason": 'bad\r\n250 OK "forged"',
        "code": 550,
    }.items():
        setattr(record, name, value)

    line = make_formatter("text").format(record)

    assert "\n" not in line and "\r" not in line
    assert line.endswith(
        ' INFO mailflow.events: refused event=refused via=smtp reason="bad\\r\\n250 OK '
        '\\"forged\\"" code=550'
    )
