"""The scheduler's chasing task: for each open alert that must be answered,
the reminder due before its deadline, the overdue notices and the
escalation at it, and the auditors' follow-ups after it; then, across
alerts, the updates and reviews that are due.

Each step is one transaction holding its chasers, the emails they cause
and the job that composes them, so a crash loses nothing and a second
pass (or a second scheduler) finds the rows and does nothing.  An
alert-wide row marks each step done, so a later pass skips the alert
without scanning its audience again."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.answers.statuses import AnswerStatus
from mailflow.core.jobs import add_job
from mailflow.core.models import Alert, ChaseKind, Role, Severity

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


def open_alerts(session: Session) -> list[OpenAlert]:
    """Alerts that must be answered and are not closed."""
    rows = session.execute(
        select(Alert.id, Alert.reference, Alert.severity, Alert.round, Alert.deadline_at)
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
    done: list[str] = []
    for alert in alerts:
        try:
            done.extend(_chase_alert(run, policy, alert, taken))
        except Exception:
            log.exception("chasing alert %s failed; the next pass tries again", alert.reference)
    done.extend(_chase_updates(run, policy))
    return done


Taken = set[tuple[int, ChaseKind, str]]


def _chase_alert(
    run: SchedulerPass, policy: ChasePolicy, alert: OpenAlert, taken: Taken
) -> list[str]:
    if run.now < alert.deadline_at:
        return _remind(run, policy, alert, taken)
    deadline = step_name(alert.round, DEADLINE_STEP)
    done = [] if (alert.id, ChaseKind.ESCALATION, deadline) in taken else _escalate(run, alert)
    return done + _follow_up(run, policy, alert, taken)


def _queue_composing(session: Session, batch: str, now: datetime, emails: int) -> None:
    if emails:
        add_job(session, SEND_CHASERS, {"batch": batch}, now=now)


def _remind(run: SchedulerPass, policy: ChasePolicy, alert: OpenAlert, taken: Taken) -> list[str]:
    step = policy.reminder_step(Severity(alert.severity), alert.round, alert.deadline_at, run.now)
    if step is None or (alert.id, ChaseKind.REMINDER, step.name) in taken:
        return []
    batch = new_batch()
    with run.writing() as session:
        if not due.add_alert_chaser(
            session,
            alert_id=alert.id,
            kind=ChaseKind.REMINDER,
            step=step.name,
            batch=batch,
            now=run.now,
        ):
            return []
        organisations = due.add_organisation_chasers(
            session,
            alert_id=alert.id,
            kind=ChaseKind.REMINDER,
            step=step.name,
            skip_if_sent=step.covered_by,
            batch=batch,
            now=run.now,
        )
        emails = due.add_member_emails(
            session, batch=batch, kind=ChaseKind.REMINDER, roles=due.ANSWERING_ROLES, now=run.now
        )
        _queue_composing(session, batch, run.now, emails)
    return [
        f"{alert.reference}: {step.hours}-hour reminder for {organisations} organisation(s), "
        f"{emails} email(s)"
    ]


def _escalate(run: SchedulerPass, alert: OpenAlert) -> list[str]:
    """At the deadline: every organisation without an answer is marked
    overdue (its chaser row), its administrators are told, and the
    auditors get one escalation listing them."""
    step = step_name(alert.round, DEADLINE_STEP)
    batch = new_batch()
    with run.writing() as session:
        if not due.add_alert_chaser(
            session,
            alert_id=alert.id,
            kind=ChaseKind.ESCALATION,
            step=step,
            batch=batch,
            now=run.now,
        ):
            return []
        overdue = due.add_organisation_chasers(
            session,
            alert_id=alert.id,
            kind=ChaseKind.OVERDUE,
            step=step,
            skip_if_sent=(step,),
            batch=batch,
            now=run.now,
        )
        emails = due.add_member_emails(
            session, batch=batch, kind=ChaseKind.OVERDUE, roles=(Role.ADMINISTRATOR,), now=run.now
        )
        if overdue:
            emails += due.add_auditor_emails(
                session,
                alert_id=alert.id,
                kind=ChaseKind.ESCALATION,
                step=step,
                batch=batch,
                now=run.now,
            )
        _queue_composing(session, batch, run.now, emails)
    return [
        f"{alert.reference}: deadline passed, {overdue} organisation(s) overdue, {emails} email(s)"
    ]


def _follow_up(
    run: SchedulerPass, policy: ChasePolicy, alert: OpenAlert, taken: Taken
) -> list[str]:
    day = policy.follow_up_day(alert.deadline_at, run.now)
    if day is None:
        return []
    step = step_name(alert.round, day.isoformat())
    if (alert.id, ChaseKind.FOLLOW_UP, step) in taken:
        return []
    with run.reading() as session:
        if not due.any_unanswered(session, alert.id):
            return []
    batch = new_batch()
    with run.writing() as session:
        if not due.add_alert_chaser(
            session,
            alert_id=alert.id,
            kind=ChaseKind.FOLLOW_UP,
            step=step,
            batch=batch,
            now=run.now,
        ):
            return []
        emails = due.add_auditor_emails(
            session,
            alert_id=alert.id,
            kind=ChaseKind.FOLLOW_UP,
            step=step,
            batch=batch,
            now=run.now,
        )
        _queue_composing(session, batch, run.now, emails)
    return [f"{alert.reference}: overdue follow-up for {day.isoformat()}, {emails} email(s)"]


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
            chased = due.add_update_chasers(
                session, status=status.value, kind=kind, today=today, batch=batch, now=run.now
            )
            if not chased:
                continue
            emails = due.add_member_emails(
                session, batch=batch, kind=kind, roles=due.ANSWERING_ROLES, now=run.now
            )
            due.move_update_dates(
                session,
                status=status.value,
                today=today,
                next_on=policy.after_chasing(status.value, today),
            )
            _queue_composing(session, batch, run.now, emails)
        done.append(f"{kind.value} for {chased} organisation(s), {emails} email(s)")
    return done
