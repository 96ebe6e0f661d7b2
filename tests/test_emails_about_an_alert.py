"""Every email about an alert joins the thread of the alert email its
reader received: "confirm your answer" and "not recorded" after the
person's reply, receipts under each reader's own alert email.  And every
email says whom to write to with a question."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.answers.answer_values import AnswerValue
from mailflow.answers.receipts import queue_receipts
from mailflow.answers.recording import record_answers
from mailflow.answers.statuses import AnswerStatus
from mailflow.cli.main import cli
from mailflow.config import Settings
from mailflow.core.models import Alert, Delivery, Organisation, OutgoingEmail, User
from mailflow.core.runtime import Runtime
from tests.support.environment import SECRET_KEY
from tests.support.mail import a_reply, html_text, parsed, plain_text, receive
from tests.support.seed import NOW, issue, seed_people

DOMAIN = "alerts.test"
HELP = "desk@nhs.example"


@pytest.fixture
def desk_settings(settings_for: object, database_url: str, settings: Settings) -> Settings:
    made: Settings = settings_for(  # type: ignore[operator]
        database_url, smtp_relay=settings.smtp_relay, help_email=HELP
    )
    return made


@pytest.fixture
def runtime(desk_settings: Settings) -> Iterator[Runtime]:
    rt = Runtime(desk_settings)
    yield rt
    rt.close()


@pytest.fixture
def deliveries(session: Session) -> dict[str, Delivery]:
    """CC-4720 issued to RXA, RXB and RXC: each recipient's alert email."""
    seed_people(session)
    issue(session)
    session.commit()
    return {d.user.email: d for d in session.scalars(select(Delivery))}


def sent_back(session: Session) -> list[OutgoingEmail]:
    session.rollback()
    return list(session.scalars(select(OutgoingEmail).order_by(OutgoingEmail.id)))


def reply_from_ann(runtime: Runtime, ann: Delivery, body: str, message_id: str) -> None:
    raw = a_reply("Ann Lee <ann@riverside.example>", "x", body, message_id=message_id)
    receive(
        runtime,
        raw,
        to=f"reply+{ann.reply_key}@{DOMAIN}",
        envelope_from="ann@riverside.example",
    )


def test_the_confirm_email_is_threaded_under_the_alert_after_the_persons_reply(
    runtime: Runtime, deliveries: dict[str, Delivery], session: Session
) -> None:
    ann = deliveries["ann@riverside.example"]
    reply_from_ann(runtime, ann, "RXA: complete", "<r1.ann@client.example>")
    [confirm] = [parsed(e.raw) for e in sent_back(session)]
    assert (
        str(confirm["Subject"])
        == "Confirm your answer: CC-4720 Remote code execution in Example VPN..."
    )
    assert confirm["In-Reply-To"] == "<r1.ann@client.example>"
    assert confirm["References"] == f"<{ann.message_id}> <r1.ann@client.example>"


def test_a_not_recorded_email_is_threaded_the_same_way(
    runtime: Runtime, deliveries: dict[str, Delivery], session: Session
) -> None:
    ann = deliveries["ann@riverside.example"]
    reply_from_ann(runtime, ann, "RXA: mostly sorted", "<r2.ann@client.example>")
    [problem] = [parsed(e.raw) for e in sent_back(session)]
    assert "was not recorded" in str(problem["Subject"])
    assert problem["In-Reply-To"] == "<r2.ann@client.example>"
    assert problem["References"] == f"<{ann.message_id}> <r2.ann@client.example>"


def test_a_reply_with_a_malformed_message_id_is_answered_under_the_alert_alone(
    runtime: Runtime, deliveries: dict[str, Delivery], session: Session
) -> None:
    ann = deliveries["ann@riverside.example"]
    reply_from_ann(runtime, ann, "RXA: complete", "<no at sign> <two@ids.example>")
    [confirm] = [parsed(e.raw) for e in sent_back(session)]
    assert confirm["In-Reply-To"] == confirm["References"] == f"<{ann.message_id}>"


def raj_answers_by_link(session: Session, settings: Settings) -> None:
    """Raj records RXA complete on the web page, which queues the receipts."""
    session.rollback()  # read afresh: the inbound worker may have written since
    raj = session.scalars(select(User).where(User.email == "raj@riverside.example")).one()
    alert = session.scalars(select(Alert)).one()
    rxa = session.scalars(select(Organisation).where(Organisation.code == "RXA")).one()
    answers = record_answers(
        session,
        settings,
        user_id=raj.id,
        alert_id=alert.id,
        via="link",
        now=NOW,
        answers=[AnswerValue(rxa.code, AnswerStatus.COMPLETE)],
    )
    queue_receipts(session, settings, user=raj, alert=alert, answers=answers, now=NOW)
    session.commit()


def test_receipts_are_threaded_under_each_readers_own_alert_email(
    deliveries: dict[str, Delivery], session: Session, desk_settings: Settings
) -> None:
    raj_answers_by_link(session, desk_settings)
    receipts = {e.recipient: parsed(e.raw) for e in sent_back(session)}
    assert set(receipts) == {"raj@riverside.example", "ann@riverside.example"}
    for reader, receipt in receipts.items():
        own = f"<{deliveries[reader].message_id}>"
        assert receipt["In-Reply-To"] == receipt["References"] == own


def test_every_email_about_an_alert_says_whom_to_write_to(
    runtime: Runtime, deliveries: dict[str, Delivery], session: Session, desk_settings: Settings
) -> None:
    ann = deliveries["ann@riverside.example"]
    reply_from_ann(runtime, ann, "RXA: complete", "<r3.ann@client.example>")
    reply_from_ann(runtime, ann, "RXA: mostly sorted", "<r4.ann@client.example>")
    raj_answers_by_link(session, desk_settings)
    emails = sent_back(session)
    assert [e.kind for e in emails] == ["confirm_answer", "reply_problem", "receipt", "receipt"]
    for email in emails:
        message = parsed(email.raw)
        assert plain_text(message).rstrip().endswith(f"Questions? Write to {HELP}"), email.kind
        assert f'<a href="mailto:{HELP}"' in html_text(message), email.kind


def test_issuing_an_alert_to_one_person_says_one_email_for_one_organisation(
    session: Session, settings: Settings, tmp_path: object
) -> None:
    seed_people(session)
    session.commit()
    alert_file = tmp_path / "alert.toml"  # type: ignore[operator]
    alert_file.write_text(
        'title = "A flaw"\nseverity = "high"\nsummary = "S"\nremediation = "R"\n'
        '[audience]\norganisations = ["RXD"]\n'
    )
    env = {"MAILFLOW_DATABASE_URL": settings.database_url, "MAILFLOW_SECRET_KEY": SECRET_KEY}
    issued = CliRunner().invoke(cli, ["alert", "issue", str(alert_file)], env=env)
    assert issued.exit_code == 0, issued.output
    assert "1 email queued for 1 organisation\n" in issued.stderr
