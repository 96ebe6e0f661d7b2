"""The emails mailflow sends back to a person who replied: "confirm your
answer" with its single-use link, and "your reply was not recorded" with
the reasons and the form again."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from mailflow.config import Settings
from mailflow.domain.models import Alert, Answer, Confirmation, Organisation, PendingAnswer, User
from mailflow.domain.statuses import AnswerStatus
from mailflow.mail.addresses import reply_address
from mailflow.mail.messages import (
    AUTO_SUBMITTED_REPLIED,
    MessageHeaders,
    build_message,
    notification_headers,
    thread_headers,
)
from mailflow.mail.reply_form import LineProblem, build_reply_form
from mailflow.mail.templates import render_service_email
from mailflow.mail.tokens import Purpose, TokenService

CONFIRM_PATH = "/c/"


def confirm_tokens(settings: Settings) -> TokenService:
    return TokenService(
        settings.secret_key, Purpose.CONFIRM, timedelta(hours=settings.confirm_link_hours)
    )


def confirmation_link(settings: Settings, confirmation: Confirmation) -> str:
    token = confirm_tokens(settings).sign(
        {"c": confirmation.id, "n": confirmation.nonce, "u": confirmation.user_id}
    )
    return f"{settings.base_url}{CONFIRM_PATH}{token}"


@dataclass(frozen=True)
class AnswerLines:
    organisation: str
    code: str
    status: str
    details: list[tuple[str, str]]


def describe_answer(org: Organisation, pending: PendingAnswer | Answer) -> AnswerLines:
    """An answer (pending or recorded) as lines a person reads."""
    details: list[tuple[str, str]] = []
    if pending.expected_on:
        details.append(("Expected completion", _day(pending.expected_on)))
    if pending.reason:
        details.append(("Reason", pending.reason))
    if pending.mitigations:
        details.append(("Mitigations", pending.mitigations))
    if pending.note:
        details.append(("Note", pending.note))
    return AnswerLines(org.name, org.code, AnswerStatus(pending.status).label, details)


def _day(value: date) -> str:
    return f"{value:%A} {value.day} {value:%B %Y}"


def _headers(
    settings: Settings,
    user: User,
    now: datetime,
    *,
    in_reply_to: str | None,
    alert_message_id: str | None,
    reply_key: str | None,
) -> MessageHeaders:
    """Headers of an answer to a person's reply: in the thread of the alert
    email they replied to, after their reply."""
    return notification_headers(
        settings,
        user,
        now,
        reply_to=reply_address(reply_key, settings.mail_domain) if reply_key else None,
        auto_submitted=AUTO_SUBMITTED_REPLIED,
        extra=thread_headers(alert_message_id, in_reply_to),
    )


def compose_confirmation_email(
    settings: Settings,
    *,
    user: User,
    alert: Alert,
    confirmation: Confirmation,
    answers: Sequence[tuple[Organisation, PendingAnswer]],
    in_reply_to: str | None,
    reply_key: str | None,
    now: datetime,
    alert_message_id: str | None = None,
) -> bytes:
    rendered = render_service_email(
        settings,
        "confirm",
        {
            "recipient_name": user.name,
            "alert": alert,
            "link": confirmation_link(settings, confirmation),
            "expires_at": confirmation.expires_at,
            "answers": [describe_answer(org, pending) for org, pending in answers],
        },
    )
    headers = _headers(
        settings,
        user,
        now,
        in_reply_to=in_reply_to,
        alert_message_id=alert_message_id,
        reply_key=reply_key,
    )
    return bytes(build_message(rendered, headers))


def compose_reply_problem_email(
    settings: Settings,
    *,
    user: User,
    alert: Alert,
    reason: str,
    problems: Sequence[LineProblem],
    organisations: Sequence[Organisation],
    in_reply_to: str | None,
    reply_key: str | None,
    now: datetime,
    alert_message_id: str | None = None,
) -> bytes:
    form = build_reply_form([(o.code, o.name) for o in organisations]) if organisations else None
    rendered = render_service_email(
        settings,
        "reply_problem",
        {
            "recipient_name": user.name,
            "alert": alert,
            "reason": reason,
            "problems": list(problems),
            "form": form,
        },
    )
    headers = _headers(
        settings,
        user,
        now,
        in_reply_to=in_reply_to,
        alert_message_id=alert_message_id,
        reply_key=reply_key,
    )
    return bytes(build_message(rendered, headers))
