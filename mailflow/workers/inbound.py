"""Processing a stored inbound message: a bounce marks its delivery; a
trusted reply becomes pending answers and a "confirm your answer" email; a
reply that cannot be read gets an email saying why; automatic mail and
anything untrusted get nothing.  Whatever happens, the raw message stays,
and an error leaves it marked failed for `mailflow inbound retry`."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.config import Settings
from mailflow.domain.confirmations import (
    AnswerToConfirm,
    answerable_organisations,
    record_pending_answers,
)
from mailflow.domain.deliveries import record_bounce
from mailflow.domain.inbound import fail_inbound, finish_inbound, is_duplicate
from mailflow.domain.models import (
    Alert,
    Delivery,
    InboundMessage,
    InboundState,
    Organisation,
    PendingAnswer,
    User,
)
from mailflow.domain.outgoing import queue_email, recent_count
from mailflow.mail.addresses import AddressKind
from mailflow.mail.inbound_mail import InboundReading, find_service_address, read_inbound
from mailflow.mail.replies import compose_confirmation_email, compose_reply_problem_email
from mailflow.mail.reply_form import LineProblem, ReplyNotUnderstood, parse_reply
from mailflow.mail.reply_text import reply_subject, written_text
from mailflow.workers.runtime import Runtime

log = logging.getLogger(__name__)

CONFIRM_KIND = "confirm_answer"
PROBLEM_KIND = "reply_problem"


def process_inbound(runtime: Runtime, message_id: int) -> None:
    try:
        with runtime.sessions.begin() as session:
            # Locked (on PostgreSQL; SQLite's transactions already take the
            # write lock), so a job delivered twice at once runs once.
            message = session.get(InboundMessage, message_id, with_for_update=True)
            if message is None or message.state != InboundState.RECEIVED:
                return  # already processed: a redelivered job does nothing
            message.attempts += 1
            state, outcome = _process(session, runtime.settings, message, runtime.clock())
            finish_inbound(session, message, state=state, outcome=outcome, now=runtime.clock())
            log.info("inbound message %s %s: %s", message_id, state, outcome)
    except Exception as exc:
        # Kept, with the error, for an operator: `mailflow inbound retry`.
        log.exception("processing inbound message %s failed", message_id)
        with runtime.sessions.begin() as session:
            fail_inbound(session, message_id, error=repr(exc)[:2000], now=runtime.clock())


def _process(
    session: Session, settings: Settings, message: InboundMessage, now: datetime
) -> tuple[InboundState, str]:
    ignored = InboundState.IGNORED
    if is_duplicate(session, message):
        return ignored, "a copy of a message already received"
    reading = read_inbound(
        message.raw,
        envelope_from=message.envelope_from,
        source=message.source,
        authserv_id=settings.authserv_id,
    )
    if reading.message is None:
        return ignored, reading.unreadable or "unreadable"
    to = find_service_address(message.envelope_to, reading.message, settings.mail_domain)

    if to is not None and to.kind is AddressKind.BOUNCE:
        report = reading.report
        if report is None or not report.failed:
            return ignored, "sent to a bounce address but not a failure report"
        delivery = record_bounce(session, bounce_key=to.key, description=report.describe(), now=now)
        if delivery is None:
            return ignored, "a bounce for no known delivery"
        return InboundState.PROCESSED, f"delivery {delivery.id} {report.describe()}"

    if reading.automatic:
        return ignored, f"automatic mail ({reading.automatic}): no answer"
    if to is None:
        return ignored, "not sent to a reply address"
    delivery = session.scalar(select(Delivery).where(Delivery.reply_key == to.key))
    if delivery is None:
        return ignored, "unknown reply key"
    user = session.get_one(User, delivery.user_id)
    if reading.sender is None:
        return ignored, "no From address"
    if reading.sender != user.email:
        # Never answer: the reply address may have been forwarded, and an
        # answer would tell a stranger about the alert.
        return ignored, f"sent from {reading.sender}, not the person the reply address belongs to"
    if reading.dmarc_failed:
        return ignored, "DMARC failed, as reported by our own mail server"

    alert = session.get_one(Alert, delivery.alert_id)
    organisations = answerable_organisations(session, user_id=user.id, alert_id=alert.id)
    if delivery.created_at < now - timedelta(days=settings.answer_link_days):
        return _reply_problem(
            session,
            settings,
            message,
            reading,
            delivery,
            user,
            alert,
            organisations,
            now,
            reason="This reply address has expired. Reply to a newer email about the alert.",
            problems=[],
            outcome="reply key expired",
        )
    if not user.active or not organisations:
        return _reply_problem(
            session,
            settings,
            message,
            reading,
            delivery,
            user,
            alert,
            [],
            now,
            reason="You do not answer for any organisation in this alert's audience.",
            problems=[],
            outcome="the sender answers for no organisation in the audience",
        )

    assert reading.message is not None
    text = written_text(reading.message)
    today = now.astimezone(settings.zone).date()
    try:
        subject = reply_subject(reading.message, reference=alert.reference, title=alert.title)
        answers = parse_reply(
            text, held=[o.code for o in organisations], today=today, subject=subject
        )
    except ReplyNotUnderstood as exc:
        return _reply_problem(
            session,
            settings,
            message,
            reading,
            delivery,
            user,
            alert,
            organisations,
            now,
            reason="Some of what you wrote could not be read as an answer:",
            problems=exc.problems,
            outcome="not understood: " + "; ".join(p.problem for p in exc.problems),
        )

    confirmation = record_pending_answers(
        session,
        user_id=user.id,
        alert_id=alert.id,
        delivery_id=delivery.id,
        inbound_message_id=message.id,
        answers=[
            AnswerToConfirm(
                a.organisation, a.status, a.note, a.reason, a.mitigations, a.expected_on
            )
            for a in answers
        ],
        now=now,
        lifetime=timedelta(hours=settings.confirm_link_hours),
    )
    by_id = {o.id: o for o in organisations}
    pending = session.scalars(
        select(PendingAnswer)
        .where(PendingAnswer.confirmation_id == confirmation.id)
        .order_by(PendingAnswer.id)
    )
    raw = compose_confirmation_email(
        settings,
        user=user,
        alert=alert,
        confirmation=confirmation,
        answers=[(by_id[p.organisation_id], p) for p in pending],
        in_reply_to=reading.message_id,
        reply_key=delivery.reply_key,
        now=now,
    )
    queue_email(
        session,
        kind=CONFIRM_KIND,
        recipient=user.email,
        mail_from="",
        raw=raw,
        now=now,
        inbound_message_id=message.id,
    )
    summary = ", ".join(f"{a.organisation} {a.status.value}" for a in answers)
    return InboundState.PROCESSED, f"pending answers recorded ({summary}); confirmation sent"


def _reply_problem(
    session: Session,
    settings: Settings,
    message: InboundMessage,
    reading: InboundReading,
    delivery: Delivery,
    user: User,
    alert: Alert,
    organisations: list[Organisation],
    now: datetime,
    *,
    reason: str,
    problems: list[LineProblem],
    outcome: str,
) -> tuple[InboundState, str]:
    """Tell the person why nothing was recorded, unless they have had too
    many such emails in the last hour (a loop with a broken mail client
    must not become a flood)."""
    sent = recent_count(
        session, recipient=user.email, kinds=[PROBLEM_KIND], since=now - timedelta(hours=1)
    )
    if sent >= settings.error_replies_per_hour:
        return InboundState.PROCESSED, f"{outcome}; no email (limit of error replies reached)"
    raw = compose_reply_problem_email(
        settings,
        user=user,
        alert=alert,
        reason=reason,
        problems=problems,
        organisations=organisations,
        in_reply_to=reading.message_id,
        reply_key=delivery.reply_key,
        now=now,
    )
    queue_email(
        session,
        kind=PROBLEM_KIND,
        recipient=user.email,
        mail_from="",
        raw=raw,
        now=now,
        inbound_message_id=message.id,
    )
    return InboundState.PROCESSED, f"{outcome}; told the sender"
