"""The emails mailflow sends back to a person who replied: "confirm your
answer" with its single-use link, and "your reply was not recorded" with
the reasons and the form again."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy.orm import Session

from mailflow.answers.reply_form import LineProblem, build_reply_form
from mailflow.answers.statuses import AnswerStatus
from mailflow.answers.update_dates import OWES_UPDATES
from mailflow.config import Settings
from mailflow.core import links
from mailflow.core.mail.one_off import TheirMessage, ThreadHeaders, send_one_off
from mailflow.core.models import Alert, Answer, Confirmation, Organisation, PendingAnswer, User

CONFIRM_KIND = "confirm_answer"
PROBLEM_KIND = "reply_problem"


def confirmation_link(settings: Settings, confirmation: Confirmation, now: datetime) -> str:
    payload = {"c": confirmation.id, "n": confirmation.nonce, "u": confirmation.user_id}
    return links.make(settings, links.CONFIRM_LINK, payload, now)


@dataclass(frozen=True)
class AnswerLines:
    organisation: str
    code: str
    status: str
    details: list[tuple[str, str]]


def describe_answer(org: Organisation, pending: PendingAnswer | Answer) -> AnswerLines:
    """An answer (pending or recorded) as lines a person reads."""
    details: list[tuple[str, str]] = []
    status = AnswerStatus(pending.status)
    if pending.expected_on:
        details.append(("Expected completion", _day(pending.expected_on)))
    if pending.next_update_on and status in OWES_UPDATES:
        due = "Review due" if status is AnswerStatus.UNABLE else "Next update due"
        details.append((due, _day(pending.next_update_on)))
    if pending.reason:
        details.append(("Reason", pending.reason))
    if pending.mitigations:
        details.append(("Mitigations", pending.mitigations))
    if pending.note:
        details.append(("Note", pending.note))
    return AnswerLines(org.name, org.code, status.label, details)


def _day(value: date) -> str:
    return f"{value:%A} {value.day} {value:%B %Y}"


@dataclass(frozen=True)
class ReplyToAnswer:
    """The person's reply an email answers, and where it belongs: the
    stored inbound message, and the delivery (alert email) it replied to."""

    inbound_message_id: int
    message_id: str | None
    alert_message_id: str | None
    reply_key: str | None

    @property
    def thread(self) -> ThreadHeaders:
        """In the thread of the alert email they replied to, after their
        reply, which can be answered in turn."""
        return ThreadHeaders(self.alert_message_id, TheirMessage(self.message_id, self.reply_key))


def queue_confirmation_email(
    session: Session,
    settings: Settings,
    *,
    user: User,
    alert: Alert,
    confirmation: Confirmation,
    answers: Sequence[tuple[Organisation, PendingAnswer]],
    replying_to: ReplyToAnswer,
    now: datetime,
) -> None:
    """Queue, in the caller's transaction, "confirm your answer" with its
    single-use link."""
    send_one_off(
        session,
        settings,
        template="confirm",
        context={
            "recipient_name": user.name,
            "alert": alert,
            "link": confirmation_link(settings, confirmation, now),
            "expires_at": confirmation.expires_at,
            "answers": [describe_answer(org, pending) for org, pending in answers],
        },
        to=user,
        kind=CONFIRM_KIND,
        now=now,
        thread=replying_to.thread,
        inbound_message_id=replying_to.inbound_message_id,
    )


def queue_reply_problem_email(
    session: Session,
    settings: Settings,
    *,
    user: User,
    alert: Alert,
    reason: str,
    problems: Sequence[LineProblem],
    organisations: Sequence[Organisation],
    replying_to: ReplyToAnswer,
    now: datetime,
) -> None:
    """Queue, in the caller's transaction, "your reply was not recorded":
    why, and the form again."""
    form = build_reply_form([(o.code, o.name) for o in organisations]) if organisations else None
    send_one_off(
        session,
        settings,
        template="reply_problem",
        context={
            "recipient_name": user.name,
            "alert": alert,
            "reason": reason,
            "problems": list(problems),
            "form": form,
        },
        to=user,
        kind=PROBLEM_KIND,
        now=now,
        thread=replying_to.thread,
        inbound_message_id=replying_to.inbound_message_id,
    )
