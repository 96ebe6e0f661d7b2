"""People answer the alert email they really received, the way they really
write: below the alert they quoted in Outlook, in the subject, or in words
that do not say what is true today.  The whole path: the alert emails
through the relay, the reply over SMTP into the inbound server, the worker,
and what comes back."""

from __future__ import annotations

import smtplib
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import make_msgid
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.config import Settings
from mailflow.core.models import Organisation, PendingAnswer
from mailflow.core.runtime import Runtime
from mailflow.gateway.smtpd import InboundServer
from mailflow.workers.key_kinds import REPLY_KEY_KINDS
from mailflow.workers.queue import QueueWorker
from tests.support.relay import CapturingRelay, Received
from tests.support.seed import issue, seed_people

ALERT_EMAILS = 6


@pytest.fixture
def start(settings: Settings, session: Session) -> Iterator[Callable[..., InboundServer]]:
    """Issue the alert (with these overrides) and run the inbound server
    and the worker."""
    running: list[tuple[Runtime, InboundServer, QueueWorker]] = []

    def started(**alert: Any) -> InboundServer:
        seed_people(session)
        issue(session, **alert)
        session.commit()
        runtime = Runtime(settings)
        inbound = InboundServer(runtime, "127.0.0.1", 0, key_kinds=REPLY_KEY_KINDS)
        worker = QueueWorker(runtime, poll_seconds=0.05)
        running.append((runtime, inbound, worker))
        inbound.start()
        worker.start()
        return inbound

    yield started
    for runtime, inbound, worker in running:
        worker.stop()
        inbound.stop()
        runtime.close()


@pytest.fixture
def server(start: Callable[..., InboundServer]) -> InboundServer:
    return start()


def alert_to(relay: CapturingRelay, person: str) -> EmailMessage:
    received = relay.wait_for(ALERT_EMAILS)
    return next(r.message for r in received if r.recipients == [person])


def send_reply(
    server: InboundServer, alert: EmailMessage, person: str, reply: EmailMessage
) -> None:
    reply["From"] = person
    reply["To"] = str(alert["Reply-To"])
    reply["Message-ID"] = make_msgid(domain="client.example")
    if "Subject" not in reply:
        reply["Subject"] = "RE: " + str(alert["Subject"])
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.sendmail(person, [str(alert["Reply-To"])], bytes(reply))


def answer_back(relay: CapturingRelay) -> Received:
    return relay.wait_for(ALERT_EMAILS + 1)[-1]


def pending(session: Session) -> list[tuple[str, str, str | None]]:
    session.rollback()
    rows = session.execute(
        select(Organisation.code, PendingAnswer.status, PendingAnswer.note)
        .join(Organisation, Organisation.id == PendingAnswer.organisation_id)
        .order_by(Organisation.code)
    ).all()
    return [(code, status, note) for code, status, note in rows]


def outlook_header(alert: EmailMessage) -> str:
    return (
        "________________________________\n"
        f"From: {alert['From']}\nSent: 26 November 2026 09:15\n"
        f"To: {alert['To']}\nSubject: {alert['Subject']}\n\n"
    )


def body(alert: EmailMessage, subtype: str) -> str:
    part = alert.get_body((subtype,))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content


def test_ann_answers_below_the_alert_she_quoted_in_outlook_and_is_asked_to_confirm(
    server: InboundServer, relay: CapturingRelay, session: Session
) -> None:
    alert = alert_to(relay, "ann@riverside.example")
    reply = EmailMessage(policy=SMTP)
    # Outlook puts her signature on top; she writes under the quoted alert,
    # whose own form says "RXA: complete".
    reply.set_content(
        "\n\nAnn Lee\nRiverside Acute NHS Trust\n\n"
        + outlook_header(alert)
        + body(alert, "plain")
        + "\n\nRXA - in progress - expected 5 December\n"
    )

    send_reply(server, alert, "ann@riverside.example", reply)

    back = answer_back(relay)
    assert back.recipients == ["ann@riverside.example"]
    assert "/c/" in body(back.message, "plain")
    assert pending(session) == [("RXA", "in_progress", "expected 5 December")]


def test_li_answers_below_the_alert_in_outlook_on_the_web_for_both_her_trusts(
    server: InboundServer, relay: CapturingRelay, session: Session
) -> None:
    alert = alert_to(relay, "li@itservices.example")
    reply = EmailMessage(policy=SMTP)
    reply.set_content(
        '<html><body><div id="appendonsend"></div><hr><div id="divRplyFwdMsg">'
        f"<b>From:</b> Cyber alerts<br><b>Sent:</b> 26 November 2026 09:15</div>"
        f"<div>{body(alert, 'html')}</div>"
        "<div>RXB \u2013 complete</div><div>RXC \u2013 working on it</div></body></html>",
        subtype="html",
    )

    send_reply(server, alert, "li@itservices.example", reply)

    answer_back(relay)
    assert pending(session) == [("RXB", "complete", None), ("RXC", "in_progress", None)]


def test_a_status_added_to_the_subject_of_an_empty_reply_is_read(
    server: InboundServer, relay: CapturingRelay, session: Session
) -> None:
    alert = alert_to(relay, "ann@riverside.example")
    reply = EmailMessage(policy=SMTP)
    reply["Subject"] = f"Re: {alert['Subject']} - Done"
    reply.set_content("\n")

    send_reply(server, alert, "ann@riverside.example", reply)

    answer_back(relay)
    assert pending(session) == [("RXA", "complete", None)]


def test_the_alert_title_in_the_subject_is_never_read_as_an_answer(
    start: Callable[..., InboundServer], relay: CapturingRelay, session: Session
) -> None:
    # Read as an answer, this title would say "complete".
    server = start(title="Fixed in firmware 9.4.2")
    alert = alert_to(relay, "ann@riverside.example")
    reply = EmailMessage(policy=SMTP)
    reply.set_content("\n")

    send_reply(server, alert, "ann@riverside.example", reply)

    assert "could not record" in body(answer_back(relay).message, "plain")
    assert pending(session) == []


def test_we_have_not_patched_yet_is_asked_about_naming_the_line(
    server: InboundServer, relay: CapturingRelay, session: Session
) -> None:
    alert = alert_to(relay, "ann@riverside.example")
    reply = EmailMessage(policy=SMTP)
    reply.set_content("Hi,\n\nWe have not patched yet.\n\nAnn\n\n> RXA: complete\n")

    send_reply(server, alert, "ann@riverside.example", reply)

    text = body(answer_back(relay).message, "plain")
    assert "could not record" in text
    assert 'Line 3: "We have not patched yet."' in text
    assert "does not say it is so now" in text
    assert pending(session) == []
