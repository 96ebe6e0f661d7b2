"""A person added to mailflow is welcomed for what they will do: those who
answer get a link to set up an authenticator app, auditors one to read the
reports, and alert-only contacts no link at all.  A welcome that bounces
(a mistyped address) is shown in `users list` and reported to the
administrators of the person's organisations."""

from __future__ import annotations

import re
import smtplib
from collections.abc import Iterator
from email.message import EmailMessage

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailflow.cli.main import cli
from mailflow.config import Settings
from mailflow.core.models import InboundMessage, InboundState, OutgoingEmail, User
from mailflow.core.runtime import Runtime
from mailflow.gateway.smtpd import InboundServer
from mailflow.people.users import add_user
from mailflow.people.welcome_email import queue_welcome_email
from mailflow.workers.key_kinds import REPLY_KEY_KINDS
from mailflow.workers.queue import QueueWorker
from tests.support.cli import mailflow_with
from tests.support.environment import SECRET_KEY
from tests.support.mail import delivery_report, html_text, parsed, plain_text
from tests.support.relay import CapturingRelay
from tests.support.seed import NOW, seed_people
from tests.support.waiting import wait_until

NIA = "nia@riverside.example"
APP = "authenticator app"


@pytest.fixture
def people(session: Session) -> Session:
    seed_people(session)
    session.commit()
    return session


def welcome(
    session: Session, settings: Settings, roles: list[tuple[str, str | None]]
) -> tuple[EmailMessage, str | None]:
    """Add Nia Shah with these roles, welcome her, and return the email and
    its enrolment link."""
    for role, org in roles:
        add_user(
            session, email=NIA, name="Nia Shah", role=role, org_code=org, now=NOW, actor="test"
        )
    nia = session.scalars(select(User).where(User.email == NIA)).one()
    link = queue_welcome_email(session, settings, user=nia, now=NOW)
    session.commit()
    email = session.scalars(select(OutgoingEmail).where(OutgoingEmail.user_id == nia.id)).one()
    return parsed(email.raw), link


def test_a_responder_is_asked_to_set_up_an_authenticator_app_to_record_answers(
    people: Session, settings: Settings
) -> None:
    message, link = welcome(people, settings, [("responder", "RXA")])
    text = plain_text(message)
    assert str(message["Subject"]) == "Welcome to Cyber alerts: set up your authenticator app"
    assert "added to Cyber alerts for Riverside Acute NHS Trust (RXA)" in text
    assert "record how your organisation is responding" in text
    assert f"Before you can record an answer, set up an {APP}" in text
    assert link is not None and link.startswith("https://mailflow.test/enrol/")
    assert link in text and f'href="{link}"' in html_text(message)
    assert "decide who may answer" not in text


def test_an_administrator_is_also_told_they_decide_who_answers(
    people: Session, settings: Settings
) -> None:
    message, link = welcome(people, settings, [("administrator", "RXB")])
    text = plain_text(message)
    assert "as an administrator you also decide who may answer for it" in text
    assert link is not None and link in text


def test_an_auditor_is_told_reports_will_come_that_they_only_read(
    people: Session, settings: Settings
) -> None:
    message, link = welcome(people, settings, [("auditor", None)])
    text = plain_text(message)
    assert "scheduled digests" in text and "auditors do not answer alerts" in text
    assert f"To open the full reports behind a digest's link, set up an {APP}" in text
    assert "record an answer" not in text
    assert link is not None and link in text


def test_an_alert_only_contact_gets_alerts_for_information_and_no_link(
    people: Session, settings: Settings
) -> None:
    message, link = welcome(people, settings, [("alert-only", "RXC")])
    text, html = plain_text(message), html_text(message)
    assert str(message["Subject"]) == "Welcome to Cyber alerts"
    assert "for your information" in text and "nothing for you to set up" in text
    assert link is None
    assert "/enrol/" not in text and "/enrol/" not in html
    assert APP not in text and APP not in html


def test_a_person_with_several_roles_is_welcomed_for_the_strongest(
    people: Session, settings: Settings
) -> None:
    message, link = welcome(people, settings, [("alert-only", "RXA"), ("responder", "RXB")])
    text = plain_text(message)
    assert "for Riverside Acute NHS Trust (RXA), Brookfield Community NHS Trust (RXB)" in text
    assert f"Before you can record an answer, set up an {APP}" in text
    assert link is not None and link in text


def test_an_auditor_who_also_gets_alerts_is_welcomed_as_an_auditor(
    people: Session, settings: Settings
) -> None:
    message, link = welcome(people, settings, [("alert-only", "RXA"), ("auditor", None)])
    assert "auditors do not answer alerts" in plain_text(message)
    assert link is not None


def test_an_alert_only_contact_given_a_role_that_answers_is_then_sent_a_link(
    people: Session, settings: Settings
) -> None:
    """Added as alert-only, Nia got no link.  Made a responder later, she
    is welcomed again, with one: otherwise she could never answer.  Made a
    responder somewhere else after that, she is not welcomed a third time."""

    def add(role: str, org: str) -> str:
        result = mailflow_with(
            settings, "users", "add", NIA, "--name", "Nia Shah", "--role", role, "--org", org
        )
        assert result.exit_code == 0, result.output
        return result.stderr

    def welcomes() -> list[EmailMessage]:
        people.expire_all()
        rows = people.scalars(
            select(OutgoingEmail.raw)
            .where(OutgoingEmail.recipient == NIA)
            .order_by(OutgoingEmail.id)
        )
        return [parsed(raw) for raw in rows]

    assert "no set-up needed" in add("alert-only", "RXC")
    assert "a link to set up an authenticator app" in add("responder", "RXA")
    assert add("responder", "RXB") == ""

    first, second = welcomes()
    assert "/enrol/" not in plain_text(first)
    assert f"Before you can record an answer, set up an {APP}" in plain_text(second)
    assert "https://mailflow.test/enrol/" in plain_text(second)


def test_every_welcome_says_whom_to_write_to_with_a_question(
    people: Session, settings_for: object, database_url: str
) -> None:
    desk: Settings = settings_for(database_url, help_email="desk@nhs.example")  # type: ignore[operator]
    message, _ = welcome(people, desk, [("alert-only", "RXC")])
    assert plain_text(message).rstrip().endswith("Questions? Write to desk@nhs.example")
    assert 'Questions? Write to <a href="mailto:desk@nhs.example"' in html_text(message)


# ----------------------------------------------------------- a welcome bounces


@pytest.fixture
def running(settings: Settings, people: Session) -> Iterator[InboundServer]:
    runtime = Runtime(settings)
    server = InboundServer(runtime, "127.0.0.1", 0, key_kinds=REPLY_KEY_KINDS)
    worker = QueueWorker(runtime, poll_seconds=0.05)
    server.start()
    worker.start()
    try:
        yield server
    finally:
        worker.stop()
        server.stop()
        runtime.close()


def users_list(settings: Settings) -> dict[str, str]:
    env = {"MAILFLOW_DATABASE_URL": settings.database_url, "MAILFLOW_SECRET_KEY": SECRET_KEY}
    shown = CliRunner().invoke(cli, ["users", "list"], env=env)
    assert shown.exit_code == 0, shown.output
    return {line.split()[0]: line for line in shown.output.splitlines()}


def processed_inbound(session: Session, count: int) -> None:
    def done() -> bool:
        session.rollback()
        states = list(session.scalars(select(InboundMessage.state)))
        return len(states) == count and InboundState.RECEIVED not in states

    wait_until(done, timeout=20, what=f"{count} inbound messages to be processed")


def test_a_welcome_to_a_mistyped_address_bounces_and_the_administrators_are_told(
    running: InboundServer, people: Session, settings: Settings, relay: CapturingRelay
) -> None:
    mistyped = "nia@riversdie.example"
    add_user(
        people, email=mistyped, name="Nia Shah", role="responder", org_code="RXA", now=NOW,
        actor="test",
    )  # fmt: skip
    nia = people.scalars(select(User).where(User.email == mistyped)).one()
    queue_welcome_email(people, settings, user=nia, now=NOW)
    people.commit()

    # The welcome goes out from a bounce address of its own.
    [sent] = relay.wait_for(1)
    assert sent.recipients == [mistyped]
    bounce_to = sent.mail_from
    assert re.fullmatch(r"bounce\+[a-z2-7]{32}@alerts\.test", bounce_to)

    # Her mail server cannot find the mailbox and says so, over SMTP.
    with smtplib.SMTP("127.0.0.1", running.port) as client:
        client.sendmail("<>", [bounce_to], delivery_report(bounce_to, mistyped))
    _, notice = relay.wait_for(2)

    # Ann administers RXA: she is told, and can put the address right.
    assert notice.recipients == ["ann@riverside.example"]
    assert str(notice.message["Subject"]) == f"Not delivered: the welcome email to {mistyped}"
    text = plain_text(notice.message)
    assert f"The welcome email to Nia Shah ({mistyped})" in text
    assert "for Riverside Acute NHS Trust (RXA)" in text and "5.1.1" in text
    assert notice.mail_from != bounce_to and notice.mail_from.startswith("bounce+")
    listed = users_list(settings)
    assert re.search(r"welcome: bounced \d{4}-\d\d-\d\d \(bounced: 5\.1\.1", listed[mistyped])
    assert "welcome: bounced" not in listed["raj@riverside.example"]

    # A second report about the same welcome tells no one again, and a
    # report about the notice itself is only recorded: nothing loops.
    with smtplib.SMTP("127.0.0.1", running.port) as client:
        client.sendmail("<>", [bounce_to], delivery_report(bounce_to, mistyped))
        client.sendmail(
            "<>", [notice.mail_from], delivery_report(notice.mail_from, "ann@riverside.example")
        )
    processed_inbound(people, 3)
    assert len(relay.received) == 2
    bounced = people.scalar(select(func.count()).where(OutgoingEmail.bounced_at.is_not(None)))
    assert bounced == 2
