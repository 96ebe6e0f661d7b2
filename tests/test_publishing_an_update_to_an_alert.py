"""A publisher updates an alert with `mailflow alert update REF FILE`: what
changed (new remediation text, new CVEs) goes to everyone the alert was
sent to, in the alert's email thread, one email each; an update that says
"answer again" clears every organisation's status and starts a new round
with its own deadline, which the scheduler chases afresh.  A bad file is
refused with the field named, and changes nothing."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailflow.alerts.alert_files import parse_update_spec
from mailflow.alerts.update_email import compose_alert_update
from mailflow.alerts.updates import publish_update
from mailflow.config import Settings
from mailflow.core.links import ANSWER_LINK
from mailflow.core.models import (
    Alert,
    AlertStatus,
    AlertUpdate,
    Answer,
    AuditEvent,
    ChaseKind,
    ChaserEmail,
    ChaserEmailState,
    Delivery,
    Job,
    OutgoingEmail,
    User,
)
from mailflow.core.models.chasing import SEND_CHASERS
from mailflow.core.runtime import Runtime
from mailflow.people.users import remove_user
from mailflow.workers.outgoing import send_outgoing
from tests.support.alert_lifecycle import (
    DEADLINE,
    ISSUED,
    answer,
    chase,
    chaser_emails,
    issue_at,
)
from tests.support.cli import mailflow_with, one_error_line
from tests.support.mail import html_text, parsed, plain_text
from tests.support.relay import CapturingRelay
from tests.support.seed import AUDIENCE_RECIPIENTS, NOW

UPDATE = """\
summary = "Version 9.4.2 does not fix the flaw in every configuration."
remediation = "Upgrade to 9.4.3."
cves = ["CVE-2026-41234", "cve-2026-41299"]
"""
# A Monday morning after the first round's deadline (Thursday 15:00).
MONDAY = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


@pytest.fixture
def alert_id(session: Session) -> int:
    return issue_at(session, ISSUED)


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime(settings)
    yield rt
    rt.close()


def update_file(tmp_path: Path, text: str, name: str = "update.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def published(session: Session, text: str, at: datetime) -> None:
    """Publish the update in ``text`` (TOML) as at ``at``."""
    import tomllib

    spec = parse_update_spec(tomllib.loads(text), source="test")
    publish_update(session, "CC-4720", spec, now=at, actor="test")
    session.commit()


def update_email_to(session: Session, settings: Settings, who: str, at: datetime) -> Any:
    """The update email composed for ``who`` from their queued chaser email."""
    session.rollback()
    chaser = session.scalars(
        select(ChaserEmail)
        .join(User, User.id == ChaserEmail.user_id)
        .where(User.email == who, ChaserEmail.kind == ChaseKind.ALERT_UPDATE)
        .order_by(ChaserEmail.id.desc())
    ).first()
    assert chaser is not None
    outgoing = compose_alert_update(session, settings, chaser, at)
    assert isinstance(outgoing, OutgoingEmail), outgoing
    session.commit()
    return outgoing


def delivery_of(session: Session, who: str) -> Delivery:
    return session.scalars(select(Delivery).join(User).where(User.email == who)).one()


def test_an_update_queues_one_email_per_active_recipient_and_is_audited(
    alert_id: int, settings: Settings, session: Session, tmp_path: Path
) -> None:
    remove_user(session, email="tom@castleton.example", org_code=None, now=NOW, actor="test")
    # Sam stays active but no longer answers for RXC, his one organisation.
    remove_user(session, email="sam@castleton.example", org_code="RXC", now=NOW, actor="test")
    session.commit()

    result = mailflow_with(
        settings, "alert", "update", "CC-4720", str(update_file(tmp_path, UPDATE))
    )

    assert result.exit_code == 0, result.stderr
    assert result.stdout == "CC-4720 update 1\n"
    assert "CVEs added: CVE-2026-41299" in result.stderr
    session.rollback()
    alert = session.get_one(Alert, alert_id)
    assert alert.remediation == "Upgrade to 9.4.3."
    assert alert.cves == ["CVE-2026-41234", "CVE-2026-41299"]
    assert (alert.round, alert.deadline_at) == (1, DEADLINE)
    [update] = session.scalars(select(AlertUpdate))
    assert (update.number, update.cves, update.answer_again) == (1, ["CVE-2026-41299"], False)
    # Everyone the alert went to, but Tom and Sam, whose access was removed.
    gone = {"tom@castleton.example", "sam@castleton.example"}
    assert chaser_emails(session) == {
        ("alert-update", "u1", who): 1 for who in AUDIENCE_RECIPIENTS - gone
    }
    batches = set(session.scalars(select(ChaserEmail.batch)))
    assert len(batches) == 1
    assert set(session.scalars(select(ChaserEmail.state))) == {ChaserEmailState.QUEUED}
    [job] = session.scalars(select(Job).where(Job.kind == SEND_CHASERS))
    assert job.payload == {"batch": batches.pop()}
    [event] = session.scalars(select(AuditEvent).where(AuditEvent.action == "alert.updated"))
    assert event.subject == "alert:CC-4720"
    assert event.details["number"] == 1
    assert event.details["cves_added"] == ["CVE-2026-41299"]
    assert event.details["recipients"] == 4

    second = mailflow_with(
        settings, "alert", "update", "CC-4720", str(update_file(tmp_path, 'summary = "More."\n'))
    )
    assert second.stdout == "CC-4720 update 2\n"
    assert {step for _, step, _ in chaser_emails(session)} == {"u1", "u2"}


def test_the_update_email_is_in_the_alert_thread_and_says_what_changed(
    alert_id: int, settings: Settings, runtime: Runtime, relay: CapturingRelay, session: Session
) -> None:
    published(session, UPDATE, NOW)
    ann = delivery_of(session, "ann@riverside.example")

    outgoing = update_email_to(session, settings, "ann@riverside.example", NOW)

    message = parsed(outgoing.raw)
    assert message["Subject"] == (
        "Update 1 to CC-4720: Version 9.4.2 does not fix the flaw in every..."
    )
    assert message["To"] == "Ann Lee <ann@riverside.example>"
    assert message["In-Reply-To"] == f"<{ann.message_id}>"
    assert message["References"] == f"<{ann.message_id}>"
    assert message["Message-ID"] not in (f"<{ann.message_id}>", None)
    assert message["Reply-To"] == f"reply+{ann.reply_key}@alerts.test"
    assert message["Auto-Submitted"] == "auto-generated"
    text = plain_text(message)
    assert "Version 9.4.2 does not fix the flaw in every configuration." in text
    assert "REMEDIATION (UPDATED)\nUpgrade to 9.4.3." in text.replace("\r\n", "\n")
    assert "NEW CVES\n- CVE-2026-41299\n" in text.replace("\r\n", "\n")
    assert "CVE-2026-41234" not in text
    # Nothing to answer: no status links, and their status stands.
    assert "/r/" not in text
    assert "You do not need to answer again" in text
    assert "Upgrade to 9.4.3." in html_text(message)

    # Sent as composed, from a bounce address of its own.
    send_outgoing(runtime, outgoing.id)
    [received] = relay.wait_for(1)
    assert received.recipients == ["ann@riverside.example"]
    assert received.mail_from == f"bounce+{outgoing.bounce_key}@alerts.test"
    assert received.message["In-Reply-To"] == f"<{ann.message_id}>"
    assert received.message["Subject"] == message["Subject"]


def test_an_update_asking_to_answer_again_starts_a_new_round_chased_afresh(
    alert_id: int, settings: Settings, runtime: Runtime, session: Session
) -> None:
    chase(runtime, DEADLINE - timedelta(hours=23))
    answer(session, alert_id, "raj@riverside.example", "RXA", DEADLINE - timedelta(hours=5))
    chase(runtime, DEADLINE)

    published(
        session,
        'summary = "A second flaw: check again."\nanswer_again = true\ndeadline_hours = 48\n',
        MONDAY,
    )

    session.rollback()
    alert = session.get_one(Alert, alert_id)
    assert (alert.round, alert.deadline_at) == (2, MONDAY + timedelta(hours=48))
    assert session.scalars(select(AlertUpdate)).one().deadline_at == alert.deadline_at
    # RXA's answer is history now: kept, but no longer its status.
    assert session.scalar(select(func.count()).select_from(AlertStatus)) == 0
    assert session.scalar(select(func.count()).select_from(Answer)) == 1
    # Tuesday 10:00, the 24-hour point of the new round: every organisation
    # is reminded, RXA too, under the new round's step.
    assert chase(runtime, MONDAY + timedelta(hours=25)) == [
        "chasing: CC-4720: 24-hour reminder for 3 organisation(s), 5 email(s)"
    ]
    assert {step for kind, step, _ in chaser_emails(session) if kind == "reminder"} == {
        "r1:24h",
        "r2:24h",
    }

    # Li Chen's update email asks again, with fresh links for both trusts.
    li = delivery_of(session, "li@itservices.example")
    text = plain_text(
        parsed(update_email_to(session, settings, "li@itservices.example", MONDAY).raw)
    )
    assert "ANSWER AGAIN by Wednesday 9 December 2026 at 09:00 GMT" in text
    links = re.findall(r"https://mailflow\.test/r/(\S+)", text)
    assert len(links) == 8
    payloads = [ANSWER_LINK.tokens(settings).verify(t, now=MONDAY) for t in links]
    assert {p["d"] for p in payloads} == {li.id}
    assert {p["s"] for p in payloads} == {"complete", "in_progress", "not_applicable", "unable"}
    assert "RXB:" in text and "RXC:" in text


@pytest.mark.parametrize(
    ("text", "name", "problem"),
    [
        ('remediation = "x"\n', "update.toml", "field summary: this field is required"),
        ('summary = "x"\ncolour = "red"\n', "update.toml", "field colour: unknown field"),
        ('summary = "  "\n', "update.toml", "field summary: String should have at least 1"),
        ('summary = "x"\nanswer_again = "yes"\n', "update.toml", "field answer_again: Input"),
        ('summary = "x"\ncves = ["CVE-26"]\n', "update.toml", "field cves: Value error, 'CVE-26'"),
        ('summary = "x"\ndeadline_hours = 24\n', "update.toml", "field deadline_hours: Value"),
        (
            'summary = "x"\nanswer_again = true\ndeadline_hours = 0\n',
            "update.toml",
            "field deadline_hours: Input should be greater than or equal to 1",
        ),
        ('summary = "x', "update.toml", "not valid TOML"),
        ('{"summary": 3}', "update.json", "field summary: Input should be a valid string"),
        ('summary = "x"\n', "update.txt", "give a .toml or .json file"),
        (f'summary = "{"x" * 300_000}"\n', "update.toml", "longer than 256 KiB"),
    ],
)
def test_a_bad_update_file_is_refused_with_the_field_named_and_nothing_changes(
    alert_id: int,
    settings: Settings,
    session: Session,
    tmp_path: Path,
    text: str,
    name: str,
    problem: str,
) -> None:
    path = update_file(tmp_path, text, name)

    result = mailflow_with(settings, "alert", "update", "CC-4720", str(path))

    assert result.exit_code == 1
    error = one_error_line(result)
    assert error.startswith(f"{path}"), error
    assert problem in error, error
    session.rollback()
    assert session.scalar(select(func.count()).select_from(AlertUpdate)) == 0
    assert session.scalar(select(func.count()).select_from(ChaserEmail)) == 0
    assert session.get_one(Alert, alert_id).remediation == "Upgrade to 9.4.2."
    assert not session.scalars(select(AuditEvent).where(AuditEvent.action == "alert.updated")).all()


def test_an_update_to_an_unknown_alert_is_a_clear_error(
    alert_id: int, settings: Settings, tmp_path: Path
) -> None:
    result = mailflow_with(
        settings, "alert", "update", "CC-9999", str(update_file(tmp_path, UPDATE))
    )

    assert result.exit_code == 1
    assert one_error_line(result) == "no alert CC-9999 (nothing was written)"


@pytest.mark.parametrize("width", [375, 1200])
def test_the_update_email_asking_again_is_never_wider_than_the_screen(
    browser: Any, alert_id: int, settings: Settings, session: Session, width: int
) -> None:
    published(session, UPDATE + "answer_again = true\n", NOW)
    html = html_text(parsed(update_email_to(session, settings, "li@itservices.example", NOW).raw))
    page = browser.new_page(viewport={"width": width, "height": 800})
    try:
        page.set_content(html)
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        rights = page.evaluate(
            "[...document.querySelectorAll('a')].map(a => a.getBoundingClientRect().right)"
        )
        assert len(rights) > 8 and max(rights) <= width
    finally:
        page.close()


def test_an_update_is_not_sent_to_someone_who_left_before_it_was_composed(
    alert_id: int, settings: Settings, session: Session
) -> None:
    published(session, UPDATE, NOW)
    remove_user(session, email="sam@castleton.example", org_code="RXC", now=NOW, actor="test")
    session.commit()
    chaser = session.scalars(
        select(ChaserEmail)
        .join(User, User.id == ChaserEmail.user_id)
        .where(User.email == "sam@castleton.example")
    ).one()

    outcome = compose_alert_update(session, settings, chaser, NOW)

    assert outcome == "the person no longer holds a role at an organisation the alert went to"
    session.rollback()
    assert session.scalars(select(OutgoingEmail)).all() == []
