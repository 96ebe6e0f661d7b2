"""What is due, as set-based statements: each inserts the chasers due now
straight from a SELECT (no rows are loaded into Python, so a pass over
millions of organisation-alert pairs keeps its memory flat), skipping any
already written; the unique keys make a duplicate from a concurrent pass
a no-op.  The emails the chasers cause are inserted from the chasers a
batch wrote, in the same transaction."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Insert,
    String,
    Table,
    and_,
    case,
    cast,
    exists,
    func,
    literal,
    or_,
    select,
    true,
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
from mailflow.deadlines.policy import round_of

ANSWERING_ROLES = (Role.ADMINISTRATOR, Role.RESPONDER)
CHASER_COLUMNS = ("alert_id", "organisation_id", "kind", "step", "batch", "created_at")
EMAIL_COLUMNS = ("alert_id", "user_id", "kind", "step", "batch", "state", "created_at")


def _insert_new(session: Session, table: Table, columns: Iterable[str], rows: Select[Any]) -> None:
    """INSERT ... SELECT, leaving out rows a unique key already holds.
    What it wrote is counted afterwards by batch (``batch_counts``)."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement: Insert = dialect.insert(table).from_select(list(columns), rows)
    session.execute(statement.on_conflict_do_nothing())  # type: ignore[attr-defined]


def _at(now: datetime) -> ColumnElement[datetime]:
    return literal(now, UTCDateTime())


def _unanswered() -> ColumnElement[bool]:
    """An audience row's organisation is open and has no current status."""
    return and_(
        Organisation.closed_on.is_(None),
        ~exists().where(
            AlertStatus.alert_id == AlertAudience.alert_id,
            AlertStatus.organisation_id == AlertAudience.organisation_id,
        ),
    )


def unanswered(alert_id: int) -> ColumnElement[bool]:
    """The alert's audience rows whose organisation is open and has no
    current status."""
    return and_(AlertAudience.alert_id == alert_id, _unanswered())


# Alert id -> the kind and step due: a reminder before the deadline, the
# overdue mark at it, or an alert-wide row (escalation, follow-up, mark).
Steps = Mapping[int, tuple[ChaseKind, str]]


def add_organisation_chasers(session: Session, *, steps: Steps, batch: str, now: datetime) -> None:
    """For every alert in ``steps`` at once, a chaser of its kind and step
    for each of its unanswered organisations: one statement, however many
    alerts are due and of whichever kind, so a pass costs about what
    selecting the due rows does."""
    kind = case({a: k.value for a, (k, _) in steps.items()}, value=AlertAudience.alert_id)
    step = case({a: s for a, (_, s) in steps.items()}, value=AlertAudience.alert_id)
    # Still the round the steps were worked out for: an update asking for
    # answers again, committed since the pass looked, starts a new one.
    round_ = case({a: round_of(s) for a, (_, s) in steps.items()}, value=AlertAudience.alert_id)
    rows = (
        select(
            AlertAudience.alert_id,
            AlertAudience.organisation_id,
            kind,
            step,
            literal(batch),
            _at(now),
        )
        .join(Organisation, Organisation.id == AlertAudience.organisation_id)
        .join(Alert, Alert.id == AlertAudience.alert_id)
        .where(
            AlertAudience.alert_id.in_(list(steps)),
            Alert.round == round_,
            Alert.closed_at.is_(None),
            _unanswered(),
        )
    )
    _insert_new(session, Chaser.__table__, CHASER_COLUMNS, rows)  # type: ignore[arg-type]


def add_alert_chasers(session: Session, *, steps: Steps, batch: str, now: datetime) -> None:
    """The alert-wide row for each alert's step (an escalation, a
    follow-up, or the mark that a reminder step was done).  A row another
    pass wrote first stays theirs: its alert is left out of this batch's
    counts, and its chasers conflict and are not written twice."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    values = [
        {
            "alert_id": alert_id,
            "organisation_id": None,
            "kind": kind,
            "step": step,
            "batch": batch,
            "created_at": now,
        }
        for alert_id, (kind, step) in steps.items()
    ]
    session.execute(dialect.insert(Chaser.__table__).values(values).on_conflict_do_nothing())


def batch_counts(session: Session, batch: str) -> dict[int, tuple[int, int]]:
    """For each alert whose alert-wide row this batch wrote: how many
    organisations it chased and how many emails it queued."""
    marked = session.scalars(
        select(Chaser.alert_id).where(Chaser.batch == batch, Chaser.organisation_id.is_(None))
    ).all()
    chased = dict(
        session.execute(
            select(Chaser.alert_id, func.count())
            .where(Chaser.batch == batch, Chaser.organisation_id.is_not(None))
            .group_by(Chaser.alert_id)
        ).all()
    )
    emailed = dict(
        session.execute(
            select(ChaserEmail.alert_id, func.count())
            .where(ChaserEmail.batch == batch)
            .group_by(ChaserEmail.alert_id)
        ).all()
    )
    return {alert_id: (chased.get(alert_id, 0), emailed.get(alert_id, 0)) for alert_id in marked}


def batch_totals(session: Session, batch: str) -> tuple[int, int]:
    """How many chasers and emails the batch wrote, over all alerts."""
    chasers = session.scalar(select(func.count()).where(Chaser.batch == batch)) or 0
    emails = session.scalar(select(func.count()).where(ChaserEmail.batch == batch)) or 0
    return chasers, emails


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


def escalated_at(session: Session, alert_ids: list[int]) -> dict[tuple[int, str], datetime]:
    """When each of these alerts' deadlines was acted on, by step."""
    rows = session.execute(
        select(Chaser.alert_id, Chaser.step, Chaser.created_at).where(
            Chaser.alert_id.in_(alert_ids),
            Chaser.organisation_id.is_(None),
            Chaser.kind == ChaseKind.ESCALATION,
        )
    )
    return {(alert_id, step): at for alert_id, step, at in rows}


def alert_wide_steps(session: Session, alert_ids: list[int]) -> set[tuple[int, ChaseKind, str]]:
    """The alert-wide rows of these alerts: the steps already taken, so a
    pass can skip them without opening a write transaction."""
    rows = session.execute(
        select(Chaser.alert_id, Chaser.kind, Chaser.step).where(
            Chaser.alert_id.in_(alert_ids), Chaser.organisation_id.is_(None)
        )
    )
    return {(alert_id, kind, step) for alert_id, kind, step in rows}


def add_member_emails(
    session: Session, *, batch: str, roles: Mapping[ChaseKind, tuple[Role, ...]], now: datetime
) -> None:
    """One email per person for the batch's chasers of each kind in
    ``roles``: to each active person holding one of the kind's roles for a
    chased organisation who was sent the alert (their links and reply key
    come from that email)."""
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
            or_(*(and_(Chaser.kind == k, Membership.role.in_(r)) for k, r in roles.items())),
            User.active.is_(True),
        )
    )
    _insert_new(session, ChaserEmail.__table__, EMAIL_COLUMNS, rows)  # type: ignore[arg-type]


def add_auditor_emails(
    session: Session, *, batch: str, marked: ChaseKind, kind: ChaseKind, now: datetime
) -> None:
    """One email to each active auditor for each alert this batch marked
    with an alert-wide row of kind ``marked`` (an escalation, a follow-up)
    that has something to report: for an escalation, an organisation this
    batch found overdue."""
    mark = aliased(Chaser)
    rows = (
        select(
            mark.alert_id,
            User.id,
            literal(kind.value),
            mark.step,
            literal(batch),
            literal(ChaserEmailState.QUEUED.value),
            _at(now),
        )
        .join(User, true())
        .where(
            mark.batch == batch,
            mark.kind == marked,
            mark.organisation_id.is_(None),
            User.national_role == NationalRole.AUDITOR,
            User.active.is_(True),
        )
    )
    if marked is ChaseKind.ESCALATION:
        rows = rows.where(
            exists().where(
                Chaser.batch == batch,
                Chaser.kind == ChaseKind.OVERDUE,
                Chaser.alert_id == mark.alert_id,
            )
        )
    _insert_new(session, ChaserEmail.__table__, EMAIL_COLUMNS, rows)  # type: ignore[arg-type]


def add_update_chasers(
    session: Session, *, status: str, kind: ChaseKind, today: date, batch: str, now: datetime
) -> None:
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
    _insert_new(session, Chaser.__table__, CHASER_COLUMNS, rows)  # type: ignore[arg-type]


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
