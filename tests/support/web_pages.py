"""The web pages as a test drives them: a seeded database with an alert,
three people with authenticator apps, the app behind Starlette's test
client, and the links the emails carry."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from html.parser import HTMLParser
from typing import Any

import pyotp
import pytest
import sqlalchemy as sa
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from mailflow.config import Settings
from mailflow.domain import mfa
from mailflow.domain.confirmations import AnswerToConfirm, record_pending_answers
from mailflow.domain.models import Alert, Base, Delivery, User
from mailflow.domain.statuses import AnswerStatus
from mailflow.mail.alert_email import answer_tokens
from mailflow.mail.replies import confirmation_link
from mailflow.web import create_app
from mailflow.workers.runtime import Runtime, utc_now
from tests.support.seed import issue, seed_people

BASE = "https://mailflow.test"


@pytest.fixture
def quick_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    # Recovery codes are hashed with scrypt; its full cost only slows tests.
    monkeypatch.setattr(mfa, "SCRYPT_N", 2**10)


# ------------------------------------------------------------------ helpers


def user_id(session: Session, email: str) -> int:
    return session.scalars(select(User.id).where(User.email == email)).one()


def enrol(session: Session, settings: Settings, email: str) -> str:
    """Set up the person's authenticator app ten minutes ago (so codes of
    now are unused) and return its secret."""
    uid = user_id(session, email)
    then = utc_now() - timedelta(minutes=10)
    secret = mfa.start_enrolment(session, user_id=uid, secret_key=settings.secret_key, now=then)
    mfa.finish_enrolment(
        session,
        user_id=uid,
        code=pyotp.TOTP(secret).at(then),
        secret_key=settings.secret_key,
        now=then,
    )
    session.commit()
    return secret


def answer_link(
    session: Session, settings: Settings, email: str, org_code: str, status: AnswerStatus
) -> str:
    """The path of a status link as the alert email carries it."""
    uid = user_id(session, email)
    alert = session.scalars(select(Alert)).one()
    delivery = session.scalars(
        select(Delivery).where(Delivery.user_id == uid, Delivery.alert_id == alert.id)
    ).one()
    org_id = session.scalar(
        sa.text("select id from organisations where code = :c"), {"c": org_code}
    )
    token = answer_tokens(settings).sign(
        {"d": delivery.id, "u": uid, "a": alert.id, "o": org_id, "s": status.value}
    )
    return f"/r/{token}"


def pending_link(
    session: Session, settings: Settings, email: str, answers: list[AnswerToConfirm]
) -> str:
    """The path of a "confirm your answer" link, as for a reply."""
    uid = user_id(session, email)
    alert = session.scalars(select(Alert)).one()
    confirmation = record_pending_answers(
        session,
        user_id=uid,
        alert_id=alert.id,
        delivery_id=None,
        inbound_message_id=None,
        answers=answers,
        now=utc_now(),
        lifetime=timedelta(hours=24),
    )
    session.commit()
    return confirmation_link(settings, confirmation).removeprefix(settings.base_url)


def row_counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            table.name: int(conn.scalar(select(func.count()).select_from(table)) or 0)
            for table in Base.metadata.sorted_tables
        }


ANSWER_TABLES = ("answers", "alert_statuses", "used_tokens", "outgoing_emails", "jobs")


def answer_counts(engine: sa.Engine) -> dict[str, int]:
    counts = row_counts(engine)
    return {name: counts[name] for name in ANSWER_TABLES}


class FormReader(HTMLParser):
    """The CSRF token, the error summary's links and each field's
    aria-describedby, read from a page."""

    def __init__(self) -> None:
        super().__init__()
        self.csrf: str | None = None
        self.summary_links: list[str] = []
        self.described: dict[str, str] = {}
        self.ids: set[str] = set()
        self.labels_for: set[str] = set()
        self.inputs: list[tuple[str, str]] = []
        self._in_summary = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "input" and a.get("name") == "csrf_token":
            self.csrf = a["value"]
        if tag == "div" and "error-summary" in a.get("class", ""):
            self._in_summary = True
        if tag == "a" and self._in_summary:
            self.summary_links.append(a["href"])
        if tag in ("input", "textarea") and a.get("type") != "hidden":
            self.inputs.append((a.get("id", ""), a.get("type", tag)))
            if "aria-describedby" in a:
                self.described[a["id"]] = a["aria-describedby"]
        if tag == "label":
            self.labels_for.add(a.get("for", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "ul" and self._in_summary:
            self._in_summary = False


def read_form(html: str) -> FormReader:
    reader = FormReader()
    reader.feed(html)
    return reader


@dataclass
class Web:
    settings: Settings
    runtime: Runtime
    app: Any
    client: TestClient
    session: Session
    engine: sa.Engine
    secrets: dict[str, str]

    def code(self, email: str, offset: timedelta = timedelta(0)) -> str:
        return pyotp.TOTP(self.secrets[email]).at(utc_now() + offset)

    def db(self) -> Session:
        """The test's session, with a fresh view of the database."""
        self.session.rollback()
        return self.session

    def fresh_client(self) -> TestClient:
        return TestClient(self.app, base_url=BASE)


@pytest.fixture
def web(
    settings: Settings, session: Session, engine: sa.Engine, quick_scrypt: None
) -> Iterator[Web]:
    seed_people(session)
    issue(session)
    session.commit()
    enrolled = {
        email: enrol(session, settings, email)
        for email in ("raj@riverside.example", "li@itservices.example", "bea@brookfield.example")
    }
    runtime = Runtime(settings)
    app = create_app(runtime)
    with TestClient(app, base_url=BASE) as client:
        yield Web(settings, runtime, app, client, session, engine, enrolled)
    runtime.close()


def post_form(client: TestClient, path: str, data: dict[str, Any]) -> Any:
    page = client.get(path)
    assert page.status_code == 200, page.text
    csrf = read_form(page.text).csrf
    assert csrf
    return client.post(path, data={"csrf_token": csrf, **data}, follow_redirects=True)
