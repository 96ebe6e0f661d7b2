"""Asking for access as a test drives it: mail to access@ over real SMTP
into the inbound server (with the queue worker sending what comes back
through the capturing relay), the links those emails carry, and what the
database then holds."""

from __future__ import annotations

import re
import smtplib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailflow.access.request_emails import confirm_link
from mailflow.config import Settings
from mailflow.core import pending
from mailflow.core.mail.one_off import access_new_link
from mailflow.core.models import (
    AccessRequest,
    AuditEvent,
    InboundMessage,
    InboundState,
    Organisation,
    OutgoingEmail,
    PendingAction,
    User,
)
from mailflow.core.runtime import Runtime, utc_now
from mailflow.gateway.smtpd import InboundServer
from mailflow.workers.key_kinds import REPLY_KEY_KINDS
from mailflow.workers.queue import QueueWorker
from tests.support.mail import MAIL_DOMAIN, a_reply, parsed
from tests.support.waiting import wait_until

ACCESS = f"access@{MAIL_DOMAIN}"
CONFIRM_PATH = re.compile(r"https://mailflow\.test(/access/confirm/[^\s\"<]+)")
NEW_PATH = re.compile(r"https://mailflow\.test(/access/new/[^\s\"<]+)")


@dataclass
class MailService:
    """The inbound server and the queue worker of one runtime, running."""

    runtime: Runtime
    server: InboundServer

    def send(
        self, sender: str, body: str, *, headers: dict[str, str] | None = None, raw: bytes = b""
    ) -> InboundMessage:
        """Send ``body`` from ``sender`` to access@ and wait until it is handled."""
        before = self._latest()
        message = raw + a_reply(sender, ACCESS, body, subject="Access", headers=headers)
        address = sender.rsplit("<", 1)[-1].rstrip(">")
        with smtplib.SMTP("127.0.0.1", self.server.port) as client:
            client.sendmail(address, [ACCESS], message)
        wait_until(lambda: self._handled(before), timeout=20, what="the message to be handled")
        with self.runtime.sessions() as session:
            return session.scalars(select(InboundMessage).where(InboundMessage.id > before)).one()

    def _latest(self) -> int:
        with self.runtime.sessions() as session:
            return session.scalar(select(func.max(InboundMessage.id))) or 0

    def _handled(self, before: int) -> bool:
        with self.runtime.sessions() as session:
            state = session.scalar(select(InboundMessage.state).where(InboundMessage.id > before))
        return state is not None and state != InboundState.RECEIVED


@contextmanager
def mail_service(runtime: Runtime) -> Iterator[MailService]:
    server = InboundServer(runtime, "127.0.0.1", 0, key_kinds=REPLY_KEY_KINDS)
    worker = QueueWorker(runtime, poll_seconds=0.05)
    server.start()
    worker.start()
    try:
        yield MailService(runtime, server)
    finally:
        worker.stop()
        server.stop()


def emails(session: Session, *, kind: str, to: str | None = None) -> list[EmailMessage]:
    """The emails of ``kind`` queued (to ``to``), oldest first."""
    session.rollback()
    query = select(OutgoingEmail.raw).where(OutgoingEmail.kind == kind).order_by(OutgoingEmail.id)
    if to is not None:
        query = query.where(OutgoingEmail.recipient == to)
    return [parsed(raw) for raw in session.scalars(query)]


def requests(session: Session) -> list[AccessRequest]:
    session.rollback()
    return list(session.scalars(select(AccessRequest).order_by(AccessRequest.id)))


def pending_requests(session: Session) -> int:
    session.rollback()
    return session.scalar(select(func.count()).where(PendingAction.kind == "access-request")) or 0


def audit_of(session: Session, action: str) -> list[AuditEvent]:
    session.rollback()
    return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def pending_request_link(
    session: Session, settings: Settings, email: str, codes: list[str], reason: str = ""
) -> str:
    """The path of a "confirm your request" link, as if ``email`` had
    asked for ``codes`` by email just now."""
    person = session.scalars(select(User).where(User.email == email)).one()
    ids = list(session.scalars(select(Organisation.id).where(Organisation.code.in_(codes))))
    now = utc_now()
    action, token = pending.add(
        session,
        kind=pending.ACCESS_REQUEST,
        user_id=person.id,
        payload={"organisation_ids": ids, "reason": reason, "via": "email"},
        now=now,
        lifetime=timedelta(hours=settings.confirm_link_hours),
    )
    session.commit()
    return confirm_link(settings, action, token, now).removeprefix(settings.base_url)


def new_request_link(session: Session, settings: Settings, email: str) -> str:
    """The path of the footer link of an email to ``email``."""
    person = session.scalars(select(User).where(User.email == email)).one()
    return access_new_link(settings, person.id, utc_now()).removeprefix(settings.base_url)
