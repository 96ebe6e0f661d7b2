"""Reminders, overdue notices and update-due (review-due) chasers to the
people of an organisation: the alert email again, with a short banner on
top saying why it comes, fresh status links and the reply form for only
the organisations still chased, in the thread of the alert email they
received, and with that email's reply address, so that a reply is read
as an answer to the alert."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.alerts.alert_email import AlertEmailComposer
from mailflow.alerts.deliveries import describe_deliveries
from mailflow.alerts.in_thread import queue_in_alert_thread
from mailflow.answers.statuses import AnswerStatus
from mailflow.config import Settings
from mailflow.core.mail.templates import counted, format_time
from mailflow.core.models import ChaseKind, ChaserEmail, Delivery, Organisation, OutgoingEmail
from mailflow.deadlines.rechecking import Recheck, StillChased, recheck_member

DEADLINE_PASSED = "the deadline passed before the reminder was composed"
NOT_SENT_THE_ALERT = "the person was not sent the alert"

SUBJECT_WORDS = {
    ChaseKind.REMINDER: "Reminder",
    ChaseKind.OVERDUE: "Overdue",
    ChaseKind.UPDATE_DUE: "Update due",
    ChaseKind.REVIEW_DUE: "Review due",
}


@dataclass(frozen=True)
class Banner:
    """What the top of the email says: a headline, a line per
    organisation, and what to do."""

    subject_word: str
    headline: str
    items: list[str]
    closing: str


def outgoing_kind(kind: ChaseKind) -> str:
    """The outbox's kind for a chasing email (``chase-reminder``)."""
    return f"chase-{kind.value}"


def compose_member_email(
    session: Session, settings: Settings, row: ChaserEmail, now: datetime
) -> OutgoingEmail | str:
    """The composer of reminder, overdue, update-due and review-due emails."""
    checked = recheck_member(session, row)
    if isinstance(checked, str):
        return checked
    alert, user = checked.alert, checked.user
    if row.kind is ChaseKind.REMINDER and now >= alert.deadline_at:
        # The overdue notice says it better now.
        return DEADLINE_PASSED
    delivery = session.scalar(
        select(Delivery).where(Delivery.alert_id == alert.id, Delivery.user_id == user.id)
    )
    if delivery is None:
        return NOT_SENT_THE_ALERT
    organisations = [c.organisation for c in checked.chased]
    # Links and the form for the chased organisations only.
    (described,) = describe_deliveries(session, [delivery.id])
    described = replace(described, roles={o.id: described.roles[o.id] for o in organisations})
    composer = AlertEmailComposer(alert, {o.id: o for o in organisations}, settings, now)
    context = composer.recipient_context(described) | {"chase": banner(settings, row, checked, now)}
    return queue_in_alert_thread(
        session,
        settings,
        template="chaser",
        context=context,
        alert=alert,
        delivery=delivery,
        user=user,
        kind=outgoing_kind(row.kind),
        now=now,
        extra_headers={"X-Mailflow-Chase": row.kind.value},
    )


def banner(settings: Settings, row: ChaserEmail, checked: Recheck, now: datetime) -> Banner:
    deadline = format_time(checked.alert.deadline_at, settings.zone)
    names = named([c.organisation for c in checked.chased])
    several = len(checked.chased) > 1
    word = SUBJECT_WORDS[row.kind]
    if row.kind is ChaseKind.REMINDER:
        whose = "Your organisations have" if several else "Your organisation has"
        return Banner(
            word,
            f"{whose} not answered yet: {time_left(checked.alert.deadline_at, now)}.",
            [f"Still to answer: {names}."],
            f"Record a status by {deadline}: choose one below, or reply to this email.",
        )
    if row.kind is ChaseKind.OVERDUE:
        return Banner(
            word,
            f"The deadline passed on {deadline}; {names} {'have' if several else 'has'} "
            "not answered.",
            [],
            "Record a status now: choose one below, or reply to this email.",
        )
    due_on = step_date(row.step)
    update = row.kind is ChaseKind.UPDATE_DUE
    whose = "your organisations'" if several else "your organisation's"
    return Banner(
        word,
        f"An update on {whose} remediation is due."
        if update
        else f"A review of {whose} answer is due.",
        [_owed_line(settings, update, c, due_on) for c in checked.chased],
        "Record where things stand now: choose a status below, or reply to this email.",
    )


def _owed_line(settings: Settings, update: bool, chased: StillChased, due_on: date | None) -> str:
    org = f"{chased.organisation.name} ({chased.organisation.code})"
    line = f"An update on the remediation at {org}" if update else f"A review of {org}'s answer"
    line += f" was due on {long_date(due_on)}." if due_on else " is due."
    last = chased.last
    if last is None:
        return line
    recorded_on = last.recorded_at.astimezone(settings.zone).date()
    line += f" Last recorded: {last.status.label} on {long_date(recorded_on)}"
    if last.status is AnswerStatus.IN_PROGRESS and last.expected_on:
        line += f", expected to finish by {long_date(last.expected_on)}"
    details = [
        f"{label}: {value.strip()}"
        for label, value in (
            ("Note", last.note),
            ("Reason", last.reason),
            ("Mitigations", last.mitigations),
        )
        if value and value.strip()
    ]
    return line + "." + "".join(f" {detail}" for detail in details)


def named(organisations: list[Organisation]) -> str:
    """'Riverside Acute NHS Trust (RXA) and Brookfield ... (RXB)'."""
    parts = [f"{o.name} ({o.code})" for o in organisations]
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def time_left(deadline: datetime, now: datetime) -> str:
    """'23 hours left', to the nearest hour; 'less than an hour left'."""
    hours = round((deadline - now).total_seconds() / 3600)
    return f"{counted(hours, 'hour')} left" if hours >= 1 else "less than an hour left"


def step_date(step: str) -> date | None:
    """The due date an update chaser's step names ('r1:2026-12-04')."""
    try:
        return date.fromisoformat(step.split(":", 1)[1])
    except (IndexError, ValueError):
        return None


def long_date(day: date) -> str:
    """'Friday 4 December 2026'."""
    return f"{day:%A} {day.day} {day:%B %Y}"
