"""Replies to an alert email: its reply key belongs to a delivery, and
what the person wrote becomes pending answers for them to confirm.

The words are parsed before the write transaction, for the organisations
the person held then; inside it, if their organisations (or the day) have
changed, the handler asks for the reply to be parsed again outside."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from mailflow.answers.alert_reply import AlertReply
from mailflow.answers.answer_values import AnswerValue
from mailflow.answers.pending_answers import answerable_organisations
from mailflow.answers.reply_form import ReplyNotUnderstood, parse_reply
from mailflow.config import Settings
from mailflow.core.models import Alert, Delivery, User
from mailflow.gateway.context import KeyOwner, Outcome, PrepareAgain, ReplyContext
from mailflow.gateway.reading import InboundReading
from mailflow.gateway.reply_subject import reply_subject

# Asked at every RCPT to reply+KEY: built once, on the table rather than the
# mapped class, so that each call skips building the statement and the
# ORM's compile step (a third of the SMTP edge's time on a reply, py-spy).
_DELIVERIES = Delivery.__table__
_REPLY_KEY_IN_USE = select(_DELIVERIES.c.id).where(
    _DELIVERIES.c.reply_key == bindparam("key"),
    _DELIVERIES.c.created_at >= bindparam("since"),
)


def reply_key_in_use(session: Session, key: str, *, now: datetime, lifetime: timedelta) -> bool:
    """Whether ``key`` is the reply key of a delivery made within
    ``lifetime`` (the answer links' lifetime): the inbound edge takes mail
    for reply+KEY only then."""
    found = session.scalar(_REPLY_KEY_IN_USE, {"key": key, "since": now - lifetime})
    return found is not None


@dataclass(frozen=True)
class _AlertWords:
    """What of the alert reading a reply's subject needs."""

    reference: str
    title: str


@dataclass(frozen=True)
class _ParsedReply:
    """A reply's answers, parsed for the organisations the person held on
    the day, or why they could not be read."""

    held: tuple[str, ...]
    today: date
    answers: list[AnswerValue]
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


def _parse_beforehand(
    session: Session, delivery: Delivery, reading: InboundReading, today: date
) -> _ParsedReply | None:
    """The answers in a person's reply, parsed for the organisations the
    key's person holds now (the handler checks again under the lock)."""
    held = answerable_organisations(session, user_id=delivery.user_id, alert_id=delivery.alert_id)
    codes = tuple(o.code for o in held)
    if not codes:
        return None
    alert = session.get_one(Alert, delivery.alert_id)
    return _parse_answers(reading, _AlertWords(alert.reference, alert.title), codes, today)


class DeliveryReplies:
    """The reply key of an alert email: it belongs to one delivery."""

    name = "delivery"

    def accepts(self, session: Session, key: str, *, settings: Settings, now: datetime) -> bool:
        lifetime = timedelta(days=settings.answer_link_days)
        return reply_key_in_use(session, key, now=now, lifetime=lifetime)

    def owner(self, session: Session, key: str) -> KeyOwner | None:
        delivery = session.scalar(select(Delivery).where(Delivery.reply_key == key))
        if delivery is None:
            return None
        return KeyOwner(self, session.get_one(User, delivery.user_id), delivery)

    def prepare(
        self,
        session: Session,
        owner: KeyOwner,
        reading: InboundReading,
        *,
        settings: Settings,
        now: datetime,
    ) -> object:
        assert isinstance(owner.thing, Delivery)
        return _parse_beforehand(session, owner.thing, reading, _today(settings, now))

    def handle(self, reply: ReplyContext, prepared: object) -> Outcome:
        delivery = reply.owner.thing
        assert isinstance(delivery, Delivery)
        return _answer(reply, delivery, prepared)


def _today(settings: Settings, now: datetime) -> date:
    return now.astimezone(settings.zone).date()


def _answer(context: ReplyContext, delivery: Delivery, prepared: object) -> Outcome:
    session, settings, person = context.session, context.settings, context.owner.person
    alert = session.get_one(Alert, delivery.alert_id)
    organisations = answerable_organisations(session, user_id=person.id, alert_id=alert.id)
    reply = AlertReply(context, delivery, alert, organisations)
    if delivery.created_at < context.now - timedelta(days=settings.answer_link_days):
        return reply.not_recorded(
            reason="This reply address has expired. Reply to a newer email about the alert.",
            outcome="reply key expired",
        )
    if not person.active or not organisations:
        return reply.not_recorded(
            reason="You do not answer for any organisation in this alert's audience.",
            outcome="the sender answers for no organisation in the audience",
            form_for=[],
        )
    parsed = _still_valid(context, reply, prepared)
    if parsed.not_understood is not None:
        problems = parsed.not_understood.problems
        return reply.not_recorded(
            reason="Some of what you wrote could not be read as an answer:",
            outcome="not understood: " + "; ".join(p.problem for p in problems),
            problems=problems,
        )
    return reply.pending(parsed.answers)


def _still_valid(context: ReplyContext, reply: AlertReply, prepared: object) -> _ParsedReply:
    """What was parsed beforehand, if it was parsed for the organisations
    the person holds now and for today; else parse it again, outside."""
    held = tuple(o.code for o in reply.organisations)
    today = _today(context.settings, context.now)
    if isinstance(prepared, _ParsedReply) and (prepared.held, prepared.today) == (held, today):
        return prepared
    words, reading = _AlertWords(reply.alert.reference, reply.alert.title), context.reading
    raise PrepareAgain(lambda: _parse_answers(reading, words, held, today))
