"""A new responder, in a real headless Chromium: the welcome email, setting
up an authenticator app, answering from the alert email's link with a
code, and confirming an answer sent by reply; with the real web server,
queue worker, inbound SMTP server and relay."""

from __future__ import annotations

import json
import re
import smtplib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pyotp
import pytest
from sqlalchemy.orm import Session

from mailflow.answers.update_dates import UpdateDates
from mailflow.config import Settings, parse_relay
from mailflow.core.links import ANSWER_LINK
from mailflow.core.runtime import Runtime, utc_now
from mailflow.gateway.smtpd import InboundServer
from mailflow.workers.key_kinds import REPLY_KEY_KINDS
from mailflow.workers.queue import QueueWorker
from tests.support.cli import mailflow_with
from tests.support.mail import reply
from tests.support.relay import CapturingRelay, Received, free_port
from tests.support.seed import issue, seed_people
from tests.support.waiting import wait_until
from tests.support.web_server import web_server

NIA = "nia@riverside.example"


@dataclass
class Service:
    settings: Settings
    smtpd_port: int


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
    seed_people(session)
    session.commit()
    runtime = Runtime(settings)
    inbound = InboundServer(runtime, "127.0.0.1", 0, key_kinds=REPLY_KEY_KINDS)
    worker = QueueWorker(runtime, poll_seconds=0.05)
    try:
        with web_server(runtime, port):
            inbound.start()
            worker.start()
            try:
                yield Service(settings, inbound.port)
            finally:
                worker.stop()
                inbound.stop()
    finally:
        runtime.close()


def text_of(received: Received) -> str:
    body = received.message.get_body(("plain",))
    assert body is not None
    content: str = body.get_content()
    return content


def wait_for_email(relay: CapturingRelay, to: str, subject: str) -> Received:
    def found() -> bool:
        return any(
            r.recipients == [to] and subject in str(r.message["Subject"]) for r in relay.received
        )

    wait_until(found, timeout=20, what=f"an email to {to} about {subject!r}")
    return next(
        r for r in relay.received if r.recipients == [to] and subject in str(r.message["Subject"])
    )


def status_of(settings: Settings, code: str) -> dict[str, Any]:
    result = mailflow_with(settings, "alert", "status", "CC-4720", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["organisation"]: row for row in json.loads(result.output)["organisations"]}
    row: dict[str, Any] = rows[code]
    return row


def test_a_new_responder_sets_up_mfa_and_answers_by_link_and_by_reply(
    browser: Any,
    service: Service,
    relay: CapturingRelay,
    session: Session,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = service.settings
    added = mailflow_with(
        settings, "users", "add", NIA, "--name", "Nia Shah", "--org", "RXA", "--role", "responder"
    )
    assert added.exit_code == 0, added.output
    console_errors: list[str] = []

    # The welcome email's link sets up the authenticator app.
    welcome = wait_for_email(relay, NIA, "Welcome")
    [enrol_link] = re.findall(r"http://127\.0\.0\.1:\d+/enrol/\S+", text_of(welcome))
    first = browser.new_context()
    page = first.new_page()
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.goto(enrol_link)
    assert page.locator("h1").inner_text() == "Set up your authenticator app"
    page.get_by_role("button", name="Continue").click()
    page.wait_for_selector("#secret")
    assert page.locator("img.qr").evaluate("img => img.naturalWidth") > 0
    secret = page.locator("#secret").inner_text().replace(" ", "")
    totp = pyotp.TOTP(secret)
    page.get_by_label("Code from your authenticator app").fill(totp.now())
    page.get_by_role("button", name="Finish setting up").click()
    page.wait_for_selector("#recovery-codes")
    assert page.locator("#recovery-codes li").count() == 10
    first.close()

    # The alert email's "complete" link, in a new browser: a code is needed.
    issue(session)
    session.commit()
    alert_email = wait_for_email(relay, NIA, "CC-4720")
    tokens = ANSWER_LINK.tokens(settings)
    links = re.findall(r"http://127\.0\.0\.1:\d+/r/\S+", text_of(alert_email))
    [complete] = [
        link for link in links if tokens.verify(link.rsplit("/", 1)[1])["s"] == "complete"
    ]
    second = browser.new_context()
    page = second.new_page()
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.goto(complete)
    assert "Record your answer to CC-4720" in page.locator("h1").inner_text()
    page.get_by_label("Note (optional)").fill("Upgraded to 9.4.2")
    # The next step's code: the one of now went on enrolment.
    page.get_by_label("Security code").fill(totp.at(utc_now() + timedelta(seconds=30)))
    page.get_by_role("button", name="Record this answer").click()
    page.wait_for_selector(".panel-success")
    assert "Answer recorded" in page.locator("h1").inner_text()

    row = status_of(settings, "RXA")
    assert (row["status"], row["note"], row["answered_by"]) == (
        "complete",
        "Upgraded to 9.4.2",
        NIA,
    )
    wait_for_email(relay, NIA, "Recorded: CC-4720")
    wait_for_email(relay, "ann@riverside.example", "Recorded: CC-4720")

    # A reply over SMTP comes back as a confirm link; the same browser
    # gave a code minutes ago, so it only confirms.
    with smtplib.SMTP("127.0.0.1", service.smtpd_port) as client:
        client.sendmail(
            NIA,
            [str(alert_email.message["Reply-To"])],
            reply(
                f"Nia Shah <{NIA}>",
                "RXA: in progress: expected 5 December 2030; next update 2 December",
            ),
        )
    confirm = wait_for_email(relay, NIA, "Confirm your answer")
    [confirm_link] = re.findall(r"http://127\.0\.0\.1:\d+/c/\S+", text_of(confirm))
    page.goto(confirm_link)
    expected = page.get_by_role("group", name="Expected completion date (optional)")
    next_update = page.get_by_role("group", name="Next update due (optional)")
    assert expected.get_by_label("Day").input_value() == "5"
    assert next_update.get_by_label("Day").input_value() == "2"
    assert next_update.get_by_label("Month").input_value() == "12"
    # Nia moves her next update to a week from today on the page.
    week_on = UpdateDates.of(settings).today(utc_now()) + timedelta(days=7)
    for label, value in (("Day", week_on.day), ("Month", week_on.month), ("Year", week_on.year)):
        next_update.get_by_label(label).fill(str(value))
    assert "do not need another one" in page.content()
    page.get_by_role("button", name="Record this answer").click()
    page.wait_for_selector(".panel-success")
    second.close()

    row = status_of(settings, "RXA")
    assert (row["status"], row["expected_on"]) == ("in_progress", "2030-12-05")
    assert row["update_due_on"] == week_on.isoformat()
    assert console_errors == []
