"""Ann approves Li Chen's request from her decision email in a real
headless Chromium, with the real web server, queue worker and relay."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pyotp
import pytest
from sqlalchemy.orm import Session

from mailflow.config import Settings, parse_relay
from mailflow.core.models import AccessRequest, AccessState
from mailflow.core.runtime import Runtime
from tests.support.access_decisions import ANN, LI, ask, sending
from tests.support.mail import plain_text
from tests.support.pages import enrol
from tests.support.relay import CapturingRelay, Received, free_port
from tests.support.seed import seed_people
from tests.support.waiting import wait_until
from tests.support.web_server import web_server


@pytest.fixture
def service(
    settings_for: Any, database_url: str, relay: CapturingRelay, session: Session
) -> Iterator[tuple[Settings, Runtime]]:
    port = free_port()
    settings: Settings = settings_for(
        database_url,
        smtp_relay=parse_relay(f"smtp://127.0.0.1:{relay.port}"),
        base_url=f"http://127.0.0.1:{port}",
    )
    seed_people(session)
    session.commit()
    runtime = Runtime(settings)
    try:
        with web_server(runtime, port), sending(runtime):
            yield settings, runtime
    finally:
        runtime.close()


def email_to(relay: CapturingRelay, to: str, subject: str) -> Received:
    def found() -> list[Received]:
        return [
            r
            for r in relay.received
            if r.recipients == [to] and subject in str(r.message["Subject"])
        ]

    wait_until(lambda: bool(found()), timeout=20, what=f"an email to {to} about {subject!r}")
    return found()[0]


def test_an_administrator_approves_from_the_email_in_a_browser(
    browser: Any,
    service: tuple[Settings, Runtime],
    relay: CapturingRelay,
    session: Session,
) -> None:
    settings, runtime = service
    secret = enrol(session, settings, ANN)
    request = ask(runtime.sessions, settings)
    decide_email = email_to(relay, ANN, "Access request: Li Chen")
    [approve] = re.findall(
        r"http://127\.0\.0\.1:\d+/access/\S+/approve", plain_text(decide_email.message)
    )

    console_errors: list[str] = []
    context = browser.new_context()
    page = context.new_page()
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.goto(approve)
    assert page.locator("h1").inner_text() == "Approve access for Li Chen"
    assert "we are their outsourced IT provider" in page.content()
    page.get_by_label("Security code").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Approve").click()
    page.wait_for_selector(".panel-success")
    assert page.locator("h1").inner_text() == "Request approved"
    context.close()

    session.rollback()
    assert session.get_one(AccessRequest, request.id).state is AccessState.APPROVED
    told = email_to(relay, LI, "was approved")
    assert "approved by Ann Lee" in plain_text(told.message)
    assert console_errors == []
