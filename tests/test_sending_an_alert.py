"""Alert emails go out through a real SMTP relay, once per recipient."""

from __future__ import annotations

import re
import time
from email.message import EmailMessage

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailflow.alerts.fanout import deliver_alert
from mailflow.answers.reply_form import parse_reply
from mailflow.answers.statuses import AnswerStatus
from mailflow.cli.main import cli
from mailflow.config import Settings
from mailflow.core.links import ANSWER_LINK
from mailflow.core.models import AuditEvent, Delivery, DeliveryState, Job, JobState, User
from mailflow.core.runtime import Runtime, utc_now
from mailflow.workers.queue import JobQueue
from tests.support.relay import CapturingRelay
from tests.support.seed import AUDIENCE_RECIPIENTS, NOW, issue, seed_people
from tests.support.waiting import run_worker_until_settled, states

LINK = re.compile(r"https://mailflow\.test/r/[A-Za-z0-9_.\-]+")


def bodies(message: EmailMessage) -> tuple[str, str]:
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    return parts[0].get_content(), parts[1].get_content()


@pytest.fixture
def issued(session: Session) -> int:
    seed_people(session)
    alert_id = issue(session).alert.id
    session.commit()
    return alert_id


@pytest.fixture
def runtime(settings: Settings) -> Runtime:
    rt = Runtime(settings)
    yield rt
    rt.close()


def test_every_recipient_of_a_three_organisation_alert_gets_one_correct_email(
    issued: int, runtime: Runtime, relay: CapturingRelay, session: Session, settings: Settings
) -> None:
    run_worker_until_settled(runtime, issued)

    received = relay.received
    assert sorted(r.recipients[0] for r in received) == sorted(AUDIENCE_RECIPIENTS)
    assert all(len(r.recipients) == 1 for r in received)

    deliveries = {
        d.user.email: d
        for d in session.scalars(select(Delivery).where(Delivery.alert_id == issued))
    }
    assert {d.state for d in deliveries.values()} == {DeliveryState.SENT}
    tokens = ANSWER_LINK.tokens(settings)
    for envelope in received:
        email_address = envelope.recipients[0]
        delivery = deliveries[email_address]
        user = session.get(User, delivery.user_id)
        assert user is not None
        message = envelope.message

        assert envelope.mail_from == f"bounce+{delivery.bounce_key}@alerts.test"
        assert message["Reply-To"] == f"reply+{delivery.reply_key}@alerts.test"
        assert message["Message-ID"] == f"<{delivery.message_id}>"
        assert message["Message-ID"].endswith("@alerts.test>")
        assert message["Auto-Submitted"] == "auto-generated"
        assert message["X-Auto-Response-Suppress"] == "All"
        assert message["To"].addresses[0].addr_spec == email_address
        # Reference and severity first, short enough for a phone's list.
        assert message["Subject"].startswith("[CC-4720 HIGH] ")
        assert len(f"Subject: {message['Subject']}") <= 78
        text, html = bodies(message)
        assert "Remote code execution in Example VPN Gateway" in text
        assert 'lang="en-GB"' in html and 'role="presentation"' in html

        text_links = set(LINK.findall(text.replace("=\n", "")))
        html_links = set(LINK.findall(html))
        assert text_links == html_links
        answered = set()
        for link in text_links:
            # Signed when sent (the worker's clock), which in a long run can
            # be minutes after the seed's NOW.
            payload = tokens.verify(link.rsplit("/", 1)[1], now=utc_now())
            assert payload["u"] == user.id and payload["a"] == issued
            assert payload["d"] == delivery.id
            answered.add((payload["o"], payload["s"]))
        answerable = {
            m.organisation_id
            for m in user.memberships
            if m.role != "alert-only" and m.organisation.code in {"RXA", "RXB", "RXC"}
        }
        assert answered == {(org, s.value) for org in answerable for s in AnswerStatus}

        if email_address == "tom@castleton.example":
            # Alert-only: the alert, without links or a form.
            assert not text_links and "REPLY TO THIS EMAIL" not in text
            assert "Respond by" not in message["Subject"]
        else:
            assert message["Subject"].startswith("[CC-4720 HIGH] Respond by ")
            codes = sorted(m.organisation.code for m in user.memberships)
            # The form shown in the email is one the reply parser reads back.
            example = f"{codes[0]}: complete"
            assert example in text
            assert [a.organisation for a in parse_reply(example, held=codes, today=NOW.date())] == [
                codes[0]
            ]

    sent_events = session.scalar(select(func.count()).where(AuditEvent.action == "delivery.sent"))
    assert sent_events == len(AUDIENCE_RECIPIENTS)
    job = session.scalars(select(Job)).one()
    assert job.state == JobState.DONE


def test_running_the_fan_out_again_sends_nothing_twice(
    issued: int, runtime: Runtime, relay: CapturingRelay, session: Session
) -> None:
    queue = JobQueue(runtime)
    job_id = session.scalars(select(Job.id)).one()
    # The same queue message delivered twice before anything ran, as a
    # broker may do after a lost acknowledgement.
    queue.actor.send(job_id)
    queue.actor.send(job_id)
    run_worker_until_settled(runtime, issued)
    assert len(relay.received) == len(AUDIENCE_RECIPIENTS)

    # And the job and its handler run again after everything was sent.
    queue.actor.fn(job_id)
    assert deliver_alert(runtime, issued) is None
    time.sleep(0.2)
    assert len(relay.received) == len(AUDIENCE_RECIPIENTS)
    assert states(runtime.sessions, issued) == {"sent": len(AUDIENCE_RECIPIENTS)}


@pytest.fixture
def one_recipient(session: Session) -> int:
    seed_people(session)
    alert_id = issue(session, audience={"organisations": ["RXD"]}).alert.id
    session.commit()
    return alert_id


def test_a_relay_answering_451_then_250_delivers_once(
    one_recipient: int, runtime: Runtime, relay: CapturingRelay, session: Session
) -> None:
    relay.handler.data_replies = ["451 4.3.0 Try again later"]
    run_worker_until_settled(runtime, one_recipient)

    assert [r.recipients for r in relay.received] == [["dee@dunmore.example"]]
    delivery = session.scalars(select(Delivery).where(Delivery.alert_id == one_recipient)).one()
    assert delivery.state == DeliveryState.SENT
    assert delivery.attempts == 2
    deferred = session.scalars(
        select(AuditEvent).where(AuditEvent.action == "delivery.deferred")
    ).one()
    assert deferred.details["error"].startswith("451 4.3.0 Try again later")


def test_a_relay_answering_550_marks_the_delivery_failed(
    one_recipient: int,
    runtime: Runtime,
    relay: CapturingRelay,
    session: Session,
    settings: Settings,
) -> None:
    relay.handler.data_replies = ["550 5.1.1 No such mailbox here"]
    run_worker_until_settled(runtime, one_recipient)
    time.sleep(0.5)  # longer than the retry delay: a retry would have happened

    assert relay.received == []
    delivery = session.scalars(select(Delivery).where(Delivery.alert_id == one_recipient)).one()
    assert delivery.state == DeliveryState.FAILED
    assert delivery.attempts == 1
    assert delivery.last_error == "550 5.1.1 No such mailbox here"

    env = {"MAILFLOW_DATABASE_URL": settings.database_url, "MAILFLOW_SECRET_KEY": "k" * 40}
    result = CliRunner().invoke(cli, ["alert", "show", "CC-4720"], env=env)
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "dee@dunmore.example" in line)
    assert "failed" in row and "550 5.1.1 No such mailbox here" in row
    assert "1 failed" in result.output


def test_a_relay_that_is_down_leaves_deliveries_deferred_until_it_is_back(
    one_recipient: int,
    settings_for: object,
    database_url: str,
    session: Session,
) -> None:
    from mailflow.config import parse_relay
    from tests.support.relay import free_port

    port = free_port()
    settings = settings_for(  # type: ignore[operator]
        database_url,
        smtp_relay=parse_relay(f"smtp://127.0.0.1:{port}"),
        send_retry_base_seconds=0.3,
    )
    runtime = Runtime(settings)
    try:
        deliver_alert(runtime, one_recipient)
        delivery = session.scalars(select(Delivery)).one()
        session.refresh(delivery)
        assert delivery.state == DeliveryState.DEFERRED
        assert delivery.last_error
        relay = CapturingRelay()
        relay.controller.port = port
        with relay:
            run_worker_until_settled(runtime, one_recipient)
            assert [r.recipients for r in relay.received] == [["dee@dunmore.example"]]
    finally:
        runtime.close()


def test_on_the_embedded_defaults_mail_lands_in_the_local_maildir(
    issued: int, settings_for: object, database_url: str, tmp_path: object
) -> None:
    import mailbox
    from email import message_from_bytes
    from email.policy import default

    settings = settings_for(database_url)  # type: ignore[operator]
    assert settings.smtp_relay is None
    runtime = Runtime(settings)
    try:
        run_worker_until_settled(runtime, issued)
    finally:
        runtime.close()
    box = mailbox.Maildir(settings.maildir, create=False)
    messages = [message_from_bytes(m.as_bytes(), policy=default) for m in box]
    assert sorted(m["Delivered-To"] for m in messages) == sorted(AUDIENCE_RECIPIENTS)
    assert all(m["Return-Path"].startswith("<bounce+") for m in messages)
    assert all(m["Reply-To"].startswith("reply+") for m in messages)


def test_a_large_audience_is_sent_by_several_jobs_each_email_once(
    runtime: Runtime,
    settings: Settings,
    relay: CapturingRelay,
    session: Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Several jobs, run by two workers at once (as on two machines), share
    one alert's fan-out: each claims its own deliveries."""
    from mailflow.alerts import issuing
    from mailflow.workers.queue import QueueWorker
    from tests.support.seed import seed_crowd
    from tests.support.waiting import settled, wait_until

    monkeypatch.setattr(issuing, "EMAILS_PER_SENDER", 10)
    crowd = seed_crowd(session, organisations=12, per_organisation=5)
    alert_id = issue(session, audience={"organisations": crowd.org_codes}).alert.id
    session.commit()
    jobs = session.scalar(select(func.count()).where(Job.kind == "deliver_alert"))
    assert jobs == issuing.MAX_SENDERS

    second = Runtime(settings)
    workers = [QueueWorker(runtime, poll_seconds=0.05), QueueWorker(second, poll_seconds=0.05)]
    for worker in workers:
        worker.start()
    try:
        wait_until(lambda: settled(runtime.sessions, alert_id), timeout=60, what="the fan-out")
    finally:
        for worker in workers:
            worker.stop()
        second.close()

    assert sorted(r.recipients[0] for r in relay.received) == sorted(crowd.emails)
    assert states(runtime.sessions, alert_id) == {"sent": len(crowd.emails)}


def test_how_many_jobs_send_an_alert() -> None:
    from mailflow.alerts.issuing import EMAILS_PER_SENDER, MAX_SENDERS, senders_for

    assert senders_for(0) == 1
    assert senders_for(EMAILS_PER_SENDER) == 1
    assert senders_for(EMAILS_PER_SENDER + 1) == 2
    assert senders_for(EMAILS_PER_SENDER * 100) == MAX_SENDERS
