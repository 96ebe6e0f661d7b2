"""Access requests waiting for a decision, as the tests of deciding them
need: a second administrator at Riverside (RXA), Li Chen (who answers
for RXB and RXC) asking to answer for RXA, the decision emails and the
links and reply keys they carry."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from email.message import EmailMessage

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mailflow.access.decision_emails import send_to_deciders
from mailflow.access.decision_links import Verb, decision_link
from mailflow.access.requests import open_request
from mailflow.config import Settings
from mailflow.core.models import AccessRequest, Organisation, OutgoingEmail, User
from mailflow.core.runtime import Runtime, utc_now
from mailflow.people.users import add_user
from mailflow.workers.queue import QueueWorker
from tests.support.mail import parsed, plain_text
from tests.support.relay import CapturingRelay, Received
from tests.support.waiting import wait_until

ANN = "ann@riverside.example"
ADA = "ada@riverside.example"
LI = "li@itservices.example"
RAJ = "raj@riverside.example"
BEA = "bea@brookfield.example"
REASON = "we are their outsourced IT provider"


def add_second_administrator(session: Session) -> None:
    """Ada Brown, a second administrator of RXA (the seed has Ann)."""
    add_user(
        session, email=ADA, name="Ada Brown", role="administrator", org_code="RXA",
        now=utc_now(), actor="test",
    )  # fmt: skip
    session.commit()


def user(session: Session, email: str) -> User:
    return session.scalars(select(User).where(User.email == email)).one()


def organisation(session: Session, code: str) -> Organisation:
    return session.scalars(select(Organisation).where(Organisation.code == code)).one()


def ask(
    writer: Session | sessionmaker[Session],
    settings: Settings,
    *,
    requester: str = LI,
    org_code: str = "RXA",
    reason: str = REASON,
    now: datetime | None = None,
) -> AccessRequest:
    """A confirmed request, sent to the deciders, as the requests branch
    does it: ``open_request`` then ``send_to_deciders``; committed.  Give
    the runtime's sessions (not the test's own) while a worker runs: on
    SQLite they wait their turn to write."""
    if isinstance(writer, sessionmaker):
        with writer.begin() as session:
            return _ask(session, settings, requester, org_code, reason, now)
    request = _ask(writer, settings, requester, org_code, reason, now)
    writer.commit()
    return request


def _ask(
    session: Session,
    settings: Settings,
    requester: str,
    org_code: str,
    reason: str,
    now: datetime | None,
) -> AccessRequest:
    when = now or utc_now()
    request = open_request(
        session,
        settings,
        requester=user(session, requester),
        organisation=organisation(session, org_code),
        reason=reason,
        via="email",
        now=when,
        actor="test",
    )
    send_to_deciders(session, settings, request=request, now=when)
    session.flush()
    return request


def decision_emails(session: Session) -> dict[str, EmailMessage]:
    """The decision emails queued, by recipient."""
    rows = session.scalars(
        select(OutgoingEmail)
        .where(OutgoingEmail.kind.in_(["access_decide", "access_decide_reminder"]))
        .order_by(OutgoingEmail.id)
    ).all()
    return {row.recipient: parsed(row.raw) for row in rows}


def emails_to(session: Session, recipient: str, kind: str) -> list[EmailMessage]:
    session.rollback()
    rows = session.scalars(
        select(OutgoingEmail)
        .where(OutgoingEmail.recipient == recipient, OutgoingEmail.kind == kind)
        .order_by(OutgoingEmail.id)
    ).all()
    return [parsed(row.raw) for row in rows]


def links_in(message: EmailMessage, base_url: str, path: str) -> list[str]:
    """The links to ``base_url + path...`` in the email's text."""
    return re.findall(re.escape(base_url + path) + r"\S+", plain_text(message))


def path_of(link: str, settings: Settings) -> str:
    return link.removeprefix(settings.base_url)


def decide_path(
    settings: Settings, request_id: int, user_id: int, verb: Verb = Verb.APPROVE
) -> str:
    """The path of a decision link naming this request and person, as the
    decision email would carry it."""
    return path_of(decision_link(settings, request_id, user_id, verb, utc_now()), settings)


@contextmanager
def sending(runtime: Runtime) -> Iterator[QueueWorker]:
    """The queue worker, sending what is queued to the test's relay."""
    worker = QueueWorker(runtime, poll_seconds=0.05)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


def email_to(relay: CapturingRelay, to: str, subject: str, *, after: int = 0) -> Received:
    def found() -> list[Received]:
        return [
            r
            for r in relay.received[after:]
            if r.recipients == [to] and subject in str(r.message["Subject"])
        ]

    wait_until(lambda: bool(found()), timeout=20, what=f"an email to {to} about {subject!r}")
    return found()[0]
