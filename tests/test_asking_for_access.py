"""A person asks by email to answer for another organisation: real SMTP
into the inbound server, the relay capturing what comes back, the link
confirmed with a code; and every message that cannot become a request
gets a clear, rate-limited answer, or (automatic or forged) none."""

from __future__ import annotations

import threading
from datetime import date

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.access.asking import ask_for_access
from mailflow.access.requests import open_request
from mailflow.config import Settings, parse_relay
from mailflow.core import links
from mailflow.core.errors import NotAllowed
from mailflow.core.models import InboundState, Organisation, User
from mailflow.core.runtime import Runtime
from mailflow.people.users import get_user
from tests.support.access_requests import (
    CONFIRM_PATH,
    NEW_PATH,
    audit_of,
    emails,
    mail_service,
    pending_requests,
    requests,
)
from tests.support.mail import html_text, plain_text
from tests.support.pages import Web, csrf_of, post_form
from tests.support.relay import CapturingRelay
from tests.support.seed import NOW

RAJ = "raj@riverside.example"
REASON = "we are their outsourced IT provider"


def test_a_request_by_email_is_confirmed_with_a_code_and_opened(
    web: Web, relay: CapturingRelay
) -> None:
    with mail_service(web.runtime) as mail:
        alerts = len(relay.wait_for(6))
        message = mail.send(f"Raj Patel <{RAJ}>", f"* Request rxb: {REASON}\n\nThanks, Raj")
        confirm = relay.wait_for(alerts + 1)[-1]
    assert message.state == InboundState.PROCESSED, message.outcome
    assert confirm.recipients == [RAJ]
    text = plain_text(confirm.message)
    assert "Brookfield Community NHS Trust (RXB)" in text and REASON in text
    assert "Nothing has been asked yet" in text
    [path] = CONFIRM_PATH.findall(text)
    assert requests(web.db()) == [] and pending_requests(web.db()) == 1

    page = web.client.get(path)
    assert page.status_code == 200
    assert "Brookfield Community NHS Trust (RXB)" in page.text and REASON in page.text
    assert requests(web.db()) == []  # GET changes nothing

    done = post_form(web.client, path, {"code": web.code(RAJ)})

    assert done.status_code == 200, done.text
    assert "Request sent" in done.text
    [request] = requests(web.db())
    raj = get_user(web.db(), RAJ)
    assert (request.requester_id, request.state, request.via) == (raj.id, "open", "email")
    assert request.reason == REASON
    [event] = audit_of(web.db(), "access.requested")
    assert event.actor == f"user:{raj.id}" and event.details["organisation"] == "RXB"

    used = web.client.get(path)
    assert used.status_code == 200 and "Already sent" in used.text
    again = web.client.post(path, data={"csrf_token": csrf_of(page.text), "code": "123456"})
    assert again.status_code == 409 and len(requests(web.db())) == 1


def close(session: Session, code: str) -> None:
    org = session.scalars(select(Organisation).where(Organisation.code == code)).one()
    org.closed_on = date(2026, 1, 1)
    session.commit()


@pytest.mark.parametrize(
    ("sender", "body", "says"),
    [
        ("stranger@elsewhere.example", "REQUEST RXB", "We do not know your address"),
        (RAJ, "REQUEST ZZZ", "ZZZ is not an organisation we know"),
        (RAJ, "REQUEST RXD", "RXD (Dunmore NHS Trust) is closed"),
        (RAJ, "REQUEST RXA", "already answers for RXA"),
        (RAJ, "REQUEST RXC: open already", "has already asked to answer for RXC"),
        (RAJ, "Please may I answer for Brookfield?", "this line is not a request"),
        (RAJ, "REQUEST RX-B", "is not an organisation code"),
    ],
)
def test_a_request_that_cannot_be_made_gets_a_reply_saying_why(
    web: Web, relay: CapturingRelay, sender: str, body: str, says: str
) -> None:
    session = web.db()
    close(session, "RXD")
    raj = get_user(session, RAJ)
    rxc = session.scalars(select(Organisation).where(Organisation.code == "RXC")).one()
    open_request(
        session,
        web.settings,
        requester=raj,
        organisation=rxc,
        reason="",
        via="cli",
        now=NOW,
        actor="test",
    )
    session.commit()
    with mail_service(web.runtime) as mail:
        alerts = len(relay.wait_for(6))
        message = mail.send(sender, body)
        answer = relay.wait_for(alerts + 1)[-1]

    assert message.state == InboundState.PROCESSED, message.outcome
    assert answer.recipients == [sender]
    assert answer.message["Auto-Submitted"] == "auto-replied"
    text, html = plain_text(answer.message), html_text(answer.message)
    assert says in " ".join(text.split()), text
    assert "REQUEST RXB, RXC: we are their outsourced IT provider" in text
    assert "Nothing has been asked" in text or "not made" in answer.message["Subject"]
    assert "not made" in html
    assert pending_requests(web.db()) == 0 and len(requests(web.db())) == 1
    # A registered person's reply carries their footer link; a stranger's none.
    assert bool(NEW_PATH.search(text)) == (sender == RAJ)


def test_replies_saying_why_are_limited_per_sender(web: Web, relay: CapturingRelay) -> None:
    limit = web.settings.error_replies_per_hour
    with mail_service(web.runtime) as mail:
        relay.wait_for(6)
        outcomes = [
            mail.send("stranger@elsewhere.example", "REQUEST RXB").outcome for _ in range(limit + 2)
        ]
        mail.send(RAJ, "REQUEST ZZZ")  # another sender is still answered
    refused = emails(web.db(), kind="access_refused")
    assert len([e for e in refused if e["To"].addresses[0].addr_spec.startswith("stranger")]) == (
        limit
    )
    assert len(refused) == limit + 1
    assert all("limit" in (o or "") for o in outcomes[limit:])


def test_an_auto_reply_to_access_records_nothing_and_gets_no_answer(
    web: Web, relay: CapturingRelay
) -> None:
    with mail_service(web.runtime) as mail:
        relay.wait_for(6)
        message = mail.send(RAJ, "REQUEST RXB", headers={"Auto-Submitted": "auto-replied"})
        out_of_office = mail.send(
            "stranger@elsewhere.example", "REQUEST RXB", headers={"Auto-Submitted": "auto-replied"}
        )
    assert message.state == InboundState.IGNORED and out_of_office.state == InboundState.IGNORED
    assert pending_requests(web.db()) == 0
    assert emails(web.db(), kind="access_confirm") == []
    assert emails(web.db(), kind="access_refused") == []


def test_a_forged_from_to_access_records_nothing_and_gets_no_answer(
    web: Web, relay: CapturingRelay, settings_for: object, database_url: str
) -> None:
    checked: Settings = settings_for(  # type: ignore[operator]
        database_url,
        authserv_id="mx.alerts.test",
        smtp_relay=parse_relay(f"smtp://127.0.0.1:{relay.port}"),
    )
    runtime = Runtime(checked)
    forged = b"Authentication-Results: mx.alerts.test; dmarc=fail header.from=riverside.example\r\n"
    try:
        with mail_service(runtime) as mail:
            relay.wait_for(6)
            message = mail.send(RAJ, "REQUEST RXB", raw=forged)
    finally:
        runtime.close()
    assert message.state == InboundState.IGNORED
    assert "DMARC" in (message.outcome or "")
    assert pending_requests(web.db()) == 0
    assert emails(web.db(), kind="access_confirm") == []
    assert emails(web.db(), kind="access_refused") == []


def test_the_alert_email_and_a_one_off_email_carry_the_footer_link(
    web: Web, relay: CapturingRelay
) -> None:
    with mail_service(web.runtime) as mail:
        alert_emails = relay.wait_for(6)
        mail.send(RAJ, "REQUEST RXB")
        confirm = relay.wait_for(7)[-1].message
    to_raj = next(r.message for r in alert_emails if r.recipients == [RAJ])
    raj = web.db().scalars(select(User.id).where(User.email == RAJ)).one()
    for email in (to_raj, confirm):
        text, html = plain_text(email), html_text(email)
        assert "Request access for another organisation" in text
        assert "Request access for another organisation</a>" in html
        [path] = NEW_PATH.findall(text)
        assert f'href="https://mailflow.test{path}"' in html
        token = path.rsplit("/", 1)[1]
        payload = links.ACCESS_NEW_LINK.tokens(web.settings).verify(token)
        # The person, and a nonce: two emails signed in one second differ.
        assert payload["u"] == raj and set(payload) == {"u", "n"}
        # The plain text keeps the link on a line of its own.
        assert f"https://mailflow.test{path}" in text.splitlines()
    # Each recipient's link is their own.
    [rajs] = NEW_PATH.findall(plain_text(to_raj))
    others = [r.message for r in alert_emails if r.recipients != [RAJ]]
    assert others and all(rajs not in plain_text(m) for m in others)


def test_one_request_confirmed_twice_at_the_same_moment_opens_once(web: Web, backend: str) -> None:
    """The same request confirmed by email and on the page at once: the
    second waits for the first (a lock on the person) and then finds the
    request open already.  On PostgreSQL both transactions are open and
    have read the person before either writes; SQLite's writers take turns
    from the start of their transactions, so there they run side by side
    without meeting."""
    barrier = threading.Barrier(2 if backend == "postgresql" else 1, timeout=10)
    outcomes: list[str] = []

    def confirm() -> None:
        try:
            with web.runtime.sessions.begin() as session:
                raj = get_user(session, RAJ)
                rxb = session.scalars(select(Organisation).where(Organisation.code == "RXB")).one()
                barrier.wait()
                ask_for_access(
                    session, web.settings, requester=raj, organisation=rxb, reason=REASON,
                    via="web", now=NOW, actor="test",
                )  # fmt: skip
            outcomes.append("opened")
        except NotAllowed as exc:
            outcomes.append(f"refused: {exc}")

    threads = [threading.Thread(target=confirm) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(outcomes)[0] == "opened" and outcomes.count("opened") == 1, outcomes
    assert len(requests(web.db())) == 1
