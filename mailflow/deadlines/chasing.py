"""The scheduler's chasing task: for each open alert that must be answered,
the reminder due before its deadline, the overdue notices and the
escalation at it, and the auditors' follow-ups after it; then, across
alerts, the updates and reviews that are due.

Each kind of step is one transaction for every alert due it, holding
its chasers, the emails they cause and the job that composes them, so a
crash loses nothing and a second pass (or a second scheduler) finds the
rows and does nothing.  The statements are set-based and cover all the
alerts due a step at once, so a pass over a hundred national alerts costs
about what selecting their due rows does.  An alert-wide row marks each
step done, so a later pass skips the alert without scanning its audience
again."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailflow.answers.statuses import AnswerStatus
from mailflow.core.jobs import add_job
from mailflow.core.models import Alert, AlertUpdate, ChaseKind, Role, Severity, UTCDateTime

# The job that composes and queues a batch's chasing emails; named in
# core, so that `alert update` (alerts) can queue it too.
from mailflow.core.models.chasing import SEND_CHASERS as SEND_CHASERS
from mailflow.core.scheduling import SchedulerPass
from mailflow.deadlines import due
from mailflow.deadlines.policy import DEADLINE_STEP, ChasePolicy, step_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OpenAlert:
    id: int
    reference: str
    severity: str
    round: int
    deadline_at: datetime
    # When the round of answers began: the alert's issue, or the update
    # that asked for answers again.
    started_at: datetime


def open_alerts(session: Session) -> list[OpenAlert]:
    """Alerts that must be answered and are not closed."""
    asked_again = (
        select(func.max(AlertUpdate.published_at))
        .where(AlertUpdate.alert_id == Alert.id, AlertUpdate.answer_again.is_(True))
        .scalar_subquery()
    )
    rows = session.execute(
        select(
            Alert.id,
            Alert.reference,
            Alert.severity,
            Alert.round,
            Alert.deadline_at,
            func.coalesce(asked_again, Alert.issued_at, type_=UTCDateTime()),
        )
        .where(Alert.response_required.is_(True), Alert.closed_at.is_(None))
        .order_by(Alert.id)
    )
    return [OpenAlert(*row) for row in rows]


def new_batch() -> str:
    return secrets.token_hex(8)


def chase(run: SchedulerPass) -> list[str]:
    """The task: everything due at ``run.now``, one line per step taken."""
    policy = ChasePolicy.of(run.runtime.settings)
    with run.reading() as session:
        alerts = open_alerts(session)
        taken = due.alert_wide_steps(session, [alert.id for alert in alerts])
    found = _reminders_due(policy, alerts, taken, run.now) + _deadlines_due(alerts, taken, run.now)
    steps: tuple[tuple[str, Callable[[], list[str]]], ...] = (
        ("reminders and deadlines", lambda: _chase_alerts(run, found)),
        ("follow-ups", lambda: _follow_up(run, policy, alerts, taken)),
        ("updates", lambda: _chase_updates(run, policy)),
    )
    done: list[str] = []
    for name, step in steps:
        try:
            done.extend(step())
        except Exception:
            log.exception("chasing %s failed; the next pass tries again", name)
    return done


Taken = set[tuple[int, ChaseKind, str]]
# The ends of the lines a pass prints, filled in with its counts.
CHASED = "{} organisation(s), {} email(s)"
OVERDUE = "{} organisation(s) overdue, {} email(s)"


@dataclass(frozen=True)
class Due:
    """One alert due one step: the kind of its organisations' chasers, the
    kind of its alert-wide row, and how its line reads (given how many
    organisations were chased and emails queued)."""

    alert: OpenAlert
    kind: ChaseKind
    mark: ChaseKind
    step: str
    what: str
    counted: str

    def line(self, counts: tuple[int, int]) -> str:
        return self.what + self.counted.format(*counts)


def _reminders_due(
    policy: ChasePolicy, alerts: list[OpenAlert], taken: Taken, now: datetime
) -> list[Due]:
    """Alerts whose latest reminder point has passed (in working hours),
    unless that step or a later one was taken (a clock set back)."""
    found = []
    for alert in alerts:
        if now >= alert.deadline_at:
            continue
        step = policy.reminder_step(
            Severity(alert.severity),
            alert.round,
            alert.deadline_at,
            now,
            started_at=alert.started_at,
        )
        if step is not None and not any(
            (alert.id, ChaseKind.REMINDER, name) in taken for name in step.covered_by
        ):
            what = f"{alert.reference}: {step.hours}-hour reminder for "
            found.append(
                Due(alert, ChaseKind.REMINDER, ChaseKind.REMINDER, step.name, what, CHASED)
            )
    return found


def _deadlines_due(alerts: list[OpenAlert], taken: Taken, now: datetime) -> list[Due]:
    """Alerts whose deadline has passed and not yet been acted on: their
    organisations without an answer are marked overdue (the chaser row),
    their administrators are told, and the auditors get one escalation."""
    found = []
    for alert in alerts:
        step = step_name(alert.round, DEADLINE_STEP)
        if now >= alert.deadline_at and (alert.id, ChaseKind.ESCALATION, step) not in taken:
            what = f"{alert.reference}: deadline passed, "
            found.append(Due(alert, ChaseKind.OVERDUE, ChaseKind.ESCALATION, step, what, OVERDUE))
    return found


# Who hears of each kind of organisation chaser.
AUDIENCES = {
    ChaseKind.REMINDER: due.ANSWERING_ROLES,
    ChaseKind.OVERDUE: (Role.ADMINISTRATOR,),
}


def _queue_composing(session: Session, batch: str, now: datetime) -> dict[int, tuple[int, int]]:
    """What the batch wrote, per alert; the job that composes its emails."""
    counts = due.batch_counts(session, batch)
    if any(emails for _, emails in counts.values()):
        add_job(session, SEND_CHASERS, {"batch": batch}, now=now)
    return counts


def _chase_alerts(run: SchedulerPass, found: list[Due]) -> list[str]:
    """Every reminder and deadline due, in one transaction of a few
    set-based statements."""
    if not found:
        return []
    batch, now = new_batch(), run.now
    with run.writing() as session:
        marks = {d.alert.id: (d.mark, d.step) for d in found}
        due.add_alert_chasers(session, steps=marks, batch=batch, now=now)
        chasers = {d.alert.id: (d.kind, d.step) for d in found}
        due.add_organisation_chasers(session, steps=chasers, batch=batch, now=now)
        due.add_member_emails(session, batch=batch, roles=AUDIENCES, now=now)
        due.add_auditor_emails(
            session, batch=batch, marked=ChaseKind.ESCALATION, kind=ChaseKind.ESCALATION, now=now
        )
        counts = _queue_composing(session, batch, now)
    return [d.line(counts[d.alert.id]) for d in found if d.alert.id in counts]


def _follow_up(
    run: SchedulerPass, policy: ChasePolicy, alerts: list[OpenAlert], taken: Taken
) -> list[str]:
    """The auditors' follow-up on each follow-up day after the day the
    deadline was acted on (so an escalation sent late, after downtime,
    is not followed up the same day), for alerts some organisation has
    still not answered."""
    days = {}
    with run.reading() as session:
        escalated = due.escalated_at(session, [alert.id for alert in alerts])
        for alert in alerts:
            deadline_step = step_name(alert.round, DEADLINE_STEP)
            acted_on = escalated.get((alert.id, deadline_step), run.now)
            day = policy.follow_up_day(max(alert.deadline_at, acted_on), run.now)
            step = step_name(alert.round, day.isoformat()) if day else None
            if (
                day is not None
                and step is not None
                and (alert.id, ChaseKind.FOLLOW_UP, step) not in taken
                and due.any_unanswered(session, alert.id)
            ):
                days[alert.id] = (alert, step, day)
    if not days:
        return []
    batch = new_batch()
    with run.writing() as session:
        due.add_alert_chasers(
            session,
            steps={
                alert_id: (ChaseKind.FOLLOW_UP, step) for alert_id, (_, step, _) in days.items()
            },
            batch=batch,
            now=run.now,
        )
        due.add_auditor_emails(
            session, batch=batch, marked=ChaseKind.FOLLOW_UP, kind=ChaseKind.FOLLOW_UP, now=run.now
        )
        counts = _queue_composing(session, batch, run.now)
    return [
        f"{alert.reference}: overdue follow-up for {day.isoformat()}, "
        f"{counts[alert_id][1]} email(s)"
        for alert_id, (alert, _, day) in days.items()
        if alert_id in counts
    ]


UPDATE_KINDS = (
    (AnswerStatus.IN_PROGRESS, ChaseKind.UPDATE_DUE),
    (AnswerStatus.UNABLE, ChaseKind.REVIEW_DUE),
)


def _chase_updates(run: SchedulerPass, policy: ChasePolicy) -> list[str]:
    """In working hours: the organisations whose update (in progress) or
    review (unable) has fallen due, across all open alerts."""
    if not policy.is_working_time(run.now):
        return []
    today = policy.today(run.now)
    done: list[str] = []
    for status, kind in UPDATE_KINDS:
        with run.reading() as session:
            if not due.any_updates_due(session, status=status.value, today=today):
                continue
        batch = new_batch()
        with run.writing() as session:
            due.add_update_chasers(
                session, status=status.value, kind=kind, today=today, batch=batch, now=run.now
            )
            due.add_member_emails(
                session, batch=batch, roles={kind: due.ANSWERING_ROLES}, now=run.now
            )
            due.move_update_dates(
                session,
                status=status.value,
                today=today,
                next_on=policy.after_chasing(status.value, today),
            )
            chased, emails = due.batch_totals(session, batch)
            if emails:
                add_job(session, SEND_CHASERS, {"batch": batch}, now=run.now)
        if chased:
            done.append(f"{kind.value} for {chased} organisation(s), {emails} email(s)")
    return done
