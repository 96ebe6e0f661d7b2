"""The web pages as a test drives them: a seeded database with an alert,
three people with authenticator apps, the app behind Starlette's test
client, the links their emails carry, a client that fills in forms as a
browser does, and counts of what the database holds.

The ``web`` and ``quick_scrypt`` fixtures are registered for every test
by tests/conftest.py."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from html.parser import HTMLParser
from typing import Any

import itsdangerous
import pyotp
import pytest
import sqlalchemy as sa
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from mailflow.answers.answer_values import AnswerValue
from mailflow.answers.pending_answers import record_pending_answers
from mailflow.answers.reply_emails import confirmation_link
from mailflow.answers.statuses import AnswerStatus
from mailflow.config import Settings
from mailflow.core.links import ANSWER_LINK
from mailflow.core.models import Alert, Base, Delivery, OutgoingEmail, User
from mailflow.core.pages.security import session_cookie_name, session_secret
from mailflow.core.runtime import Runtime, utc_now
from mailflow.core.second_factor import mfa, recovery_codes
from mailflow.core.second_factor.verified_sessions import start_verified_session
from mailflow.web import create_app
from tests.support.seed import issue, seed_people

BASE = "https://mailflow.test"
ANSWER_TABLES = ("answers", "alert_statuses", "pending_actions", "outgoing_emails", "jobs")
ENROLLED = ("raj@riverside.example", "li@itservices.example", "bea@brookfield.example")


# ------------------------------------------------------- people and links


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
    token = ANSWER_LINK.tokens(settings).sign(
        {"d": delivery.id, "u": uid, "a": alert.id, "o": org_id, "s": status.value}
    )
    return f"/r/{token}"


def pending_link(
    session: Session, settings: Settings, email: str, answers: list[AnswerValue]
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
    return confirmation_link(settings, confirmation, utc_now()).removeprefix(settings.base_url)


# ------------------------------------------------- what the database holds


def row_counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            table.name: int(conn.scalar(select(func.count()).select_from(table)) or 0)
            for table in Base.metadata.sorted_tables
        }


def answer_counts(engine: sa.Engine) -> dict[str, int]:
    counts = row_counts(engine)
    return {name: counts[name] for name in ANSWER_TABLES}


def emails_of_kind(session: Session, kind: str) -> list[EmailMessage]:
    rows = session.scalars(
        select(OutgoingEmail.raw).where(OutgoingEmail.kind == kind).order_by(OutgoingEmail.id)
    ).all()
    out = []
    for raw in rows:
        parsed = message_from_bytes(raw, policy=default)
        assert isinstance(parsed, EmailMessage)
        out.append(parsed)
    return out


# ------------------------------------------------------------------- forms


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


def csrf_of(html: str) -> str:
    csrf = read_form(html).csrf
    assert csrf, "the page has no form with a CSRF token"
    return csrf


def post_form(client: TestClient, path: str, data: dict[str, Any]) -> Any:
    """Open the page, then submit its form with ``data``, as a browser does."""
    page = client.get(path)
    assert page.status_code == 200, page.text
    return client.post(path, data={"csrf_token": csrf_of(page.text), **data}, follow_redirects=True)


# ---------------------------------------------------------- session cookies


def read_session_cookie(settings: Settings, client: TestClient) -> dict[str, Any]:
    """What the browser's session cookie holds, as anyone who copies it can
    read it (it is signed, not encrypted)."""
    raw = client.cookies.get(session_cookie_name(settings))
    if raw is None:
        return {}
    signed = itsdangerous.TimestampSigner(session_secret(settings)).unsign(raw)
    data: dict[str, Any] = json.loads(base64.b64decode(signed))
    return data


def signed_session_cookie(settings: Settings, **data: Any) -> str:
    """A session cookie as the app signs it (Starlette's format)."""
    signer = itsdangerous.TimestampSigner(session_secret(settings))
    return signer.sign(base64.b64encode(json.dumps(data).encode())).decode()


def verified_session_cookie(
    settings: Settings, sessions: sessionmaker[Session], uid: int, csrf: str
) -> str:
    """The cookie of a browser that gave a right code for ``uid`` just now,
    with the server's record of it."""
    now = utc_now()
    with sessions.begin() as session:
        key = start_verified_session(session, user_id=uid, now=now)
    return signed_session_cookie(
        settings, csrf=csrf, uid=uid, verified_at=now.timestamp(), verified_key=key
    )


# ------------------------------------------------------------- the web app


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

    def fresh_client(self, address: str = "testclient", *, raise_errors: bool = True) -> TestClient:
        """Another browser, from ``address``; with ``raise_errors`` False it
        sees the error page where the test would otherwise get the error."""
        return TestClient(
            self.app,
            base_url=BASE,
            client=(address, 50000),
            raise_server_exceptions=raise_errors,
        )


def verified_client(web: Web, uid: int) -> tuple[TestClient, str]:
    """A client whose session gave a second factor for ``uid`` just now,
    and its CSRF token."""
    csrf = f"csrf-{uid}-{time.monotonic_ns()}"
    client = TestClient(web.app, base_url=BASE)
    client.cookies.set(
        session_cookie_name(web.settings),
        verified_session_cookie(web.settings, web.runtime.sessions, uid, csrf),
    )
    return client, csrf


@contextmanager
def running_web(settings: Settings, session: Session, engine: sa.Engine) -> Iterator[Web]:
    """The seeded people and alert, three of them with an authenticator
    app, and the web app with a browser open on it."""
    seed_people(session)
    issue(session)
    session.commit()
    enrolled = {email: enrol(session, settings, email) for email in ENROLLED}
    runtime = Runtime(settings)
    app = create_app(runtime)
    try:
        with TestClient(app, base_url=BASE) as client:
            yield Web(settings, runtime, app, client, session, engine, enrolled)
    finally:
        runtime.close()


@pytest.fixture
def quick_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    # Recovery codes are hashed with scrypt; its full cost only slows tests.
    monkeypatch.setattr(recovery_codes, "SCRYPT_N", 2**10)


@pytest.fixture
def web(
    settings: Settings, session: Session, engine: sa.Engine, quick_scrypt: None
) -> Iterator[Web]:
    with running_web(settings, session, engine) as running:
        yield running
