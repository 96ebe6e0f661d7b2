"""Processing a stored inbound message: a bounce marks its delivery; a
trusted reply becomes pending answers and a "confirm your answer" email; a
reply that cannot be read gets an email saying why; automatic mail and
anything untrusted get nothing.  Whatever happens, the raw message stays,
and an error leaves it marked failed for `mailflow inbound retry`.

Untrusted bytes are never parsed inside a write transaction (invariant 7):
the raw message is loaded in a read-only session, read in a child process
within a time bound, its answers parsed with another short read, and only
then is one short write transaction opened to check the message is still
unprocessed and record what became of it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.config import Settings
from mailflow.domain.confirmations import (
    AnswerToConfirm,
    answerable_organisations,
    confirmations_sent_since,
    record_pending_answers,
)
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
from mailflow.domain.outgoing import recent_count
from mailflow.domain.text import escape_controls
from mailflow.domain.users import lock_person
from mailflow.mail.addresses import AddressKind
from mailflow.mail.inbound_mail import InboundReading, find_service_address
from mailflow.mail.replies import (
    PROBLEM_KIND,
    ReplyToAnswer,
    queue_confirmation_email,
    queue_reply_problem_email,
)
from mailflow.mail.reply_form import Answer, LineProblem, ReplyNotUnderstood, parse_reply
from mailflow.mail.reply_text import reply_subject
from mailflow.workers.bounces import record_bounce_report
from mailflow.workers.bounded_reading import ReadingTookTooLong
from mailflow.workers.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Stored:
    """What reading a stored message needs, loaded in a short read."""

    raw: bytes
    envelope_from: str | None
    envelope_to: list[str]
    source: str


@dataclass(frozen=True)
class _AlertWords:
    """What of the alert reading a reply's subject needs."""

    reference: str
    title: str


class _ParseAgain(Exception):
    """The person's organisations (or the day) changed after the reply was
    parsed: parse it again, outside the write transaction."""

    def __init__(self, alert: _AlertWords, held: tuple[str, ...], today: date) -> None:
        super().__init__("parse the reply again")
        self.alert, self.held, self.today = alert, held, today


@dataclass(frozen=True)
class _ParsedReply:
    """A reply's answers, parsed for the organisations the person held on
    the day, or why they could not be read."""

    held: tuple[str, ...]
    today: date
    answers: list[Answer]
    not_understood: ReplyNotUnderstood | None = None


def _parse_answers(
    reading: InboundReading, alert: _AlertWords, held: tuple[str, ...], today: date
) -> _ParsedReply:
    """The answers in the body, or (as a last resort) in what the person
    added to the subject, for the organisations ``held``."""
    subject = reply_subject(reading.subject, reference=alert.reference, title=alert.title)
    try:
        answers = parse_reply(reading.text, held=list(held), today=today, subject=subject)
    except ReplyNotUnderstood as exc:
        return _ParsedReply(held, today, [], exc)
    return _ParsedReply(held, today, answers)


def process_inbound(runtime: Runtime, message_id: int) -> None:
    """Read the message with no transaction open and within a time bound,
    then record what became of it in one short write transaction: a
    hostile message must not hold the write lock while it is parsed."""
    try:
        stored = _load(runtime, message_id)
        if stored is None:
            return  # already processed: a redelivered job does nothing
        try:
            reading: InboundReading | ReadingTookTooLong = runtime.reader.read(
                stored.raw,
                envelope_from=stored.envelope_from,
                source=stored.source,
                authserv_id=runtime.settings.authserv_id,
            )
        except ReadingTookTooLong as exc:
            reading = exc
        parsed = None
        if isinstance(reading, InboundReading):
            parsed = _parse_beforehand(runtime, stored, reading)
        _record(runtime, message_id, reading, parsed)
    except Exception as exc:
        # Kept, with the error, for an operator: `mailflow inbound retry`.
        log.exception("processing inbound message %s failed", message_id)
        with runtime.sessions.begin() as session:
            fail_inbound(session, message_id, error=repr(exc)[:2000], now=runtime.clock())


def _load(runtime: Runtime, message_id: int) -> _Stored | None:
    # A reader's session: on SQLite it takes no write lock.
    with runtime.readers() as session:
        message = session.get(InboundMessage, message_id)
        if message is None or message.state != InboundState.RECEIVED:
            return None
        return _Stored(
            message.raw, message.envelope_from, list(message.envelope_to), message.source
        )


def _parse_beforehand(
    runtime: Runtime, stored: _Stored, reading: InboundReading
) -> _ParsedReply | None:
    """The answers in a person's reply, parsed before the write transaction
    for the organisations its reply key's person holds now (the recording
    checks again under the lock)."""
    settings = runtime.settings
    if reading.unreadable or reading.automatic or reading.sender is None:
        return None
    to = find_service_address(
        stored.envelope_to, reading, settings.mail_domain, source=stored.source
    )
    if to is None or to.kind is not AddressKind.REPLY:
        return None
    with runtime.readers() as session:
        delivery = session.scalar(select(Delivery).where(Delivery.reply_key == to.key))
        if delivery is None:
            return None
        held = answerable_organisations(
            session, user_id=delivery.user_id, alert_id=delivery.alert_id
        )
        codes = tuple(o.code for o in held)
        alert = session.get_one(Alert, delivery.alert_id)
        words = _AlertWords(alert.reference, alert.title)
    today = runtime.clock().astimezone(settings.zone).date()
    return _parse_answers(reading, words, codes, today) if codes else None


def _record(
    runtime: Runtime,
    message_id: int,
    reading: InboundReading | ReadingTookTooLong,
    parsed: _ParsedReply | None,
) -> None:
    # Untrusted text is never parsed inside the write transaction: when it
    # must be parsed again, the transaction is rolled back first.
    for _ in range(3):
        try:
            _record_once(runtime, message_id, reading, parsed)
            return
        except _ParseAgain as again:
            assert isinstance(reading, InboundReading)
            parsed = _parse_answers(reading, again.alert, again.held, again.today)
    raise RuntimeError("the person's organisations kept changing while the reply was read")


def _record_once(
    runtime: Runtime,
    message_id: int,
    reading: InboundReading | ReadingTookTooLong,
    parsed: _ParsedReply | None,
) -> None:
    now = runtime.clock()
    with runtime.sessions.begin() as session:
        # Locked (on PostgreSQL; SQLite's transactions already take the
        # write lock), so a job delivered twice at once records once.
        message = session.get(InboundMessage, message_id, with_for_update=True)
        if message is None or message.state != InboundState.RECEIVED:
            return
        message.attempts += 1
        if isinstance(reading, ReadingTookTooLong):
            # Not raised: the job is done, and is not run again by itself
            # (it would take as long again); an operator may retry it.
            fail_inbound(session, message_id, error=str(reading), now=now)
            log.warning("inbound message %s failed: %s", message_id, reading)
            return
        state, outcome = _process(session, runtime.settings, message, reading, parsed, now)
        finish_inbound(session, message, state=state, outcome=outcome, now=now)
        log.info("inbound message %s %s: %s", message_id, state, escape_controls(outcome))


def _process(
    session: Session,
    settings: Settings,
    message: InboundMessage,
    reading: InboundReading,
    parsed: _ParsedReply | None,
    now: datetime,
) -> tuple[InboundState, str]:
    ignored = InboundState.IGNORED
    if is_duplicate(session, message):
        return ignored, "a copy of a message already received"
    if reading.unreadable is not None:
        return ignored, reading.unreadable
    to = find_service_address(
        message.envelope_to, reading, settings.mail_domain, source=message.source
    )

    if to is not None and to.kind is AddressKind.BOUNCE:
        report = reading.report
        if report is None or not report.failed:
            return ignored, "sent to a bounce address but not a failure report"
        bounced = record_bounce_report(
            session, settings, bounce_key=to.key, description=report.describe(), now=now
        )
        if bounced is None:
            return ignored, "a bounce for no email we sent"
        return InboundState.PROCESSED, bounced

    if reading.automatic:
        return ignored, f"automatic mail ({reading.automatic}): no answer"
    if to is None:
        return ignored, "not sent to a reply address"
    delivery = session.scalar(select(Delivery).where(Delivery.reply_key == to.key))
    if delivery is None:
        return ignored, "unknown reply key"
    user = session.get_one(User, delivery.user_id)
    if reading.sender is None:
        return ignored, f"no trustworthy From address: {reading.sender_problem}"
    if reading.sender != user.email.lower():
        # Never answer: the reply address may have been forwarded, and an
        # answer would tell a stranger about the alert.
        return ignored, f"sent from {reading.sender}, not the person the reply address belongs to"
    if reading.dmarc_problem is not None:
        return ignored, reading.dmarc_problem

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

    held = tuple(o.code for o in organisations)
    today = now.astimezone(settings.zone).date()
    if parsed is None or (parsed.held, parsed.today) != (held, today):
        # The person's access (or the day) changed since it was parsed.
        raise _ParseAgain(_AlertWords(alert.reference, alert.title), held, today)
    answers, not_understood = parsed.answers, parsed.not_understood
    if not_understood is not None:
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
            problems=not_understood.problems,
            outcome="not understood: " + "; ".join(p.problem for p in not_understood.problems),
        )

    recent = confirmations_sent_since(session, user_id=user.id, since=now - timedelta(hours=1))
    if recent >= settings.confirm_emails_per_hour:
        # Kept raw, but no new link: genuine links in a flood would be the
        # attack (a forged sender is refused before this point).
        return ignored, "too many replies this hour: no confirmation sent"
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
    queue_confirmation_email(
        session,
        settings,
        user=user,
        alert=alert,
        confirmation=confirmation,
        answers=[(by_id[p.organisation_id], p) for p in pending],
        replying_to=ReplyToAnswer(
            message.id, reading.message_id, delivery.message_id, delivery.reply_key
        ),
        now=now,
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
    must not become a flood).  Counted under a lock on the person, so
    jobs running at once count in turn."""
    lock_person(session, user.id)
    sent = recent_count(
        session, recipient=user.email, kinds=[PROBLEM_KIND], since=now - timedelta(hours=1)
    )
    if sent >= settings.error_replies_per_hour:
        return InboundState.PROCESSED, f"{outcome}; no email (limit of error replies reached)"
    queue_reply_problem_email(
        session,
        settings,
        user=user,
        alert=alert,
        reason=reason,
        problems=problems,
        organisations=organisations,
        replying_to=ReplyToAnswer(
            message.id, reading.message_id, delivery.message_id, delivery.reply_key
        ),
        now=now,
    )
    return InboundState.PROCESSED, f"{outcome}; told the sender"
