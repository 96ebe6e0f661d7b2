"""Helpers for administrators managing their people: the web app with
Ann (RXA's administrator) enrolled, people lines sent to people@, and the
links the emails carry."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.config import Settings
from mailflow.core.models import InboundMessage, OutgoingEmail
from tests.support.mail import a_reply, parsed, plain_text, receive
from tests.support.pages import Web, enrol, running_web

DOMAIN = "alerts.test"
PEOPLE = f"people@{DOMAIN}"
ANN = "ann@riverside.example"


def admin_fixture() -> Any:
    """The ``admin_web`` fixture, for a test module to bind to that name."""
    return pytest.fixture(name="admin_web")(_admin_web)


def _admin_web(
    settings: Settings, session: Session, engine: sa.Engine, quick_scrypt: None
) -> Iterator[Web]:
    """The seeded people and alert, with Ann (administrator of RXA) able
    to give codes."""
    with running_web(settings, session, engine) as running:
        running.secrets[ANN] = enrol(session, settings, ANN)
        yield running


def send_lines(
    web: Web, sender: str, body: str, *, to: str = PEOPLE, headers: dict[str, str] | None = None
) -> InboundMessage:
    """People lines emailed by ``sender`` to people@ (or a reply key)."""
    raw = a_reply(sender, to, body, subject="People", headers=headers)
    return receive(web.runtime, raw, to=to, envelope_from=sender)


def emails(session: Session, kind: str | None = None) -> list[OutgoingEmail]:
    session.rollback()
    query = select(OutgoingEmail).order_by(OutgoingEmail.id)
    if kind is not None:
        query = query.where(OutgoingEmail.kind == kind)
    return list(session.scalars(query))


def text_of(email: OutgoingEmail) -> str:
    return plain_text(parsed(email.raw))


def link_in(email: OutgoingEmail, prefix: str) -> str:
    """The path of the first link in the email starting with ``prefix``."""
    found = re.findall(
        rf"https://mailflow\.test({re.escape(prefix)}[A-Za-z0-9_.\-]+)", text_of(email)
    )
    assert found, text_of(email)
    return found[0]


def reply_key_of(email: OutgoingEmail) -> str:
    reply_to = parsed(email.raw)["Reply-To"]
    assert reply_to, "no Reply-To"
    return str(reply_to)
