"""The scheduler's digests task: while any alert is open, one queued
``digests`` row per active auditor whose schedule's period has fallen due,
and one ``send_digests`` job to compose them, in one transaction.

The rows are inserted from a SELECT (one statement per schedule, however
many auditors), and the unique key (auditor, period) makes a row another
pass or scheduler wrote first a no-op, so each period is queued once.  A
period is due only if an alert was already open when it began: an alert
issued at 10:00 is first in the next morning's digest, rather than in one
sent at once for the morning gone by."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, func, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from mailflow.core.jobs import add_job
from mailflow.core.mail.templates import short_time
from mailflow.core.models import (
    Alert,
    Digest,
    DigestSchedule,
    DigestState,
    NationalRole,
    User,
    UTCDateTime,
)
from mailflow.core.models.digests import SEND_DIGESTS
from mailflow.core.scheduling import SchedulerPass
from mailflow.reports.digest_policy import DigestPolicy

DIGEST_COLUMNS = ("user_id", "period_at", "schedule", "state", "batch", "created_at")


def open_alerts(as_at: datetime | None = None) -> ColumnElement[bool]:
    """Alerts that ask for answers and are not closed (and, given a time,
    had been issued by then)."""
    condition = and_(Alert.response_required.is_(True), Alert.closed_at.is_(None))
    if as_at is not None:
        condition = and_(condition, Alert.issued_at <= literal(as_at, UTCDateTime()))
    return condition


def _due(schedule: DigestSchedule, period_at: datetime) -> Select[Any]:
    """The auditors on this schedule due a digest for this period."""
    period = literal(period_at, UTCDateTime())
    return select(User.id).where(
        User.national_role == NationalRole.AUDITOR,
        User.active.is_(True),
        User.digest == schedule,
        exists().where(open_alerts(period_at)),
        ~exists().where(Digest.user_id == User.id, Digest.period_at == period),
    )


def _insert_due(
    session: Session, schedule: DigestSchedule, period_at: datetime, batch: str, now: datetime
) -> None:
    rows = _due(schedule, period_at).with_only_columns(
        User.id,
        literal(period_at, UTCDateTime()),
        literal(schedule.value),
        literal(DigestState.QUEUED.value),
        literal(batch),
        literal(now, UTCDateTime()),
    )
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(Digest.__table__).from_select(list(DIGEST_COLUMNS), rows)
    session.execute(statement.on_conflict_do_nothing())


def queue_digests(run: SchedulerPass) -> list[str]:
    """The task: the digests due at ``run.now``, one line per schedule."""
    periods = DigestPolicy.of(run.runtime.settings).periods_at(run.now)
    # A cheap look first, so that a pass with nothing due writes nothing.
    with run.reading() as session:
        due = {
            schedule: at
            for schedule, at in periods.items()
            if session.scalar(_due(schedule, at).limit(1)) is not None
        }
    if not due:
        return []
    batch = secrets.token_hex(8)
    with run.writing() as session:
        for schedule, period_at in due.items():
            _insert_due(session, schedule, period_at, batch, run.now)
        queued = dict(
            session.execute(
                select(Digest.schedule, func.count())
                .where(Digest.batch == batch)
                .group_by(Digest.schedule)
            ).all()
        )
        if queued:
            add_job(session, SEND_DIGESTS, {"batch": batch}, now=run.now)
    zone = run.runtime.settings.zone
    return [
        f"{schedule.value} digest for {short_time(at, zone)}: {queued[schedule]} auditor(s)"
        for schedule, at in due.items()
        if queued.get(schedule)
    ]
