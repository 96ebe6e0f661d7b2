"""The alert email as a browser lays it out: on a small phone (320 px), a
common one (375 px) and a desktop (1200 px) it is never wider than the
screen, the status buttons wrap onto new lines when they do not fit, and
paragraphs flow to the width instead of keeping the publisher's line
breaks."""

from __future__ import annotations

import email
from email.message import EmailMessage
from email.policy import default
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.alerts.alert_email import AlertEmailComposer
from mailflow.alerts.deliveries import describe_deliveries
from mailflow.config import Settings
from mailflow.core.models import Alert, Delivery, Organisation
from tests.support.seed import NOW, issue, seed_people

SUMMARY = """
A critical flaw in the web interface of Example VPN Gateway lets an
unauthenticated attacker run code on the appliance. It is being exploited.

Appliances with the web interface reachable from the internet are at
greatest risk.
"""
REMEDIATION = """
Upgrade to 9.4.2 or 10.1.1. If you cannot upgrade at once:
- disable the web interface on external addresses
- review logs for signs of compromise
"""
LONG_REFERENCE = (
    "https://example.org/advisories/2026/example-vpn-gateway-remote-code-execution-"
    "in-the-web-interface-CVE-2026-41234-and-CVE-2026-41235"
)


@pytest.fixture
def alert_html(session: Session, settings: Settings) -> str:
    """The HTML of the alert email to Li Chen, who answers for two trusts."""
    seed_people(session)
    alert_id = issue(
        session, summary=SUMMARY, remediation=REMEDIATION, references=[LONG_REFERENCE]
    ).alert.id
    session.commit()
    alert = session.get_one(Alert, alert_id)
    audience = {o.id: o for o in session.scalars(select(Organisation))}
    ids = list(session.scalars(select(Delivery.id).where(Delivery.alert_id == alert_id)))
    li = next(
        d for d in describe_deliveries(session, ids) if d.recipient_email == "li@itservices.example"
    )
    message = email.message_from_bytes(
        AlertEmailComposer(alert, audience, settings, NOW).compose(li).data, policy=default
    )
    assert isinstance(message, EmailMessage)
    body = message.get_body(("html",))
    assert body is not None
    html: str = body.get_content()
    return html


def laid_out(browser: Any, html: str, width: int) -> Any:
    page = browser.new_page(viewport={"width": width, "height": 800})
    page.set_content(html)
    return page


def button_rows(page: Any) -> list[int]:
    """How many rows the status buttons of each organisation take."""
    rows: list[int] = page.evaluate(
        """() => [...document.querySelectorAll('h3')].map(h3 => {
            const tops = new Set();
            h3.nextElementSibling.querySelectorAll('a').forEach(
                a => tops.add(Math.round(a.getBoundingClientRect().top)));
            return tops.size;
        })"""
    )
    return rows


@pytest.mark.parametrize("width", [320, 375, 1200])
def test_the_alert_email_is_never_wider_than_the_screen(
    browser: Any, alert_html: str, width: int
) -> None:
    page = laid_out(browser, alert_html, width)
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    # Every button can be read and tapped: none is cut off at the edge.
    rights = page.evaluate(
        "[...document.querySelectorAll('a')].map(a => a.getBoundingClientRect().right)"
    )
    assert rights and max(rights) <= width
    page.close()


def test_the_status_buttons_wrap_on_a_phone_and_sit_in_one_row_on_a_desktop(
    browser: Any, alert_html: str
) -> None:
    phone = laid_out(browser, alert_html, 320)
    assert all(rows >= 2 for rows in button_rows(phone)), button_rows(phone)
    desktop = laid_out(browser, alert_html, 1200)
    assert button_rows(desktop) == [1, 1]
    # Outlook for Windows, which ignores inline-block, gets a table row.
    assert "<!--[if mso]><table" in alert_html


def test_paragraphs_flow_to_the_width_and_list_items_keep_their_lines(
    browser: Any, alert_html: str
) -> None:
    assert "pre-line" not in alert_html
    page = laid_out(browser, alert_html, 375)
    texts: list[str] = page.evaluate("[...document.querySelectorAll('p')].map(p => p.innerText)")
    assert (
        "A critical flaw in the web interface of Example VPN Gateway lets an "
        "unauthenticated attacker run code on the appliance. It is being exploited."
    ) in texts
    assert (
        "Appliances with the web interface reachable from the internet are at greatest risk."
    ) in texts
    assert (
        "Upgrade to 9.4.2 or 10.1.1. If you cannot upgrade at once:\n"
        "- disable the web interface on external addresses\n"
        "- review logs for signs of compromise"
    ) in texts
