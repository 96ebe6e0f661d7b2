"""The alert email as fan-out builds it (a MIME skeleton per alert, the
templates rendered once per shape of recipient) is the same email as one
built whole with the email package from templates rendered directly."""

from __future__ import annotations

import email
import json
import re
from dataclasses import replace
from email.message import EmailMessage
from email.policy import default

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.alerts.alert_email import AlertEmailComposer
from mailflow.alerts.deliveries import ClaimedDelivery, describe_deliveries
from mailflow.config import Settings
from mailflow.core.links import ACCESS_NEW_LINK, ANSWER_LINK
from mailflow.core.mail.transport import OutgoingMessage
from mailflow.core.models import Alert, AlertAudience, Delivery, Organisation
from mailflow.people.users import add_user
from tests.support.seed import NOW, issue, seed_people

TOKEN = re.compile(r"/r/([A-Za-z0-9_.\-]+)")
ACCESS_TOKEN = re.compile(r"/access/new/([A-Za-z0-9_.\-]+)")


def parsed(message: OutgoingMessage) -> EmailMessage:
    result = email.message_from_bytes(message.data, policy=default)
    assert isinstance(result, EmailMessage)
    return result


def with_payloads(text: str, settings: Settings) -> str:
    """Links carry a timestamp, so two renders a second apart differ: compare
    what each link says instead."""
    tokens = ANSWER_LINK.tokens(settings)
    answers = TOKEN.sub(
        lambda m: "/r/" + json.dumps(tokens.verify(m.group(1), now=NOW), sort_keys=True), text
    )
    # The footer's link carries a nonce of its own: compare whom it names.
    access = ACCESS_NEW_LINK.tokens(settings)
    return ACCESS_TOKEN.sub(
        lambda m: f"/access/new/u={access.verify(m.group(1), now=NOW)['u']}", answers
    )


@pytest.fixture
def composer_and_deliveries(
    session: Session, settings: Settings
) -> tuple[AlertEmailComposer, list[ClaimedDelivery]]:
    seed_people(session)
    # Names that need escaping in HTML and encoding in headers.
    add_user(
        session,
        email="zoe@brookfield.example",
        name='Zoë "Z" O\'Neil & <Co>',
        role="responder",
        org_code="RXB",
        now=NOW,
        actor="test",
    )
    add_user(
        session,
        email="zoe@brookfield.example",
        name=None,
        role="alert-only",
        org_code="RXA",
        now=NOW,
        actor="test",
    )
    session.get_one(Organisation, 1).name = "Riverside & Shore <Acute> NHS Trust"
    alert_id = issue(session).alert.id
    session.commit()
    alert = session.get_one(Alert, alert_id)
    audience = {
        o.id: o
        for o in session.scalars(
            select(Organisation).join(AlertAudience).where(AlertAudience.alert_id == alert_id)
        )
    }
    ids = list(session.scalars(select(Delivery.id).where(Delivery.alert_id == alert_id)))
    return AlertEmailComposer(alert, audience, settings, NOW), describe_deliveries(session, ids)


def test_fan_out_composes_the_same_email_as_the_email_package_builds_whole(
    composer_and_deliveries: tuple[AlertEmailComposer, list[ClaimedDelivery]], settings: Settings
) -> None:
    composer, deliveries = composer_and_deliveries
    shapes = set()
    for delivery in deliveries:
        fast, whole = composer.compose(delivery), composer.compose_whole(delivery)
        assert fast.envelope == whole.envelope
        a, b = parsed(fast), parsed(whole)
        for header in (
            "Subject",
            "From",
            "To",
            "Reply-To",
            "Message-ID",
            "Date",
            "Auto-Submitted",
            "X-Auto-Response-Suppress",
            "X-Mailflow-Alert",
            "MIME-Version",
        ):
            assert str(a[header]) == str(b[header]), header
        assert a.get_content_type() == b.get_content_type() == "multipart/alternative"
        for part_a, part_b in zip(a.iter_parts(), b.iter_parts(), strict=True):
            assert part_a.get_content_type() == part_b.get_content_type()
            assert part_a["Content-Transfer-Encoding"] == part_b["Content-Transfer-Encoding"]
            assert with_payloads(part_a.get_content(), settings) == with_payloads(
                part_b.get_content(), settings
            )
        shapes.add(len(TOKEN.findall(a.get_body(("plain",)).get_content())))
    # One, two and no organisations to answer for were all compared.
    assert shapes == {0, 4, 8}


def test_names_are_escaped_in_html_and_encoded_in_headers(
    composer_and_deliveries: tuple[AlertEmailComposer, list[ClaimedDelivery]],
) -> None:
    composer, deliveries = composer_and_deliveries
    zoe = next(d for d in deliveries if d.recipient_email == "zoe@brookfield.example")
    message = parsed(composer.compose(zoe))
    assert message["To"].addresses[0].display_name == 'Zoë "Z" O\'Neil & <Co>'
    raw_headers = composer.compose(zoe).data.split(b"\r\n\r\n", 1)[0]
    assert raw_headers.isascii()
    html = message.get_body(("html",)).get_content()
    assert "Zoë &#34;Z&#34; O&#39;Neil &amp; &lt;Co&gt;" in html
    assert "Riverside &amp; Shore &lt;Acute&gt; NHS Trust" in html
    text = message.get_body(("plain",)).get_content()
    assert 'Dear Zoë "Z" O\'Neil & <Co>,' in text


def test_a_line_break_in_a_header_value_is_refused(
    composer_and_deliveries: tuple[AlertEmailComposer, list[ClaimedDelivery]],
) -> None:
    composer, deliveries = composer_and_deliveries
    delivery = replace(deliveries[0], recipient_name="Ann\r\nBcc: everyone@example.org")
    with pytest.raises(ValueError, match="line break"):
        composer.compose(delivery)


def test_the_text_is_sent_readable_not_in_base64(
    composer_and_deliveries: tuple[AlertEmailComposer, list[ClaimedDelivery]],
) -> None:
    composer, deliveries = composer_and_deliveries
    raj = next(d for d in deliveries if d.recipient_email == "raj@riverside.example")
    zoe = next(d for d in deliveries if d.recipient_email == "zoe@brookfield.example")
    plain_ascii = parsed(composer.compose(raj)).get_body(("plain",))
    assert plain_ascii is not None and plain_ascii["Content-Transfer-Encoding"] == "7bit"
    # Zoë's name is not ASCII: quoted-printable keeps the rest readable.
    for delivery in (raj, zoe):
        data = composer.compose(delivery).data
        assert b"base64" not in data
        assert b"Remote code execution in Example VPN Gateway" in data
        assert b"REMEDIATION\r\nUpgrade to 9.4.2." in data
    assert b"Dear Zo=C3=AB" in composer.compose(zoe).data


def test_the_subject_puts_reference_severity_and_deadline_first_and_fits_a_phone(
    session: Session, settings: Settings
) -> None:
    seed_people(session)
    long_title = "Remote code execution in the management interface of " + "Example " * 30
    alert_id = issue(session, title=long_title.strip()).alert.id
    session.commit()
    alert = session.get_one(Alert, alert_id)
    audience = {o.id: o for o in session.scalars(select(Organisation))}
    composer = AlertEmailComposer(alert, audience, settings, NOW)
    ids = list(session.scalars(select(Delivery.id).where(Delivery.alert_id == alert_id)))
    subjects = {
        d.recipient_email: str(parsed(composer.compose(d))["Subject"])
        for d in describe_deliveries(session, ids)
    }
    deadline = alert.deadline_at.astimezone(settings.zone)
    respond_by = f"Respond by {deadline:%a} {deadline.day} {deadline:%b %H:%M}: "
    assert subjects["raj@riverside.example"].startswith(f"[CC-4720 HIGH] {respond_by}Remote code")
    # An alert-only contact has nothing to respond by.
    assert subjects["tom@castleton.example"].startswith("[CC-4720 HIGH] Remote code execution")
    for subject in subjects.values():
        # Shortened at a word, saying so.
        assert len(f"Subject: {subject}") <= 78 and subject.endswith("...")
        assert subject.removesuffix("...").rsplit(" ", 1)[1] in long_title.split()
