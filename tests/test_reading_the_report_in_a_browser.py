"""Ola, an auditor, opens her report link (one made for her, and the one
in the digest she was sent) on a phone in a real headless
Chromium against the real web server: she gives the code from her app,
reads the report, follows to an alert's table of organisations and
filters it, and neither page is ever wider than the screen (the table
scrolls inside its own box)."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyotp
import pytest
from sqlalchemy.orm import Session

from mailflow.config import Settings, parse_relay
from mailflow.core.runtime import Runtime
from mailflow.reports.report_link import report_url
from tests.support.chasing import Clock
from tests.support.digests import Digests
from tests.support.mail import html_text
from tests.support.pages import enrol, user_id
from tests.support.relay import CapturingRelay, free_port
from tests.support.report_pages import OLA
from tests.support.reporting import ISSUED, LATER, SATURDAY, build
from tests.support.web_server import web_server

PHONE = {"width": 375, "height": 800}


@dataclass
class Service:
    link: str
    secret: str
    reference: str


@pytest.fixture
def service(
    settings_for: Any, database_url: str, relay: CapturingRelay, session: Session
) -> Iterator[Service]:
    port = free_port()
    settings: Settings = settings_for(
        database_url,
        smtp_relay=parse_relay(f"smtp://127.0.0.1:{relay.port}"),
        base_url=f"http://127.0.0.1:{port}",
    )
    build(session, settings)
    secret = enrol(session, settings, OLA)
    link = report_url(settings, user_id=user_id(session, OLA), now=SATURDAY)
    runtime = Runtime(settings, clock=Clock(SATURDAY))
    try:
        with web_server(runtime, port):
            yield Service(link, secret, "CC-4720")
    finally:
        runtime.close()


def page_width(page: Any) -> int:
    width: int = page.evaluate("document.documentElement.scrollWidth")
    return width


def test_an_auditor_reads_the_report_and_an_alerts_table_on_a_phone(
    browser: Any, service: Service
) -> None:
    console_errors: list[str] = []
    context = browser.new_context(viewport=PHONE)
    page = context.new_page()
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)

    page.goto(service.link)
    assert page.locator("h1").inner_text() == "Confirm it is you"
    assert page.locator("data").count() == 0
    page.get_by_label("Security code").fill(pyotp.TOTP(service.secret).at(SATURDAY))
    page.get_by_role("button", name="Show the report").click()
    page.wait_for_selector("h1:has-text('Cyber alerts: the report')")

    assert page.url == service.link
    section = page.locator(f"#alert-{service.reference}")
    assert section.locator('data[data-name="in_scope"]').inner_text() == "9"
    assert section.locator('data[data-name="answered"]').inner_text() == "6 (67%)"
    assert page_width(page) <= PHONE["width"]

    page.get_by_role("link", name=f"Every organisation for {service.reference}").click()
    page.wait_for_selector("#organisations")
    codes = page.locator("#organisations tbody th")
    assert codes.all_inner_texts() == [
        "RXA", "RXB", "RXC", "RXD", "RXE", "RXF", "RXG", "RXH", "RXJ"
    ]  # fmt: skip
    assert page_width(page) <= PHONE["width"]
    # The table is wider than the phone, so it scrolls inside its own box.
    box = page.locator(".table-container")
    assert box.evaluate("b => b.scrollWidth > b.clientWidth")

    page.get_by_label("Status").select_option("no_answer")
    page.get_by_role("button", name="Show these organisations").click()
    page.wait_for_url("**status=no_answer**")
    assert codes.all_inner_texts() == ["RXH", "RXJ"]
    page.get_by_role("link", name="Code", exact=True).click()
    page.wait_for_url("**desc=1**")
    assert codes.all_inner_texts() == ["RXJ", "RXH"]
    assert page_width(page) <= PHONE["width"]
    context.close()
    assert console_errors == []


@pytest.fixture
def from_a_digest(
    settings_for: Any, database_url: str, relay: CapturingRelay, session: Session
) -> Iterator[Service]:
    """The web server, and the report link taken from the digest Ola was
    actually sent (the scheduler's digests task, the worker, the relay)."""
    port = free_port()
    settings: Settings = settings_for(
        database_url,
        smtp_relay=parse_relay(f"smtp://127.0.0.1:{relay.port}"),
        base_url=f"http://127.0.0.1:{port}",
    )
    clock = Clock(ISSUED)
    runtime = Runtime(settings, clock=clock)
    digests = Digests(runtime, clock, session, relay)
    digests.build()
    sent = digests.send(LATER)
    links = re.findall(r'href="(http://127\.0\.0\.1:\d+/report/[^"]+)"', html_text(sent[OLA]))
    secret = enrol(session, settings, OLA)
    try:
        assert len(set(links)) == 1, links
        with web_server(runtime, port):
            yield Service(html.unescape(links[0]), secret, "CC-4720")
    finally:
        runtime.close()


def test_the_link_in_a_digest_opens_that_auditors_report_after_their_code(
    browser: Any, from_a_digest: Service
) -> None:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()

    page.goto(from_a_digest.link)
    assert page.locator("h1").inner_text() == "Confirm it is you"
    page.get_by_label("Security code").fill(pyotp.TOTP(from_a_digest.secret).at(LATER))
    page.get_by_role("button", name="Show the report").click()
    page.wait_for_selector("h1:has-text('Cyber alerts: the report')")

    section = page.locator(f"#alert-{from_a_digest.reference}")
    # The digest's own figures for CC-4720 (tests/test_receiving_a_digest.py).
    assert section.locator('data[data-name="in_scope"]').inner_text() == "9"
    assert section.locator('data[data-name="answered"]').inner_text() == "6 (67%)"
    assert section.locator('data[data-name="unreachable"]').inner_text() == "1 (11%)"
    assert page.locator("section[id^='alert-']").count() == 2
    context.close()
