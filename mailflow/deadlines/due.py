"""What is due, as set-based statements: each inserts the chasers due now
straight from a SELECT (no rows are loaded into Python, so a pass over
millions of organisation-alert pairs keeps its memory flat), skipping any
already written; the unique keys make a duplicate from a concurrent pass
a no-op.  The emails the chasers cause are inserted from the chasers a
batch wrote, in the same transaction."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Insert,
    String,
    Table,
    and_,
    cast,
    exists,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql import Select

from mailflow.core.models import (
    Alert,
    AlertAudience,
    AlertStatus,
    ChaseKind,
    Chaser,
    ChaserEmail,
    ChaserEmailState,
    Delivery,
    Membership,
    NationalRole,
    Organisation,
    Role,
    User,
    UTCDateTime,
)

ANSWERING_ROLES = (Role.ADMINISTRATOR, Role.RESPONDER)
CHASER_COLUMNS = ("alert_id", "organisation_id", "kind", "step", "batch", "created_at")
EMAIL_COLUMNS = ("alert_id", "user_id", "kind", "step", "batch", "state", "created_at")


def _insert_new(session: Session, table: Table, columns: Iterable[str], rows: Select[Any]) -> int:
    """INSERT ... SELECT, leaving out rows a unique key already holds; how
    many it inserted.  (psycopg reports no row count for an INSERT with
    bound parameters, so on PostgreSQL the database counts them.)"""
    if session.get_bind().dialect.name != "postgresql":
        statement: Insert = (
            sqlite.insert(table).from_select(list(columns), rows).on_conflict_do_nothing()
        )
        return int(session.execute(statement).rowcount)  # type: ignore[attr-defined]
    inserted = (
        postgresql.insert(table)
        .from_select(list(columns), rows)
        .on_conflict_do_nothing()
        .returning(literal(1))
        .cte("inserted")
    )
    return int(session.scalar(select(func.count()).select_from(inserted)) or 0)


def _at(now: datetime) -> ColumnElement[datetime]:
    return literal(now, UTCDateTime())


def unanswered(alert_id: int) -> ColumnElement[bool]:
    """The audience's open organisations with no current status."""
    return and_(
        AlertAudience.alert_id == alert_id,
        Organisation.closed_on.is_(None),
        ~exists().where(
            AlertStatus.alert_id == alert_id,
            AlertStatus.organisation_id == AlertAudience.organisation_id,
        ),
    )


def add_organisation_chasers(
    session: Session,
    *,
    alert_id: int,
    kind: ChaseKind,
    step: str,
    skip_if_sent: tuple[str, ...],
    batch: str,
    now: datetime,
) -> int:
    """A chaser for each unanswered organisation of the alert, unless one
    of this kind with a step in ``skip_if_sent`` was written before."""
    already = exists().where(
        Chaser.alert_id == alert_id,
        Chaser.organisation_id == AlertAudience.organisation_id,
        Chaser.kind == kind,
        Chaser.step.in_(skip_if_sent),
    )
    rows = (
        select(
            AlertAudience.alert_id,
            AlertAudience.organisation_id,
            literal(kind.value),
            literal(step),
            literal(batch),
            _at(now),
        )
        .join(Organisation, Organisation.id == AlertAudience.organisation_id)
        .where(unanswered(alert_id), ~already)
    )
    return _insert_new(session, Chaser.__table__, CHASER_COLUMNS, rows)  # type: ignore[arg-type]


def add_alert_chaser(
    session: Session, *, alert_id: int, kind: ChaseKind, step: str, batch: str, now: datetime
) -> bool:
    """The alert-wide row for a step (an escalation, a follow-up, or the
    mark that a reminder step was done); False when it was there."""
    rows = select(
        literal(alert_id),
        literal(None),
        literal(kind.value),
        literal(step),
        literal(batch),
        _at(now),
    )
    return _insert_new(session, Chaser.__table__, CHASER_COLUMNS, rows) > 0  # type: ignore[arg-type]


def alert_wide_steps(session: Session, alert_ids: list[int]) -> set[tuple[int, ChaseKind, str]]:
    """The alert-wide rows of these alerts: the steps already taken, so a
    pass can skip them without opening a write transaction."""
    rows = session.execute(
        select(Chaser.alert_id, Chaser.kind, Chaser.step).where(
            Chaser.alert_id.in_(alert_ids), Chaser.organisation_id.is_(None)
        )
    )
    return {(alert_id, kind, step) for alert_id, kind, step in rows}


def any_unanswered(session: Session, alert_id: int) -> bool:
    return (
        session.scalar(
            select(AlertAudience.organisation_id)
            .join(Organisation, Organisation.id == AlertAudience.organisation_id)
            .where(unanswered(alert_id))
            .limit(1)
        )
        is not None
    )


def add_member_emails(
    session: Session, *, batch: str, kind: ChaseKind, roles: tuple[Role, ...], now: datetime
) -> int:
    """One email per person for the batch's chasers of this kind: to each
    active person holding one of ``roles`` for a chased organisation who
    was sent the alert (their links and reply key come from that email)."""
    rows = (
        select(
            Chaser.alert_id,
            Membership.user_id,
            Chaser.kind,
            Chaser.step,
            literal(batch),
            literal(ChaserEmailState.QUEUED.value),
            _at(now),
        )
        .distinct()
        .join(Membership, Membership.organisation_id == Chaser.organisation_id)
        .join(
            Delivery,
            and_(Delivery.alert_id == Chaser.alert_id, Delivery.user_id == Membership.user_id),
        )
        .join(User, User.id == Membership.user_id)
        .where(
            Chaser.batch == batch,
            Chaser.kind == kind,
            Membership.role.in_(roles),
            User.active.is_(True),
        )
    )
    return _insert_new(session, ChaserEmail.__table__, EMAIL_COLUMNS, rows)  # type: ignore[arg-type]


def add_auditor_emails(
    session: Session, *, alert_id: int, kind: ChaseKind, step: str, batch: str, now: datetime
) -> int:
    """One email to each active auditor."""
    rows = select(
        literal(alert_id),
        User.id,
        literal(kind.value),
        literal(step),
        literal(batch),
        literal(ChaserEmailState.QUEUED.value),
        _at(now),
    ).where(User.national_role == NationalRole.AUDITOR, User.active.is_(True))
    return _insert_new(session, ChaserEmail.__table__, EMAIL_COLUMNS, rows)  # type: ignore[arg-type]


def add_update_chasers(
    session: Session, *, status: str, kind: ChaseKind, today: date, batch: str, now: datetime
) -> int:
    """A chaser for each open alert's organisation whose current answer has
    this status and whose update (or review) was due by ``today``.  The
    step is the due date, so each period is chased once."""
    step = (
        literal("r")
        + cast(Alert.round, String)
        + literal(":")
        + cast(AlertStatus.update_due_on, String)
    )
    rows = (
        select(
            AlertStatus.alert_id,
            AlertStatus.organisation_id,
            literal(kind.value),
            step,
            literal(batch),
            _at(now),
        )
        .join(Alert, Alert.id == AlertStatus.alert_id)
        .where(_updates_due(status, today))
    )
    return _insert_new(session, Chaser.__table__, CHASER_COLUMNS, rows)  # type: ignore[arg-type]


def _updates_due(status: str, today: date) -> ColumnElement[bool]:
    # An alias: the statement this goes into may join alerts itself.
    alert = aliased(Alert)
    return and_(
        AlertStatus.status == status,
        AlertStatus.update_due_on <= today,
        exists().where(alert.id == AlertStatus.alert_id, alert.closed_at.is_(None)),
    )


def any_updates_due(session: Session, *, status: str, today: date) -> bool:
    """A cheap look first, so a pass with nothing due writes nothing."""
    found = session.scalar(select(AlertStatus.alert_id).where(_updates_due(status, today)).limit(1))
    return found is not None


def move_update_dates(session: Session, *, status: str, today: date, next_on: date) -> None:
    """After chasing, the next chaser for those statuses falls due later
    (the same rows add_update_chasers chose)."""
    session.execute(
        update(AlertStatus)
        .where(_updates_due(status, today))
        .values(update_due_on=next_on)
        .execution_options(synchronize_session=False)
    )
