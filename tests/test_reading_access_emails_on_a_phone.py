"""The emails administrators act on, as a browser lays them out: the
decision email (Approve and Deny) and the review of access (a remove
link beside each person) are never wider than a phone's screen (375 px)
or a desktop's (1200 px), and every link can be reached and tapped."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Any

import pytest
from sqlalchemy import select

from mailflow.core.models import OutgoingEmail
from tests.support.access_decisions import ANN, add_second_administrator, ask, decision_emails
from tests.support.mail import html_text, parsed
from tests.support.pages import Web
from tests.support.people_review import REVIEW, make_due, run_pass


def html_of(message: EmailMessage) -> str:
    return html_text(message)


def decision_email(web: Web) -> EmailMessage:
    add_second_administrator(web.session)
    ask(web.session, web.settings)
    return decision_emails(web.db())[ANN]


def review_email(web: Web) -> EmailMessage:
    add_second_administrator(web.session)
    make_due(web)
    run_pass(web)
    row = web.db().scalars(select(OutgoingEmail).where(OutgoingEmail.kind == REVIEW)).first()
    assert row is not None
    return parsed(row.raw)


EMAILS = {"decision": decision_email, "review": review_email}


@pytest.mark.parametrize("width", [375, 1200])
@pytest.mark.parametrize("which", sorted(EMAILS))
def test_the_email_is_never_wider_than_the_screen(
    browser: Any, web: Web, which: str, width: int
) -> None:
    html = html_of(EMAILS[which](web))
    page = browser.new_page(viewport={"width": width, "height": 800})
    page.set_content(html)
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


def test_the_decision_email_offers_both_choices_as_buttons(browser: Any, web: Web) -> None:
    html = html_of(decision_email(web))
    page = browser.new_page(viewport={"width": 375, "height": 800})
    page.set_content(html)
    try:
        texts = page.evaluate("[...document.querySelectorAll('a')].map(a => a.innerText.trim())")
        assert any(t.startswith("Approve") for t in texts), texts
        assert any(t.startswith("Deny") for t in texts), texts
    finally:
        page.close()
