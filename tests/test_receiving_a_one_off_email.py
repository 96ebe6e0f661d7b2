"""A one-off email to one person (a notice, a receipt, an answer to their
reply) is a template folder and its context: one wrapper renders it,
gives it the headers every such email carries, threads it where it
belongs and queues it with a bounce address of its own."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.config import Settings
from mailflow.core.links import ACCESS_NEW_LINK
from mailflow.core.mail.addresses import new_key
from mailflow.core.mail.one_off import TheirMessage, ThreadHeaders, access_new_link, send_one_off
from mailflow.core.mail.templates import render_service_email
from mailflow.core.models import OutgoingEmail, User
from tests.support.mail import html_text, parsed, plain_text
from tests.support.seed import NOW, seed_people

ANN = "ann@riverside.example"
ALERT_MESSAGE_ID = "alert.ann.1@alerts.test"
CONTEXT: dict[str, object] = {"recipient_name": "Ann Lee", "until": NOW + timedelta(minutes=1)}


@pytest.fixture
def ann(session: Session) -> User:
    seed_people(session)
    session.commit()
    return session.scalars(select(User).where(User.email == ANN)).one()


def send_notice(
    session: Session, settings: Settings, ann: User, thread: ThreadHeaders | None = None
) -> OutgoingEmail:
    email = send_one_off(
        session,
        settings,
        template="locked_out",
        context=CONTEXT | {"at": NOW},
        to=ann,
        kind="locked_out",
        now=NOW,
        thread=thread,
    )
    session.commit()
    return email


def test_a_notice_is_the_rendered_template_from_the_service_with_its_own_bounce_address(
    session: Session, settings: Settings, ann: User
) -> None:
    email = send_notice(session, settings, ann)

    assert (email.kind, email.recipient, email.user_id) == ("locked_out", ANN, ann.id)
    assert email.mail_from == f"bounce+{email.bounce_key}@alerts.test"
    message = parsed(email.raw)
    # Every email to a person ends with their "Request access" link (with
    # a nonce of its own, so taken from the email and checked).
    [link] = re.findall(r"https?://\S+/access/new/\S+", plain_text(message))
    token = link.rsplit("/", 1)[1]
    assert ACCESS_NEW_LINK.tokens(settings).verify(token, now=NOW)["u"] == ann.id
    assert link != access_new_link(settings, ann.id, NOW)
    footer = {"access_new_link": link}
    rendered = render_service_email(settings, "locked_out", CONTEXT | {"at": NOW} | footer)
    assert message["Subject"] == rendered.subject
    # Read back with the CRLF line breaks a message carries.
    assert plain_text(message).replace("\r\n", "\n") == rendered.text
    assert html_text(message).replace("\r\n", "\n") == rendered.html
    assert message["From"] == str(settings.from_header)
    assert message["To"] == "Ann Lee <ann@riverside.example>"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["X-Auto-Response-Suppress"] == "All"
    assert message["Message-ID"].endswith("@alerts.test>")
    for absent in ("Reply-To", "In-Reply-To", "References"):
        assert message[absent] is None


def test_two_notices_go_from_two_bounce_addresses(
    session: Session, settings: Settings, ann: User
) -> None:
    first, second = send_notice(session, settings, ann), send_notice(session, settings, ann)

    assert first.bounce_key != second.bounce_key
    assert parsed(first.raw)["Message-ID"] != parsed(second.raw)["Message-ID"]


def test_an_email_about_an_alert_is_threaded_under_the_alert_email_its_reader_received(
    session: Session, settings: Settings, ann: User
) -> None:
    email = send_notice(session, settings, ann, ThreadHeaders(ALERT_MESSAGE_ID))

    message = parsed(email.raw)
    assert message["In-Reply-To"] == message["References"] == f"<{ALERT_MESSAGE_ID}>"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Reply-To"] is None


def test_an_answer_to_a_persons_reply_follows_it_and_can_be_answered_in_turn(
    session: Session, settings: Settings, ann: User
) -> None:
    key = new_key()
    theirs = TheirMessage("<r1.ann@client.example>", key)

    email = send_notice(session, settings, ann, ThreadHeaders(ALERT_MESSAGE_ID, theirs))

    message = parsed(email.raw)
    assert message["In-Reply-To"] == "<r1.ann@client.example>"
    assert message["References"] == f"<{ALERT_MESSAGE_ID}> <r1.ann@client.example>"
    assert message["Reply-To"] == f"reply+{key}@alerts.test"
    # So that their auto-responder stays quiet (RFC 3834).
    assert message["Auto-Submitted"] == "auto-replied"


def test_a_malformed_message_id_in_their_reply_is_left_out_of_the_thread(
    session: Session, settings: Settings, ann: User
) -> None:
    theirs = TheirMessage("<r1@client.example>\r\nBcc: eve@example.org", None)

    email = send_notice(session, settings, ann, ThreadHeaders(ALERT_MESSAGE_ID, theirs))

    message = parsed(email.raw)
    assert message["In-Reply-To"] == message["References"] == f"<{ALERT_MESSAGE_ID}>"
    assert message["Bcc"] is None and message["Reply-To"] is None
    assert b"eve@example.org" not in email.raw
