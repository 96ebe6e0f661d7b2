"""Upgrading to pending actions keeps every link sent before it: a reply
waiting to be confirmed still confirms, once, and a link used before the
upgrade stays used.  The database is made by the schema before it
(revision 0006), filled as that code filled it, then upgraded."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pyotp
import pytest
import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from mailflow.answers.answer_values import AnswerValue
from mailflow.answers.pending_answers import record_pending_answers
from mailflow.answers.statuses import AnswerStatus
from mailflow.config import Settings
from mailflow.core.links import ANSWER_LINK, CONFIRM_LINK, ENROL_LINK
from mailflow.core.models import Alert, Answer, Delivery, PendingAction
from mailflow.core.runtime import Runtime, utc_now
from mailflow.db import migrate
from mailflow.web import create_app
from tests.support.pages import BASE, ENROLLED, enrol, post_form, user_id
from tests.support.seed import issue, seed_people

LI = "li@itservices.example"
RAJ = "raj@riverside.example"
SAM = "sam@castleton.example"


@dataclass(frozen=True)
class LinksFromBefore:
    confirmation_id: int
    confirm_path: str
    used_answer_path: str
    used_enrol_path: str


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _fill_as_before(session: Session, settings: Settings) -> LinksFromBefore:
    """What revision 0006 held after Li replied (not yet confirmed), Raj
    used a status link and Sam set up an app from a welcome link."""
    now = utc_now()
    # Columns, not the model: the model has columns revision 0006 lacks.
    alert = session.execute(select(Alert.id)).one()
    li, raj, sam = (user_id(session, e) for e in (LI, RAJ, SAM))
    org = {
        code: session.scalar(sa.text("select id from organisations where code = :c"), {"c": code})
        for code in ("RXA", "RXB", "RXC")
    }
    nonce = secrets.token_urlsafe(24)
    confirmation_id = session.scalar(
        sa.text(
            "insert into confirmations (user_id, alert_id, nonce, created_at, expires_at) "
            "values (:u, :a, :n, :c, :e) returning id"
        ),
        {"u": li, "a": alert.id, "n": nonce, "c": now, "e": now + timedelta(hours=24)},
    )
    for code, status, reason in (("RXB", "not_applicable", "We do not run it"),):
        session.execute(
            sa.text(
                "insert into pending_answers (confirmation_id, organisation_id, status, reason) "
                "values (:c, :o, :s, :r)"
            ),
            {"c": confirmation_id, "o": org[code], "s": status, "r": reason},
        )
    raj_delivery = session.scalars(select(Delivery.id).where(Delivery.user_id == raj)).one()
    answer_token = ANSWER_LINK.tokens(settings).sign(
        {"d": raj_delivery, "u": raj, "a": alert.id, "o": org["RXA"], "s": "complete"}
    )
    enrol_token = ENROL_LINK.tokens(settings).sign(
        {"u": sam, "n": secrets.token_urlsafe(12), "i": int(now.timestamp())}
    )
    for token, purpose, uid in ((answer_token, "answer", raj), (enrol_token, "enrol", sam)):
        session.execute(
            sa.text(
                "insert into used_tokens (digest, purpose, user_id, used_at) "
                "values (:d, :p, :u, :t)"
            ),
            {"d": _digest(token), "p": purpose, "u": uid, "t": now},
        )
    session.commit()
    confirm_token = CONFIRM_LINK.tokens(settings).sign({"c": confirmation_id, "n": nonce, "u": li})
    return LinksFromBefore(
        confirmation_id, f"/c/{confirm_token}", f"/r/{answer_token}", f"/enrol/{enrol_token}"
    )


@dataclass
class Upgraded:
    links: LinksFromBefore
    client: TestClient
    session: Session
    secrets: dict[str, str]


@pytest.fixture
def upgraded(
    settings: Settings, engine: sa.Engine, session: Session, quick_scrypt: None
) -> Iterator[Upgraded]:
    # People, the alert and apps are made by today's code (its tables have
    # grown since), then the schema goes back to 0006 for what only that
    # code wrote.
    seed_people(session)
    issue(session)
    session.commit()
    enrolled = {email: enrol(session, settings, email) for email in ENROLLED}
    session.close()
    migrate.downgrade(engine, "0006")
    links = _fill_as_before(session, settings)
    session.close()

    migrate.upgrade(engine)

    runtime = Runtime(settings)
    try:
        with TestClient(create_app(runtime), base_url=BASE) as client:
            yield Upgraded(links, client, session, enrolled)
    finally:
        runtime.close()


def test_a_reply_waiting_before_the_upgrade_is_confirmed_once_after_it(
    upgraded: Upgraded,
) -> None:
    path = upgraded.links.confirm_path
    page = upgraded.client.get(path)
    assert page.status_code == 200, page.text
    assert "We do not run it" in page.text

    code = pyotp.TOTP(upgraded.secrets[LI]).now()
    done = post_form(upgraded.client, path, {"RXB-reason": "We do not run it", "code": code})
    assert done.status_code == 200 and "Answer recorded" in done.text, done.text
    answers = upgraded.session.scalars(select(Answer)).all()
    assert [(a.status, a.via, a.confirmation_id) for a in answers] == [
        ("not_applicable", "reply", upgraded.links.confirmation_id)
    ]

    again = upgraded.client.get(path)
    assert again.status_code == 200 and "Already recorded" in again.text
    assert len(upgraded.session.scalars(select(Answer)).all()) == 1


def test_links_used_before_the_upgrade_stay_used(upgraded: Upgraded) -> None:
    status_link = upgraded.client.get(upgraded.links.used_answer_path)
    assert status_link.status_code == 200
    assert "An answer has already been recorded from this link" in status_link.text

    enrol_link = upgraded.client.get(upgraded.links.used_enrol_path)
    assert enrol_link.status_code == 410
    assert "This link has been used" in enrol_link.text


def test_a_reply_after_the_upgrade_gets_a_new_number_of_its_own(
    upgraded: Upgraded,
) -> None:
    alert = upgraded.session.scalars(select(Alert)).one()
    confirmation = record_pending_answers(
        upgraded.session,
        user_id=user_id(upgraded.session, LI),
        alert_id=alert.id,
        delivery_id=None,
        inbound_message_id=None,
        answers=[AnswerValue("RXC", AnswerStatus.COMPLETE)],
        now=utc_now(),
        lifetime=timedelta(hours=24),
    )
    upgraded.session.commit()
    ids = upgraded.session.scalars(select(PendingAction.id)).all()
    assert confirmation.id != upgraded.links.confirmation_id
    assert len(ids) == len(set(ids)) == 4


def test_going_back_to_the_schema_before_gives_every_row_back(
    upgraded: Upgraded, engine: sa.Engine
) -> None:
    upgraded.session.close()
    migrate.downgrade(engine, "0006")
    try:
        with engine.connect() as conn:
            confirmations = conn.execute(
                sa.text("select id, user_id, used_at, superseded_at from confirmations")
            ).all()
            used = conn.execute(sa.text("select purpose from used_tokens order by purpose")).all()
            pending_answers = conn.scalar(sa.text("select count(*) from pending_answers"))
    finally:
        # The PostgreSQL database is shared by the tests that follow.
        migrate.upgrade(engine)
    li = user_id(upgraded.session, LI)
    assert [tuple(row) for row in confirmations] == [
        (upgraded.links.confirmation_id, li, None, None)
    ]
    assert [row[0] for row in used] == ["answer", "enrol"]
    assert pending_answers == 1


def test_after_going_back_a_new_reply_takes_a_number_no_reply_has(
    upgraded: Upgraded, engine: sa.Engine
) -> None:
    # A reply confirmed after the upgrade took its number from the pending
    # actions; going back, the old numbering must start after it.
    alert = upgraded.session.scalars(select(Alert)).one()
    li = user_id(upgraded.session, LI)
    made_since = record_pending_answers(
        upgraded.session,
        user_id=li,
        alert_id=alert.id,
        delivery_id=None,
        inbound_message_id=None,
        answers=[AnswerValue("RXC", AnswerStatus.COMPLETE)],
        now=utc_now(),
        lifetime=timedelta(hours=24),
    ).id
    upgraded.session.commit()
    upgraded.session.close()
    migrate.downgrade(engine, "0006")
    try:
        with engine.begin() as conn:
            new_id = conn.scalar(
                sa.text(
                    "insert into confirmations (user_id, alert_id, nonce, created_at, expires_at)"
                    " values (:u, :a, :n, :t, :t) returning id"
                ),
                {"u": li, "a": alert.id, "n": secrets.token_urlsafe(24), "t": utc_now()},
            )
            conn.execute(sa.text("delete from confirmations where id = :i"), {"i": new_id})
    finally:
        migrate.upgrade(engine)
    assert new_id > made_since
