"""Helpers for tests of the web pages: people with an authenticator app,
the links their emails carry, a client that fills in forms as a browser
does, and counts of what the database holds."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from typing import Any

import itsdangerous
import pyotp
import sqlalchemy as sa
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from mailflow.config import Settings
from mailflow.domain import mfa
from mailflow.domain.models import Alert, Base, Delivery, OutgoingEmail, User
from mailflow.domain.statuses import AnswerStatus
from mailflow.domain.verified_sessions import start_verified_session
from mailflow.mail.alert_email import answer_tokens
from mailflow.web import create_app
from mailflow.web.security import session_cookie_name, session_secret
from mailflow.workers.runtime import Runtime, utc_now
from tests.support.seed import issue, seed_people

BASE = "https://mailflow.test"
ANSWER_TABLES = ("answers", "alert_statuses", "used_tokens", "outgoing_emails", "jobs")
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


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


def row_counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            table.name: int(conn.scalar(select(func.count()).select_from(table)) or 0)
            for table in Base.metadata.sorted_tables
        }


def answer_counts(engine: sa.Engine) -> dict[str, int]:
    counts = row_counts(engine)
    return {name: counts[name] for name in ANSWER_TABLES}


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def post_form(client: TestClient, path: str, data: dict[str, Any]) -> Any:
    """Open the page, then submit its form with ``data``, as a browser does."""
    page = client.get(path)
    assert page.status_code == 200, page.text
    return client.post(path, data={"csrf_token": csrf_of(page.text), **data}, follow_redirects=True)


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


ENROLLED = ("raj@riverside.example", "li@itservices.example", "bea@brookfield.example")


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
