"""Administrators managing their people, end to end and under attack: a
people line over real SMTP into the inbound server, read by the worker,
the confirm email caught at the relay, committed on the page with a code
and the welcome email caught too; a forged From (DMARC fail) to people@
records and sends nothing; the last two administrators removing each
other at the same moment leave one."""

from __future__ import annotations

import contextlib
import re
import smtplib
import threading
from collections.abc import Iterator
from typing import Any

import pyotp
import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from mailflow.access import people_changes
from mailflow.access.people_changes import apply_changes
from mailflow.access.people_lines import PeopleLine, Verb
from mailflow.config import Settings, parse_relay
from mailflow.core.errors import NotAllowed
from mailflow.core.models import InboundMessage, InboundState, Membership, OutgoingEmail, Role, User
from mailflow.core.runtime import Runtime, utc_now
from mailflow.gateway.smtpd import InboundServer
from mailflow.web.app import create_app
from mailflow.workers.key_kinds import REPLY_KEY_KINDS
from mailflow.workers.queue import QueueWorker
from tests.support.mail import a_reply, receive
from tests.support.pages import BASE, enrol, post_form, user_id
from tests.support.people_admin import ANN, PEOPLE
from tests.support.relay import CapturingRelay
from tests.support.seed import seed_people

RAJ = "raj@riverside.example"
JANE = "jane@riverside.example"


@pytest.fixture
def running(
    settings: Settings, session: Session, quick_scrypt: None
) -> Iterator[tuple[Runtime, InboundServer, str]]:
    """The inbound server, the queue worker and the web app on one
    database, with Ann (RXA's administrator) able to give codes."""
    seed_people(session)
    session.commit()
    secret = enrol(session, settings, ANN)
    runtime = Runtime(settings)
    server = InboundServer(runtime, "127.0.0.1", 0, key_kinds=REPLY_KEY_KINDS)
    worker = QueueWorker(runtime, poll_seconds=0.05)
    server.start()
    worker.start()
    try:
        yield runtime, server, secret
    finally:
        worker.stop()
        server.stop()
        runtime.close()


def _plain(received: Any) -> str:
    return str(received.message.get_body(("plain",)).get_content())


def test_a_line_over_smtp_is_confirmed_and_made(
    running: tuple[Runtime, InboundServer, str], relay: CapturingRelay, session: Session
) -> None:
    runtime, server, secret = running
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.sendmail(
            ANN, [PEOPLE], a_reply(ANN, PEOPLE, f"ADD {JANE} responder Jane Smith\n\nAnn")
        )

    [confirm] = relay.wait_for(1)
    assert confirm.recipients == [ANN]
    assert str(confirm.message["Reply-To"]).startswith("reply+")
    [path] = re.findall(rf"{BASE}(/people/confirm/\S+)", _plain(confirm))
    assert session.scalar(select(User.id).where(User.email == JANE)) is None

    with TestClient(create_app(runtime), base_url=BASE) as browser:
        done = post_form(browser, path, {"code": pyotp.TOTP(secret).now()})
    assert done.status_code == 200, done.text

    welcome = relay.wait_for(2)[-1]
    assert welcome.recipients == [JANE]
    assert "/enrol/" in _plain(welcome)
    session.rollback()
    role = session.scalar(
        select(Membership.role).where(Membership.user_id == user_id(session, JANE))
    )
    assert role == Role.RESPONDER


# ------------------------------------------------------ a forged From


@pytest.mark.parametrize(
    ("dmarc", "trusted"),
    [("fail", False), ("none", False), ("pass", True)],
)
def test_a_forged_sender_to_people_records_and_sends_nothing(
    settings_for: Any,
    database_url: str,
    relay: CapturingRelay,
    session: Session,
    dmarc: str,
    trusted: bool,
) -> None:
    seed_people(session)
    session.commit()
    settings = settings_for(
        database_url,
        authserv_id="mx.alerts.test",
        smtp_relay=parse_relay(f"smtp://127.0.0.1:{relay.port}"),
    )
    runtime = Runtime(settings)
    head = (
        "Authentication-Results: mx.alerts.test; spf=pass smtp.mailfrom=evil.example; "
        f"dmarc={dmarc} header.from=riverside.example\r\n"
    ).encode()
    try:
        for body in ("LIST", f"REMOVE {RAJ}"):
            message = receive(runtime, head + a_reply(ANN, PEOPLE, body), to=PEOPLE)
            if trusted:
                assert message.state == InboundState.PROCESSED, message.outcome
            else:
                assert message.state == InboundState.IGNORED
                assert "DMARC" in (message.outcome or "")
    finally:
        runtime.close()
    session.rollback()
    sent = session.scalars(select(OutgoingEmail.kind).order_by(OutgoingEmail.id)).all()
    assert sent == (["people_list", "people_confirm"] if trusted else [])
    stored = session.scalars(select(InboundMessage.state)).all()
    assert len(stored) == 2


# ------------------------------------------ the last two administrators


def test_the_last_two_administrators_removing_each_other_leave_one(
    settings: Settings, session: Session, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_people(session)
    session.execute(
        update(Membership)
        .where(Membership.user_id == user_id(session, RAJ))
        .values(role=Role.ADMINISTRATOR)
    )
    session.commit()
    ann, raj = user_id(session, ANN), user_id(session, RAJ)
    runtime = Runtime(settings)
    outcomes: dict[int, str] = {}
    # Each commit waits (a moment at most) just after taking the lock for
    # the other to reach the same point: with the lock the second cannot
    # get there until the first has committed, so the wait runs out; without
    # it both would go on to check "another administrator is left" at once.
    # SQLite's write transactions take turns from their start: no wait there.
    both_locked = threading.Barrier(2 if backend == "postgresql" else 1, timeout=2)
    lock = people_changes._lock_organisations

    def lock_then_wait(*args: Any, **kwargs: Any) -> Any:
        locked = lock(*args, **kwargs)
        with contextlib.suppress(threading.BrokenBarrierError):
            both_locked.wait()
        return locked

    monkeypatch.setattr(people_changes, "_lock_organisations", lock_then_wait)

    def remove(administrator: int, other: str) -> None:
        try:
            with runtime.sessions.begin() as own:
                apply_changes(
                    own,
                    settings,
                    administrator_id=administrator,
                    changes=[PeopleLine(Verb.REMOVE, code="RXA", email=other)],
                    now=utc_now(),
                )
            outcomes[administrator] = "removed"
        except NotAllowed as refused:
            outcomes[administrator] = str(refused)

    threads = [
        threading.Thread(target=remove, args=(ann, RAJ)),
        threading.Thread(target=remove, args=(raj, ANN)),
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        runtime.close()

    # One removal is made; the other finds its maker gone, or would leave
    # no administrator, and changes nothing.
    assert len(outcomes) == 2, outcomes
    assert list(outcomes.values()).count("removed") == 1, outcomes
    session.rollback()
    admins = session.scalars(
        select(User.email)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.role == Role.ADMINISTRATOR, User.active.is_(True))
    ).all()
    assert len(admins) == 1
