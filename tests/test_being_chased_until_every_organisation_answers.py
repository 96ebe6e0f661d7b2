"""The chasing emails as people receive them: reminders before the
deadline to those whose organisation has not answered, the overdue notice
to its administrators and the escalation to the auditors at the deadline,
then the auditors' follow-ups; each once, to the right people, naming
only the organisations still unanswered when it is composed, threaded to
the alert email, with links that open the answer page and a reply address
whose replies are read as answers."""

from __future__ import annotations

import re
from collections import Counter
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from mailflow.core.links import ANSWER_LINK
from mailflow.core.models import (
    ChaserEmail,
    ChaserEmailState,
    InboundState,
    Organisation,
    PendingAnswer,
    User,
)
from mailflow.deadlines.rechecking import ALL_ANSWERED
from mailflow.web import create_app
from tests.support.chasing import DEADLINE, ISSUED, Chasing
from tests.support.mail import a_reply, html_text, plain_text, receive

LINK = re.compile(r"https://mailflow\.test/r/[A-Za-z0-9_.\-]+")
FRIDAY_MORNING = DEADLINE + timedelta(hours=17)  # Friday 4 December, 08:00


def who_got(emails: list[tuple[str, EmailMessage]]) -> Counter[tuple[str, str]]:
    """(recipient, what it is) for each email: the word its subject starts with."""
    return Counter((to, str(message["Subject"]).split(":")[0]) for to, message in emails)


def codes_in_links(chasing: Chasing, message: EmailMessage) -> set[str]:
    """The organisations the email's status links are for."""
    tokens = ANSWER_LINK.tokens(chasing.runtime.settings)
    org_ids = {
        tokens.verify(link.rsplit("/", 1)[1], now=chasing.clock.now)["o"]
        for link in LINK.findall(plain_text(message))
    }
    chasing.session.rollback()
    return set(
        chasing.session.scalars(select(Organisation.code).where(Organisation.id.in_(org_ids)))
    )


def test_one_answers_early_one_after_the_first_reminder_one_never(chasing: Chasing) -> None:
    chasing.issue()
    chasing.work()  # the alert emails go out
    chasing.answer("sam@castleton.example", "RXC", ISSUED + timedelta(hours=2))

    first = chasing.chase_and_send(DEADLINE - timedelta(hours=23))
    assert who_got(first) == Counter(
        {
            ("ann@riverside.example", "Reminder"): 1,
            ("raj@riverside.example", "Reminder"): 1,
            ("bea@brookfield.example", "Reminder"): 1,
            # Li Chen answers for RXB and RXC: one reminder, naming RXB only.
            ("li@itservices.example", "Reminder"): 1,
        }
    )
    by_person = dict(first)
    assert codes_in_links(chasing, by_person["li@itservices.example"]) == {"RXB"}
    assert "Castleton" not in plain_text(by_person["li@itservices.example"])
    assert codes_in_links(chasing, by_person["ann@riverside.example"]) == {"RXA"}
    text = plain_text(by_person["bea@brookfield.example"])
    assert "Your organisation has not answered yet: 23 hours left." in text
    assert "Brookfield Community NHS Trust (RXB)" in text
    assert chasing.chase_and_send(DEADLINE - timedelta(hours=22)) == []

    chasing.answer("bea@brookfield.example", "RXB", DEADLINE - timedelta(hours=10))
    second = chasing.chase_and_send(DEADLINE - timedelta(hours=3))
    assert who_got(second) == Counter(
        {("ann@riverside.example", "Reminder"): 1, ("raj@riverside.example", "Reminder"): 1}
    )
    assert "3 hours left" in plain_text(dict(second)["raj@riverside.example"])

    at_deadline = chasing.chase_and_send(DEADLINE)
    assert who_got(at_deadline) == Counter(
        {("ann@riverside.example", "Overdue"): 1, ("ola@oversight.example", "Escalation"): 1}
    )
    overdue = plain_text(dict(at_deadline)["ann@riverside.example"])
    assert "The deadline passed on Thursday 3 December 2026 at 15:00 GMT;" in overdue
    assert "Riverside Acute NHS Trust (RXA) has not answered." in overdue
    escalation = plain_text(dict(at_deadline)["ola@oversight.example"])
    assert "RXA Riverside Acute NHS Trust" in escalation
    assert "RXB" not in escalation and "RXC" not in escalation
    assert chasing.chase_and_send(DEADLINE + timedelta(hours=1)) == []

    follow_up = chasing.chase_and_send(FRIDAY_MORNING)
    assert who_got(follow_up) == Counter({("ola@oversight.example", "Follow-up"): 1})
    assert "1 day ago" in plain_text(dict(follow_up)["ola@oversight.example"])

    chasing.answer("ann@riverside.example", "RXA", FRIDAY_MORNING + timedelta(hours=1))
    assert chasing.chase_and_send(FRIDAY_MORNING + timedelta(days=3)) == []


def test_a_reminder_is_not_sent_for_an_organisation_that_answered_after_the_pass(
    chasing: Chasing,
) -> None:
    chasing.issue()
    chasing.work()
    at = DEADLINE - timedelta(hours=23)
    chasing.chase(at)
    # Bea answers for RXB between the pass and the composing of the emails.
    chasing.answer("bea@brookfield.example", "RXB", at + timedelta(minutes=1))
    before = len(chasing.relay.received) if chasing.relay else 0
    chasing.clock.now = at + timedelta(minutes=2)
    chasing.work()

    assert chasing.relay is not None
    sent = {r.recipients[0]: r.message for r in chasing.relay.received[before:]}
    assert set(sent) == {
        "ann@riverside.example",
        "raj@riverside.example",
        "sam@castleton.example",
        "li@itservices.example",
    }
    assert codes_in_links(chasing, sent["li@itservices.example"]) == {"RXC"}
    dropped = chasing.session.execute(
        select(User.email, ChaserEmail.outcome)
        .join(User, User.id == ChaserEmail.user_id)
        .where(ChaserEmail.state == ChaserEmailState.DROPPED)
    ).all()
    assert dropped == [("bea@brookfield.example", ALL_ANSWERED)]


@pytest.fixture
def reminded(chasing: Chasing) -> dict[str, EmailMessage]:
    chasing.issue()
    chasing.work()
    return dict(chasing.chase_and_send(DEADLINE - timedelta(hours=23)))


def test_a_reminder_sits_in_the_thread_of_the_alert_email(
    chasing: Chasing, reminded: dict[str, EmailMessage]
) -> None:
    message = reminded["li@itservices.example"]
    delivery = chasing.delivery("li@itservices.example")

    assert message["In-Reply-To"] == f"<{delivery.message_id}>"
    assert message["References"] == f"<{delivery.message_id}>"
    assert message["Message-ID"] != f"<{delivery.message_id}>"
    assert message["Message-ID"].endswith("@alerts.test>")
    assert message["Reply-To"] == f"reply+{delivery.reply_key}@alerts.test"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Subject"].startswith("Reminder: [CC-4720 HIGH] Respond by Thu 3 Dec")
    assert len(f"Subject: {message['Subject']}") <= 78
    text, html = plain_text(message), html_text(message)
    # The banner, then the alert as it was sent, with the reply form.
    assert text.index("REMINDER: Your organisations have not answered yet") < text.index(
        "HIGH SEVERITY CYBER ALERT CC-4720"
    )
    assert "RXB: complete" in text
    assert "Your organisations have not answered yet: 23 hours left." in html
    assert set(LINK.findall(text)) == set(LINK.findall(html))


def test_the_links_in_a_reminder_open_the_answer_page_for_that_person(
    chasing: Chasing, reminded: dict[str, EmailMessage]
) -> None:
    message = reminded["bea@brookfield.example"]
    delivery = chasing.delivery("bea@brookfield.example")
    links = LINK.findall(plain_text(message))
    assert len(links) == 4
    tokens = ANSWER_LINK.tokens(chasing.runtime.settings)
    for link in links:
        payload = tokens.verify(link.rsplit("/", 1)[1], now=chasing.clock.now)
        assert (payload["d"], payload["u"]) == (delivery.id, delivery.user_id)

    with TestClient(create_app(chasing.runtime), base_url="https://mailflow.test") as client:
        page = client.get(links[0].removeprefix("https://mailflow.test"))
    assert page.status_code == 200, page.text
    assert "Brookfield Community NHS Trust" in page.text


def test_a_reply_to_a_reminder_is_read_as_an_answer(
    chasing: Chasing, reminded: dict[str, EmailMessage]
) -> None:
    message = reminded["li@itservices.example"]
    reply_to = str(message["Reply-To"])
    raw = a_reply(
        "li@itservices.example",
        reply_to,
        "RXB: complete",
        subject=f"Re: {message['Subject']}",
        headers={"In-Reply-To": str(message["Message-ID"])},
    )

    stored = receive(chasing.runtime, raw, to=reply_to, envelope_from="li@itservices.example")

    assert stored.state == InboundState.PROCESSED, stored.outcome
    chasing.session.rollback()
    answers = chasing.session.scalars(select(PendingAnswer)).all()
    assert [(a.status, a.organisation.code) for a in answers] == [("complete", "RXB")]


@pytest.mark.parametrize("width", [375, 1200])
def test_a_reminder_is_never_wider_than_the_screen(
    browser: Any, reminded: dict[str, EmailMessage], width: int
) -> None:
    page = browser.new_page(viewport={"width": width, "height": 800})
    page.set_content(html_text(reminded["li@itservices.example"]))
    try:
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        boxes = page.evaluate(
            "[...document.querySelectorAll('a')].map(a => {"
            " const r = a.getBoundingClientRect(); return [r.left, r.right, r.height]; })"
        )
        assert len(boxes) >= 4
        for left, right, height in boxes:
            assert left >= 0 and right <= width and height > 0
    finally:
        page.close()
