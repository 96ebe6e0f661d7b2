"""What became of an alert, read for people to look at: its emails and
each organisation's current answer, as plain values."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from mailflow.alerts.deliveries import count_by_state
from mailflow.alerts.issuing import get_alert
from mailflow.answers.recording import StatusLine, alert_status_lines
from mailflow.core.models import (
    Alert,
    AlertAudience,
    AlertStatus,
    ChaseKind,
    Chaser,
    Delivery,
    Organisation,
    User,
)


@dataclass(frozen=True)
class AlertFacts:
    reference: str
    title: str
    severity: str
    response_required: bool
    issued_at: datetime
    issued_by: str
    deadline_at: datetime
    summary: str
    affected: list[str]
    cves: list[str]
    remediation: str
    references: list[str]
    # Answers are asked for in rounds; an update may start the next one.
    round: int
    closed_at: datetime | None
    closed_reason: str | None


@dataclass(frozen=True)
class DeliveryLine:
    """One alert email: to whom, for which of the audience's organisations,
    and how sending it went."""

    recipient: str
    organisations: list[str]
    state: str
    attempts: int
    last_error: str | None
    message_id: str
    sent_at: datetime | None


@dataclass(frozen=True)
class DeliveryReport:
    alert: AlertFacts
    audience: list[str]
    delivery_counts: dict[str, int]
    deliveries: list[DeliveryLine]


@dataclass(frozen=True)
class StatusReport:
    alert: AlertFacts
    organisations: list[StatusLine]
    # Codes of the organisations marked overdue at this round's deadline
    # that have still not answered.
    overdue: frozenset[str]


def delivery_report(session: Session, reference: str) -> DeliveryReport:
    """The alert with REFERENCE, its audience and the state of each of its
    emails, oldest first.  Raises NotFound for an unknown reference."""
    alert = get_alert(session, reference)
    audience = _audience_codes(session, alert.id)
    deliveries = session.scalars(
        select(Delivery)
        .where(Delivery.alert_id == alert.id)
        .options(selectinload(Delivery.user).selectinload(User.memberships))
        .order_by(Delivery.id)
    )
    counts = count_by_state(session, alert_id=alert.id)
    return DeliveryReport(
        alert=_facts(alert),
        audience=list(audience.values()),
        delivery_counts=dict(sorted(counts.items())),
        deliveries=[_delivery_line(delivery, audience) for delivery in deliveries],
    )


def status_report(session: Session, reference: str) -> StatusReport:
    """The alert with REFERENCE and each organisation in its audience with
    its current status.  Raises NotFound for an unknown reference."""
    alert = get_alert(session, reference)
    lines = alert_status_lines(session, alert_id=alert.id)
    marked = _marked_overdue(session, alert)
    return StatusReport(
        _facts(alert),
        lines,
        frozenset(line.code for line in lines if line.status is None and line.code in marked),
    )


def overdue_step(round_: int) -> str:
    """The step of the chaser that marks an organisation overdue at a
    round's deadline, as the scheduler names it (deadlines.policy, which
    this capability cannot import: deadlines imports alerts)."""
    return f"r{round_}:deadline"


def _marked_overdue(session: Session, alert: Alert) -> set[str]:
    return set(
        session.scalars(
            select(Organisation.code)
            .join(Chaser, Chaser.organisation_id == Organisation.id)
            .where(
                Chaser.alert_id == alert.id,
                Chaser.kind == ChaseKind.OVERDUE,
                Chaser.step == overdue_step(alert.round),
            )
        )
    )


def _audience_codes(session: Session, alert_id: int) -> dict[int, str]:
    """The audience's organisation codes by id, in code order."""
    rows = session.execute(
        select(Organisation.id, Organisation.code)
        .join(AlertAudience)
        .where(AlertAudience.alert_id == alert_id)
        .order_by(Organisation.code)
    )
    return {org_id: code for org_id, code in rows}


def _delivery_line(delivery: Delivery, audience: dict[int, str]) -> DeliveryLine:
    return DeliveryLine(
        recipient=delivery.user.email,
        organisations=sorted(
            audience[m.organisation_id]
            for m in delivery.user.memberships
            if m.organisation_id in audience
        ),
        state=str(delivery.state),
        attempts=delivery.attempts,
        last_error=delivery.last_error,
        message_id=delivery.message_id,
        sent_at=delivery.sent_at,
    )


def _facts(alert: Alert) -> AlertFacts:
    return AlertFacts(
        reference=alert.reference,
        title=alert.title,
        severity=str(alert.severity),
        response_required=alert.response_required,
        issued_at=alert.issued_at,
        issued_by=alert.issued_by,
        deadline_at=alert.deadline_at,
        summary=alert.summary,
        affected=list(alert.affected),
        cves=list(alert.cves),
        remediation=alert.remediation,
        references=list(alert.references),
        round=alert.round,
        closed_at=alert.closed_at,
        closed_reason=alert.closed_reason,
    )


@dataclass(frozen=True)
class AlertListLine:
    reference: str
    title: str
    severity: str
    issued_at: datetime
    deadline_at: datetime
    round: int
    closed_at: datetime | None
    organisations: int
    answered: int


def alert_list(session: Session, *, limit: int) -> list[AlertListLine]:
    """The latest alerts, newest first, each with how many of its
    organisations have a current status."""
    audience = (
        select(func.count())
        .where(AlertAudience.alert_id == Alert.id)
        .correlate(Alert)
        .scalar_subquery()
    )
    answered = (
        select(func.count())
        .where(AlertStatus.alert_id == Alert.id)
        .correlate(Alert)
        .scalar_subquery()
    )
    rows = session.execute(
        select(
            Alert.reference,
            Alert.title,
            Alert.severity,
            Alert.issued_at,
            Alert.deadline_at,
            Alert.round,
            Alert.closed_at,
            audience,
            answered,
        )
        .order_by(Alert.issued_at.desc(), Alert.id.desc())
        .limit(limit)
    )
    return [
        AlertListLine(ref, title, str(severity), issued, deadline, round_, closed, orgs, done)
        for ref, title, severity, issued, deadline, round_, closed, orgs, done in rows
    ]
