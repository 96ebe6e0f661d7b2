"""The auditors' escalation when an alert's deadline passes: which
organisations have not answered (code, name, type, parent), who was sent
the alert for each and whether it bounced, the counts, at most 200 in the
body with the whole list attached as a CSV file a spreadsheet cannot run;
and nothing when everyone has answered by the time it is composed."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from sqlalchemy import select

from mailflow.alerts.alert_files import parse_alert_spec
from mailflow.alerts.deliveries import record_bounce
from mailflow.alerts.issuing import issue_alert
from mailflow.core.models import ChaseKind, ChaserEmail, ChaserEmailState, Organisation
from mailflow.deadlines.rechecking import ALL_ANSWERED
from tests.support.chasing import DEADLINE, ISSUED, Chasing
from tests.support.mail import html_text, plain_text
from tests.support.seed import alert_spec_data, seed_crowd, seed_people

AUDITOR = "ola@oversight.example"


def attachment(message: EmailMessage) -> tuple[str, list[list[str]]]:
    """The attached CSV file's name and rows."""
    (part,) = list(message.iter_attachments())
    assert part.get_content_type() == "text/csv"
    data = part.get_payload(decode=True)
    assert isinstance(data, bytes)
    return str(part.get_filename()), list(csv.reader(io.StringIO(data.decode("utf-8"))))


def text_of(message: EmailMessage) -> str:
    return plain_text(message).replace("\r\n", "\n")


def escalation(chasing: Chasing) -> EmailMessage:
    sent = dict(chasing.chase_and_send(DEADLINE))
    return sent[AUDITOR]


@pytest.fixture
def escalated(chasing: Chasing) -> EmailMessage:
    """RXC answered; RXA (whose parent is RXD, and whose responder's alert
    email bounced) and RXB (whose name and type a spreadsheet would run)
    have not."""
    chasing.issue()
    with chasing.runtime.sessions.begin() as session:
        orgs = {o.code: o for o in session.scalars(select(Organisation))}
        orgs["RXA"].parent_id = orgs["RXD"].id
        orgs["RXB"].name = "=HYPERLINK('http://evil.example','Brookfield')"
        orgs["RXB"].type = "@trust"
    chasing.work()
    raj = chasing.delivery("raj@riverside.example")
    with chasing.runtime.sessions.begin() as session:
        record_bounce(
            session, bounce_key=raj.bounce_key, description="550 no such user", now=ISSUED
        )
    chasing.answer("sam@castleton.example", "RXC", ISSUED + timedelta(hours=1))
    return escalation(chasing)


def test_the_escalation_lists_who_has_not_answered_and_whose_email_bounced(
    escalated: EmailMessage,
) -> None:
    assert escalated["Subject"] == "Escalation: [CC-4720 HIGH] 2 of 3 not answered"
    text = text_of(escalated)
    assert "In scope: 3\nAnswered: 1\nNot answered: 2\n" in text
    riverside = text[text.index("RXA Riverside Acute NHS Trust") :]
    assert riverside.startswith(
        "RXA Riverside Acute NHS Trust\n"
        "  Type: trust\n"
        "  Parent: RXD Dunmore NHS Trust\n"
        "  Emailed: ann@riverside.example, raj@riverside.example (bounced)\n"
    )
    assert "  Emailed: bea@brookfield.example, li@itservices.example\n" in text
    assert "RXC" not in text
    assert "raj@riverside.example <strong" in html_text(escalated)


def test_the_attached_list_cannot_run_as_a_formula(escalated: EmailMessage) -> None:
    name, rows = attachment(escalated)

    assert name == "CC-4720-not-answered-2026-12-03.csv"
    assert rows == [
        ["code", "name", "type", "parent_code", "parent_name", "emailed", "bounced"],
        [
            "RXA",
            "Riverside Acute NHS Trust",
            "trust",
            "RXD",
            "Dunmore NHS Trust",
            "ann@riverside.example; raj@riverside.example",
            "raj@riverside.example",
        ],
        [
            "RXB",
            "'=HYPERLINK('http://evil.example','Brookfield')",
            "'@trust",
            "",
            "",
            "bea@brookfield.example; li@itservices.example",
            "",
        ],
    ]


def test_no_escalation_when_everyone_answered_before_it_was_composed(chasing: Chasing) -> None:
    chasing.issue()
    chasing.work()
    chasing.chase(DEADLINE)
    for email, code in (
        ("raj@riverside.example", "RXA"),
        ("bea@brookfield.example", "RXB"),
        ("sam@castleton.example", "RXC"),
    ):
        chasing.answer(email, code, DEADLINE + timedelta(minutes=1))
    before = len(chasing.relay.received) if chasing.relay else 0
    chasing.clock.now = DEADLINE + timedelta(minutes=2)
    chasing.work()

    assert chasing.relay is not None and chasing.relay.received[before:] == []
    chasing.session.rollback()
    outcome = chasing.session.execute(
        select(ChaserEmail.state, ChaserEmail.outcome).where(
            ChaserEmail.kind == ChaseKind.ESCALATION
        )
    ).one()
    assert tuple(outcome) == (ChaserEmailState.DROPPED, ALL_ANSWERED)


def test_a_national_alert_lists_200_in_the_body_and_every_one_in_the_file(
    chasing: Chasing,
) -> None:
    seed_people(chasing.session)
    crowd = seed_crowd(chasing.session, organisations=205, per_organisation=1)
    spec = parse_alert_spec(
        alert_spec_data(audience={"organisations": crowd.org_codes}), source="test"
    )
    chasing.alert_id = issue_alert(
        chasing.session, spec, now=ISSUED, actor="test", mail_domain="alerts.test"
    ).alert.id
    chasing.session.commit()

    message = escalation(chasing)

    text = text_of(message)
    assert text.count("\n  Emailed: person") == 200
    assert "Z00199 Organisation Z00199" in text and "Z00200" not in text
    assert "And 5 more: the attached CSV file lists every one of the 205." in text
    _, rows = attachment(message)
    assert len(rows) == 206 and rows[-1][0] == "Z00204"


@pytest.mark.parametrize("width", [375, 1200])
def test_the_escalation_is_never_wider_than_the_screen(
    browser: Any, escalated: EmailMessage, width: int
) -> None:
    page = browser.new_page(viewport={"width": width, "height": 800})
    page.set_content(html_text(escalated))
    try:
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        boxes = page.evaluate(
            "[...document.querySelectorAll('a')].map(a => {"
            " const r = a.getBoundingClientRect(); return [r.left, r.right, r.height]; })"
        )
        assert boxes, "the email has links"
        for left, right, height in boxes:
            assert left >= 0 and right <= width and height > 0
    finally:
        page.close()
