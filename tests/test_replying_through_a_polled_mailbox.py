"""Replies read from an IMAP mailbox (a real Dovecot) are processed like
those over SMTP, and a UIDVALIDITY change that makes the poller read the
mailbox again records nothing twice."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailflow.config import Settings, parse_imap_url
from mailflow.core.models import Confirmation, Delivery, InboundMessage, InboundState
from mailflow.core.runtime import Runtime
from mailflow.gateway.imap import ImapPoller
from mailflow.workers.inbound import process_inbound
from tests.support.dovecot import DovecotAccount
from tests.support.mail import reply
from tests.support.seed import issue, seed_people


def process_all(runtime: Runtime) -> None:
    with runtime.sessions() as session:
        waiting = list(
            session.scalars(
                select(InboundMessage.id).where(InboundMessage.state == InboundState.RECEIVED)
            )
        )
    for message_id in waiting:
        process_inbound(runtime, message_id)


def test_a_mailbox_read_again_after_a_uidvalidity_change_records_nothing_twice(
    dovecot: DovecotAccount,
    settings_for: object,
    database_url: str,
    session: Session,
) -> None:
    seed_people(session)
    issue(session)
    session.commit()
    ann = session.scalars(
        select(Delivery).where(Delivery.user.has(email="ann@riverside.example"))
    ).one()
    # Delivered by the organisation's MTA into the mailbox, with the reply
    # address kept in Delivered-To.
    raw = (
        b"Delivered-To: reply+"
        + ann.reply_key.encode()
        + b"@alerts.test\r\n"
        + reply("ann@riverside.example", "RXA: complete", key=ann.reply_key)
    )
    dovecot.append(raw)
    settings: Settings = settings_for(  # type: ignore[operator]
        database_url, imap_url=parse_imap_url(dovecot.url()), imap_after="seen", imap_poll_seconds=1
    )
    runtime = Runtime(settings)
    poller = ImapPoller(runtime)
    try:
        poller.poll_once()
        process_all(runtime)
        dovecot.change_uidvalidity()
        poller.poll_once()
        process_all(runtime)
    finally:
        poller.close()
        runtime.close()

    session.rollback()
    states = [m.state for m in session.scalars(select(InboundMessage).order_by(InboundMessage.id))]
    assert states == [InboundState.PROCESSED, InboundState.IGNORED]
    assert session.scalar(select(func.count()).select_from(Confirmation)) == 1
