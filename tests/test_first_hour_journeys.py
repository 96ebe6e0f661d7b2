"""What a person meets in their first hour, as they would meet it: a reply
whose note must survive confirming, a link they cannot use because they
never set up their app, a link used already, and error pages that say what
to do next and whom to ask."""

from __future__ import annotations

import re
import smtplib

import pytest
from sqlalchemy import select

from mailflow.answers.statuses import AnswerStatus
from mailflow.core import pending
from mailflow.core.models import Answer, AuditEvent, OutgoingEmail
from mailflow.core.runtime import utc_now
from mailflow.gateway.smtpd import InboundServer
from mailflow.people.welcome_email import enrolment_link
from mailflow.workers.key_kinds import REPLY_KEY_KINDS
from mailflow.workers.queue import QueueWorker
from tests.support.mail import a_reply
from tests.support.pages import (
    BASE,
    Web,
    answer_counts,
    answer_link,
    post_form,
    read_form,
    user_id,
)
from tests.support.relay import CapturingRelay

README_REPLY = "RXA: in progress: patching tonight, expected 5 December"


def filled_in(html: str) -> dict[str, str]:
    """The values a page's text inputs and text areas hold, by name."""
    values = dict(
        re.findall(r'<input type="text" id="[^"]*" name="([^"]+)"[^>]*value="([^"]*)"', html)
    )
    values.update(re.findall(r'<textarea id="[^"]*" name="([^"]+)"[^>]*>([^<]*)</textarea>', html))
    return values


def welcome_emails(web: Web, email: str) -> list[OutgoingEmail]:
    return list(
        web.db().scalars(
            select(OutgoingEmail).where(
                OutgoingEmail.kind == "welcome", OutgoingEmail.recipient == email
            )
        )
    )


# ------------------------------------------------------- a reply's note


def test_the_readme_reply_keeps_its_note_and_date_when_confirmed(
    web: Web, relay: CapturingRelay
) -> None:
    server = InboundServer(web.runtime, "127.0.0.1", 0, key_kinds=REPLY_KEY_KINDS)
    worker = QueueWorker(web.runtime, poll_seconds=0.05)
    server.start()
    worker.start()
    try:
        alert_emails = relay.wait_for(6)
        to_raj = next(r for r in alert_emails if r.recipients == ["raj@riverside.example"])
        with smtplib.SMTP("127.0.0.1", server.port) as client:
            client.sendmail(
                "raj@riverside.example",
                [str(to_raj.message["Reply-To"])],
                a_reply(
                    "Raj Patel <raj@riverside.example>",
                    str(to_raj.message["Reply-To"]),
                    README_REPLY,
                    subject="Re: CC-4720",
                ),
            )
        confirm = relay.wait_for(7)[-1]
    finally:
        worker.stop()
        server.stop()
    text = confirm.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    [link] = re.findall(r"https://mailflow\.test(/c/\S+)", text)

    page = web.client.get(link)
    assert page.status_code == 200
    # The page shows what the reply said, so the person can see and change it.
    assert re.search(r'name="RXA-note"[^>]*>patching tonight', page.text)
    assert 'value="5"' in page.text and 'value="12"' in page.text

    # Submitted as a browser would: every field as the page filled it in.
    done = post_form(
        web.client, link, {**filled_in(page.text), "code": web.code("raj@riverside.example")}
    )

    assert done.status_code == 200, done.text
    answer = web.db().scalars(select(Answer)).one()
    assert answer.status == "in_progress"
    assert answer.note is not None and answer.note.startswith("patching tonight")
    assert answer.expected_on is not None and (
        answer.expected_on.day,
        answer.expected_on.month,
    ) == (5, 12)


def test_an_in_progress_link_asks_for_a_note_as_well_as_a_date(web: Web) -> None:
    path = answer_link(
        web.db(), web.settings, "raj@riverside.example", "RXA", AnswerStatus.IN_PROGRESS
    )

    done = post_form(
        web.client,
        path,
        {"note": "Half the estate patched", "code": web.code("raj@riverside.example")},
    )

    assert done.status_code == 200, done.text
    assert web.db().scalars(select(Answer.note)).one() == "Half the estate patched"


# ------------------------------------------------------- not yet enrolled


def test_a_person_without_an_app_is_told_so_and_can_have_a_set_up_link_emailed(web: Web) -> None:
    path = answer_link(
        web.db(), web.settings, "sam@castleton.example", "RXC", AnswerStatus.COMPLETE
    )
    before = len(welcome_emails(web, "sam@castleton.example"))

    page = web.client.get(path)
    assert page.status_code == 200
    assert "You have not set one up yet" in page.text
    assert 'id="code"' not in page.text  # no form they cannot submit
    assert f'action="{path}/setup-link"' in page.text
    # Opening the button's address, as a scanner might, sends nothing.
    assert web.client.get(f"{path}/setup-link").status_code == 405
    assert len(welcome_emails(web, "sam@castleton.example")) == before

    sent = web.client.post(f"{path}/setup-link", data={"csrf_token": read_form(page.text).csrf})

    assert sent.status_code == 200, sent.text
    assert "We have emailed you a set-up link" in sent.text
    emails = welcome_emails(web, "sam@castleton.example")
    assert len(emails) == before + 1
    assert b"/enrol/" in emails[-1].raw
    assert web.db().scalars(
        select(AuditEvent.action).where(AuditEvent.action == "mfa.setup_link_requested")
    ).all() == ["mfa.setup_link_requested"]


def test_set_up_links_are_limited_a_day_and_need_the_form_token(web: Web) -> None:
    path = answer_link(
        web.db(), web.settings, "sam@castleton.example", "RXC", AnswerStatus.COMPLETE
    )
    csrf = read_form(web.client.get(path).text).csrf

    forged = web.client.post(f"{path}/setup-link", data={"csrf_token": "forged"})
    assert forged.status_code == 403
    already = len(welcome_emails(web, "sam@castleton.example"))  # the welcome when added
    statuses = [
        web.client.post(f"{path}/setup-link", data={"csrf_token": csrf}).status_code
        for _ in range(4)
    ]

    allowed = 3 - already
    assert statuses == [200] * allowed + [429] * (4 - allowed)
    assert len(welcome_emails(web, "sam@castleton.example")) == 3
    last = web.client.post(f"{path}/setup-link", data={"csrf_token": csrf})
    assert "already sent you set-up links today" in last.text


def test_a_set_up_link_goes_only_to_the_person_the_link_belongs_to(web: Web) -> None:
    path = answer_link(
        web.db(), web.settings, "sam@castleton.example", "RXC", AnswerStatus.COMPLETE
    )
    raj_link = answer_link(
        web.db(), web.settings, "raj@riverside.example", "RXA", AnswerStatus.COMPLETE
    )
    # Raj is signed in on this browser (he entered a code), then opens Sam's link.
    assert post_form(web.client, raj_link, {"code": web.code("raj@riverside.example")}).is_success
    another = answer_link(
        web.db(), web.settings, "raj@riverside.example", "RXA", AnswerStatus.IN_PROGRESS
    )
    csrf = read_form(web.client.get(another).text).csrf
    before = answer_counts(web.engine)

    refused = web.client.post(f"{path}/setup-link", data={"csrf_token": csrf})

    assert refused.status_code == 403 and "sent to someone else" in refused.text
    assert answer_counts(web.engine) == before


def test_someone_already_enrolled_is_told_to_use_their_app(web: Web) -> None:
    path = answer_link(
        web.db(), web.settings, "raj@riverside.example", "RXA", AnswerStatus.COMPLETE
    )
    csrf = read_form(web.client.get(path).text).csrf
    before = answer_counts(web.engine)

    shown = web.client.post(f"{path}/setup-link", data={"csrf_token": csrf})

    assert shown.status_code == 200 and "already set up an authenticator app" in shown.text
    assert answer_counts(web.engine) == before


# ------------------------------------------------------- already recorded


def test_a_used_link_shows_who_recorded_what_and_when_and_how_to_update(web: Web) -> None:
    path = answer_link(
        web.db(), web.settings, "raj@riverside.example", "RXA", AnswerStatus.COMPLETE
    )
    assert post_form(web.client, path, {"code": web.code("raj@riverside.example")}).is_success

    again = web.fresh_client().get(path)

    assert again.status_code == 200
    assert "Riverside Acute NHS Trust (RXA): Complete, recorded by Raj Patel on" in again.text
    assert "reply to the alert email with the new status" in again.text
    assert "RXA: complete" in again.text


# ------------------------------------------------------- errors with a way out


@pytest.mark.parametrize("path", ["/no-such-page", "/r/not-a-token", "/c/not-a-token"])
def test_every_error_page_says_whom_to_write_to(web: Web, path: str) -> None:
    page = web.client.get(path)

    assert page.status_code in (400, 404)
    assert "If you need help" in page.text
    assert f'href="mailto:{web.settings.help_email}"' in page.text


def test_a_used_set_up_link_is_gone_not_ok(web: Web) -> None:
    raj = user_id(web.db(), "raj@riverside.example")
    link = enrolment_link(web.settings, raj).removeprefix(BASE)
    # Used up, as finishing enrolment with it does.
    pending.use_link_once(
        web.db(),
        kind=pending.ENROL_LINK_USE,
        token=link.rsplit("/", 1)[1],
        user_id=raj,
        now=utc_now(),
    )
    web.session.commit()

    page = web.client.get(link)

    assert page.status_code == 410
    assert "already been used" in page.text


def test_the_home_page_names_the_service_once_in_its_title(web: Web) -> None:
    page = web.client.get("/")

    assert "<title>Cyber alerts</title>" in page.text


def test_an_unable_answer_asks_why_it_cannot_be_fixed_not_why_it_does_not_apply(web: Web) -> None:
    unable = answer_link(
        web.db(), web.settings, "raj@riverside.example", "RXA", AnswerStatus.UNABLE
    )
    not_applicable = answer_link(
        web.db(), web.settings, "raj@riverside.example", "RXA", AnswerStatus.NOT_APPLICABLE
    )

    assert "Why the fix cannot be put in place" in web.client.get(unable).text
    assert "Why the alert does not apply" in web.client.get(not_applicable).text
