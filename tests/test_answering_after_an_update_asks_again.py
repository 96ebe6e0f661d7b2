"""An update that asks for answers again starts a new round: an answer
asked for before it (a status link in the first alert email, a reply
waiting to be confirmed) belongs to the round that ended, and is refused
with a page that says why, rather than counted for the new round."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from mailflow.alerts.alert_files import parse_update_spec
from mailflow.alerts.updates import publish_update
from mailflow.answers.answer_values import AnswerValue
from mailflow.answers.statuses import AnswerStatus
from mailflow.core.models import Answer
from mailflow.core.runtime import utc_now
from tests.support.pages import Web, answer_link, pending_link, post_form

ASK_AGAIN = {"summary": "9.4.2 does not fix every configuration.", "answer_again": True}


def ask_again(web: Web, after: timedelta) -> None:
    """The update, published ``after`` from now (the links the test made
    just before are older than it, or, made after a negative one, newer)."""
    session = web.db()
    spec = parse_update_spec(ASK_AGAIN, source="test")
    publish_update(session, "CC-4720", spec, now=utc_now() + after, actor="test")
    session.commit()


def test_a_status_link_from_before_the_update_records_nothing(web: Web) -> None:
    path = answer_link(
        web.db(), web.settings, "raj@riverside.example", "RXA", AnswerStatus.COMPLETE
    )
    ask_again(web, timedelta(seconds=2))

    page = post_form(web.client, path, {"note": "", "code": web.code("raj@riverside.example")})

    assert page.status_code == 409
    assert "This alert has been updated" in page.text
    assert "asks for answers again" in page.text
    assert web.db().scalars(select(Answer)).all() == []


def test_a_reply_confirmed_after_the_update_records_nothing(web: Web) -> None:
    path = pending_link(
        web.db(),
        web.settings,
        "li@itservices.example",
        [AnswerValue("RXB", AnswerStatus.COMPLETE)],
    )
    ask_again(web, timedelta(seconds=2))

    page = post_form(web.client, path, {"code": web.code("li@itservices.example")})

    assert page.status_code == 409
    assert "This alert has been updated" in page.text
    assert web.db().scalars(select(Answer)).all() == []


def test_a_link_made_after_the_update_is_recorded(web: Web) -> None:
    ask_again(web, -timedelta(minutes=1))
    path = answer_link(
        web.db(), web.settings, "raj@riverside.example", "RXA", AnswerStatus.COMPLETE
    )

    page = post_form(web.client, path, {"note": "", "code": web.code("raj@riverside.example")})

    assert page.status_code == 200, page.text
    assert [a.status for a in web.db().scalars(select(Answer))] == ["complete"]
