"""Publishing an update to an alert (`mailflow alert update`): what changed
(new remediation text, new CVEs) goes to every recipient in the thread of
the alert email; an update that says "answer again" starts a new round of
answers, with its own deadline and its own chasers.

The emails are chaser emails (kind ``alert-update``, step ``u{number}``),
composed by the job that composes the scheduler's chasers, so that each
one is written with the update and sent once."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)
from sqlalchemy import (
    ColumnElement,
    SQLColumnExpression,
    and_,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
)
from sqlalchemy.orm import Session

from mailflow.alerts.issuing import MAX_DEADLINE_HOURS, checked_cves, get_alert
from mailflow.core.audit import record_event
from mailflow.core.errors import InvalidInput
from mailflow.core.jobs import add_job
from mailflow.core.models import (
    Alert,
    AlertAudience,
    AlertStatus,
    AlertUpdate,
    ChaseKind,
    ChaserEmail,
    ChaserEmailState,
    Delivery,
    Membership,
    User,
    UTCDateTime,
)
from mailflow.core.models.chasing import SEND_CHASERS

DEFAULT_DEADLINE_HOURS = 48
MAX_SUMMARY = 2000
MAX_REMEDIATION = 20000


Summary = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_SUMMARY)
]
Remediation = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_REMEDIATION)
]


class UpdateSpec(BaseModel):
    """What a publisher writes to update an alert.  Strict: a TOML or JSON
    file gives each field its own type, and "yes" is not a boolean."""

    model_config = ConfigDict(extra="forbid", strict=True)

    summary: Summary
    remediation: Remediation | None = None
    cves: list[str] = Field(default_factory=list, max_length=100)
    answer_again: bool = False
    deadline_hours: int | None = Field(default=None, ge=1, le=MAX_DEADLINE_HOURS)

    @field_validator("cves")
    @classmethod
    def _cves_look_like_cves(cls, values: list[str]) -> list[str]:
        return checked_cves(values)

    @field_validator("deadline_hours")
    @classmethod
    def _only_for_a_new_round(cls, value: int | None, info: ValidationInfo) -> int | None:
        # answer_again is declared first, so it has been read by now.
        if value is not None and not info.data.get("answer_again"):
            raise ValueError("a new deadline needs answer_again = true")
        return value


@dataclass(frozen=True)
class PublishedUpdate:
    reference: str
    number: int
    answer_again: bool
    round: int
    deadline_at: datetime
    added_cves: list[str]
    recipients: int
    # Organisations whose status was cleared, to be given again.
    reopened: int


def publish_update(
    session: Session, reference: str, spec: UpdateSpec, *, now: datetime, actor: str
) -> PublishedUpdate:
    """Record the update, change the alert, and queue one email per person
    who was sent the alert and is still active, all in the caller's
    transaction.  Raises NotFound for an unknown reference and InvalidInput
    for a closed alert."""
    alert = get_alert(session, reference)
    if alert.closed_at is not None:
        raise InvalidInput(
            f"alert {alert.reference}",
            f"it was closed at {alert.closed_at.isoformat(timespec='minutes')} "
            "and takes no updates",
        )
    number = 1 + (
        session.scalar(select(func.max(AlertUpdate.number)).where(AlertUpdate.alert_id == alert.id))
        or 0
    )
    added = [cve for cve in dict.fromkeys(spec.cves) if cve not in alert.cves]
    update = AlertUpdate(
        alert_id=alert.id,
        number=number,
        summary=spec.summary,
        remediation=spec.remediation,
        cves=added,
        answer_again=spec.answer_again,
        deadline_at=None,
        published_at=now,
        published_by=actor,
    )
    session.add(update)
    if spec.remediation is not None:
        alert.remediation = spec.remediation
    if added:
        alert.cves = [*alert.cves, *added]
    reopened = 0
    if spec.answer_again:
        hours = spec.deadline_hours or DEFAULT_DEADLINE_HOURS
        update.deadline_at = _start_new_round(alert, now + timedelta(hours=hours))
        reopened = _clear_statuses(session, alert.id)
    session.flush()
    batch = secrets.token_hex(8)
    recipients = _queue_update_emails(session, alert.id, f"u{number}", batch, now)
    if recipients:
        add_job(session, SEND_CHASERS, {"batch": batch}, now=now)
    record_event(
        session,
        at=now,
        actor=actor,
        action="alert.updated",
        subject=f"alert:{alert.reference}",
        number=number,
        summary=spec.summary,
        remediation_changed=spec.remediation is not None,
        cves_added=added,
        answer_again=spec.answer_again,
        round=alert.round,
        deadline=alert.deadline_at.isoformat(),
        statuses_cleared=reopened,
        recipients=recipients,
    )
    return PublishedUpdate(
        alert.reference,
        number,
        spec.answer_again,
        alert.round,
        alert.deadline_at,
        added,
        recipients,
        reopened,
    )


def _start_new_round(alert: Alert, deadline: datetime) -> datetime:
    """The next round of answers: its chasers are named ``r{round}:...``,
    so the scheduler reminds and escalates afresh against the new deadline."""
    alert.round += 1
    alert.deadline_at = deadline
    return deadline


def _clear_statuses(session: Session, alert_id: int) -> int:
    """Every organisation counts as unanswered again.  The answers
    themselves stay in the history; only the current statuses go (and
    with them any update or review that was due)."""
    cleared = session.scalar(
        select(func.count()).select_from(AlertStatus).where(AlertStatus.alert_id == alert_id)
    )
    session.execute(
        delete(AlertStatus)
        .where(AlertStatus.alert_id == alert_id)
        .execution_options(synchronize_session=False)
    )
    return int(cleared or 0)


def still_in_audience(
    alert_id: int, user_id: SQLColumnExpression[int] | int
) -> ColumnElement[bool]:
    """The person holds a role, today, at one of the alert's organisations:
    someone who has left them is told nothing more about it."""
    return exists().where(
        Membership.user_id == user_id,
        Membership.organisation_id == AlertAudience.organisation_id,
        AlertAudience.alert_id == alert_id,
    )


def _queue_update_emails(
    session: Session, alert_id: int, step: str, batch: str, now: datetime
) -> int:
    """One queued chaser email per person who was sent the alert (their
    delivery holds the thread and the reply key), is still active and
    still holds a role at an organisation the alert went to."""
    people = (
        select(
            Delivery.alert_id,
            Delivery.user_id,
            literal(ChaseKind.ALERT_UPDATE.value),
            literal(step),
            literal(batch),
            literal(ChaserEmailState.QUEUED.value),
            literal(now, UTCDateTime()),
        )
        .join(User, and_(User.id == Delivery.user_id, User.active.is_(True)))
        .where(Delivery.alert_id == alert_id, still_in_audience(alert_id, Delivery.user_id))
    )
    session.execute(
        insert(ChaserEmail).from_select(
            ["alert_id", "user_id", "kind", "step", "batch", "state", "created_at"], people
        )
    )
    # Counted, not taken from the INSERT: psycopg gives no row count for
    # an INSERT ... SELECT with bound parameters.
    return int(
        session.scalar(
            select(func.count()).select_from(ChaserEmail).where(ChaserEmail.batch == batch)
        )
        or 0
    )
