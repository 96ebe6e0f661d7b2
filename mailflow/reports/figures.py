"""The figures of one alert, and its table of organisations, as they stood
at a moment: one function each, used by every report so they never
disagree.  Everything is counted or streamed by the database; no row per
organisation is loaded to be counted in Python."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Integer,
    Row,
    Select,
    cast,
    false,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.orm import Session, aliased

from mailflow.answers.statuses import AnswerStatus
from mailflow.core.models import Alert, Organisation, User, UTCDateTime
from mailflow.reports.as_at import (
    Moment,
    answers_then,
    in_scope,
    latest_answers,
    moment,
    moment_of,
    restarts_of,
    scope_of,
    statuses_of,
    unreachable,
)
from mailflow.reports.counting import (
    Counts,
    count_columns,
    counts_of,
    current_counts,
    percentile_columns,
    ranked_first_answers,
    update_overdue,
)

# Rows read from the database at a time.
STREAM_ROWS = 1000
SECONDS_PER_HOUR = 3600
# One organisation's row of an alert's table (see alert_rows).
OrganisationRow = Row[*tuple[Any, ...]]


@dataclass(frozen=True)
class AlertFigures:
    """``no_answer`` leaves out the ``unreachable`` (no answer, and every
    email sent for them bounced), so in_scope = answered + no_answer +
    unreachable."""

    reference: str
    title: str
    severity: str
    issued_at: datetime
    deadline_at: datetime
    closed_at: datetime | None
    as_at: datetime
    in_scope: int
    answered: int
    answered_within_deadline: int
    in_progress: int
    complete: int
    not_applicable: int
    unable: int
    no_answer: int
    unreachable: int
    overdue_updates: int
    median_to_first_answer: timedelta | None
    p90_to_first_answer: timedelta | None
    # When the answers counted began: the issue, or the last update that
    # asked for answers again (times to first answer are from it).
    round_started_at: datetime
    # The newest answer counted; None before any.
    last_answer_at: datetime | None = None


EMPTY = Counts(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, None, None)


def _history_counts(session: Session, at: Moment) -> Counts:
    """The counts as at a past time, from the history of answers."""
    scope, latest = in_scope(at), latest_answers(at)
    postgresql = session.get_bind().dialect.name == "postgresql"
    columns = count_columns(latest, scope, at.today)
    if postgresql:
        columns += percentile_columns(latest)
    values: list[Any] = list(
        session.execute(
            select(*columns)
            .select_from(scope)
            .outerjoin(latest, latest.c.organisation_id == scope.c.organisation_id)
        ).one()
    )
    if not postgresql:
        answered = values[2]  # after in scope and unreachable (count_columns)
        values += ranked_first_answers(session, latest, scope, answered)
    return counts_of(values)


def alerts_figures(
    session: Session, alert_ids: Sequence[int], *, as_at: datetime, zone: ZoneInfo
) -> list[AlertFigures]:
    """The figures of each alert, in the order given.  As at now (nothing
    recorded since ``as_at``) all are counted by one grouped query over
    the current statuses; an alert with answers after ``as_at`` is counted
    from its history instead."""
    alerts = {a.id: a for a in session.scalars(select(Alert).where(Alert.id.in_(alert_ids)))}
    restarts = restarts_of(session, alert_ids)
    today = as_at.astimezone(zone).date()
    current = current_counts(session, alert_ids, today)
    figures = []
    for alert_id in alert_ids:
        at = moment_of(alerts[alert_id], restarts[alert_id], as_at=as_at, zone=zone)
        found = current.get(alert_id)
        if at.later_round or (found and found.newest_at and found.newest_at > as_at):
            counts = _history_counts(session, at)
        else:
            counts = found.counts if found else EMPTY
            if counts.answered and session.get_bind().dialect.name != "postgresql":
                counts = _with_ranked_percentiles(session, alert_id, today, counts)
        figures.append(_figures(at, counts))
    return figures


def _with_ranked_percentiles(
    session: Session, alert_id: int, today: date, counts: Counts
) -> Counts:
    median, p90 = ranked_first_answers(
        session, statuses_of([alert_id]), scope_of([alert_id], today), counts.answered
    )
    return replace(counts, median_first_at=median, p90_first_at=p90)


def alert_figures(
    session: Session, alert_id: int, *, as_at: datetime, zone: ZoneInfo
) -> AlertFigures:
    return alerts_figures(session, [alert_id], as_at=as_at, zone=zone)[0]


def _figures(at: Moment, counts: Counts) -> AlertFigures:
    alert, started = at.alert, at.round_started_at
    closed = alert.closed_at if alert.closed_at and alert.closed_at <= at.as_at else None
    return AlertFigures(
        reference=alert.reference,
        title=alert.title,
        severity=alert.severity.value,
        issued_at=alert.issued_at,
        deadline_at=at.deadline_at,
        closed_at=closed,
        as_at=at.as_at,
        in_scope=counts.in_scope,
        answered=counts.answered,
        answered_within_deadline=counts.within_deadline,
        in_progress=counts.in_progress,
        complete=counts.complete,
        not_applicable=counts.not_applicable,
        unable=counts.unable,
        no_answer=counts.no_answer,
        unreachable=counts.unreachable,
        overdue_updates=counts.overdue_updates,
        median_to_first_answer=counts.median_first_at - started if counts.median_first_at else None,
        p90_to_first_answer=counts.p90_first_at - started if counts.p90_first_at else None,
        round_started_at=started,
        last_answer_at=counts.last_answer_at,
    )


def _hours_since(column: ColumnElement[datetime], start: datetime, dialect: str) -> Any:
    """Whole hours from ``start`` to ``column``, in the database."""
    since = literal(start, UTCDateTime())
    if dialect == "postgresql":
        return func.floor(func.extract("epoch", column - since) / SECONDS_PER_HOUR)
    # Whole seconds first: a day's fraction in floating point puts 4 hours
    # at 3.99999.
    seconds = cast(func.round((func.julianday(column) - func.julianday(since)) * 86400), Integer)
    return seconds // SECONDS_PER_HOUR


def first_answers_by_hour(
    session: Session, alert_id: int, *, as_at: datetime, zone: ZoneInfo
) -> list[tuple[int, int]]:
    """(whole hours since the round began, organisations that first
    answered in that hour), for the hours in which any did, in order."""
    at = moment(session, session.get_one(Alert, alert_id), as_at=as_at, zone=zone)
    scope, latest = in_scope(at), answers_then(session, at, with_answers=False)
    dialect = session.get_bind().dialect.name
    hour = _hours_since(latest.c.first_at, at.round_started_at, dialect).label("hour")
    rows = session.execute(
        select(hour, func.count())
        .select_from(latest)
        .join(scope, scope.c.organisation_id == latest.c.organisation_id)
        .group_by(hour)
        .order_by(hour)
    )
    return [(int(h), int(count)) for h, count in rows]


@dataclass(frozen=True)
class RowFilter:
    """Which organisations to list: one status (or "no_answer" or
    "unreachable"), only those overdue, of one type, under one parent
    (by code)."""

    status: str | None = None
    overdue_only: bool = False
    organisation_type: str | None = None
    parent_code: str | None = None


# The columns the table may be sorted by.
SORT_KEYS = ("code", "name", "type", "parent_code", "status", "answered_at", "next_update_on")


@dataclass(frozen=True)
class Sort:
    key: str = "code"
    descending: bool = False

    def __post_init__(self) -> None:
        if self.key not in SORT_KEYS:
            raise ValueError(f"cannot sort by {self.key!r}: choose one of {', '.join(SORT_KEYS)}")


NO_ANSWER = "no_answer"
UNREACHABLE = "unreachable"
STATUSES = (*(s.value for s in AnswerStatus), NO_ANSWER, UNREACHABLE)


def alert_rows(
    session: Session,
    alert_id: int,
    *,
    as_at: datetime,
    zone: ZoneInfo,
    only: RowFilter | None = None,
    sort: Sort | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> Iterator[OrganisationRow]:
    """One row per organisation in scope, streamed, in ``sort`` order (by
    default by code): code, name, type, parent_code, status (None: no
    answer), note, reason, mitigations, answered_by, answered_at,
    first_answered_at, next_update_on, overdue, bounced.  ``overdue``: no
    answer once the deadline had passed, or an update or review past its
    date."""
    sort = sort or Sort()
    only = only or RowFilter()
    at = moment(session, session.get_one(Alert, alert_id), as_at=as_at, zone=zone)
    scope = in_scope(at)
    latest = answers_then(session, at, with_answers=True)
    # Looked up per organisation listed: a correlated subquery, as counted.
    all_bounced = func.coalesce(
        unreachable(scope.c.alert_id, scope.c.organisation_id), False, type_=Boolean
    )
    parent = aliased(Organisation)
    unanswered = latest.c.id.is_(None)
    late = unanswered if at.deadline_at < as_at else false()
    overdue = or_(late, update_overdue(latest, at.today))
    query = (
        select(
            Organisation.code,
            Organisation.name,
            Organisation.type,
            parent.code.label("parent_code"),
            latest.c.status,
            latest.c.note,
            latest.c.reason,
            latest.c.mitigations,
            User.email.label("answered_by"),
            latest.c.recorded_at.label("answered_at"),
            latest.c.first_at.label("first_answered_at"),
            latest.c.next_update_on,
            func.coalesce(overdue, False).label("overdue"),
            all_bounced.label("bounced"),
        )
        .select_from(scope)
        .join(Organisation, Organisation.id == scope.c.organisation_id)
        .outerjoin(parent, parent.id == Organisation.parent_id)
        .outerjoin(latest, latest.c.organisation_id == scope.c.organisation_id)
        .outerjoin(User, User.id == latest.c.user_id)
        .execution_options(yield_per=STREAM_ROWS)
    )
    if only.status == NO_ANSWER:
        query = query.where(unanswered, ~all_bounced)
    elif only.status == UNREACHABLE:
        query = query.where(unanswered, all_bounced)
    elif only.status is not None:
        query = query.where(latest.c.status == only.status)
    if only.overdue_only:
        query = query.where(overdue)
    if only.organisation_type is not None:
        query = query.where(Organisation.type == only.organisation_type)
    if only.parent_code is not None:
        query = query.where(parent.code == only.parent_code)
    query = _ordered(query, sort)
    if limit is not None:
        query = query.limit(limit)
    yield from session.execute(query.offset(offset or None))


def _ordered(query: Select[Any], sort: Sort) -> Select[Any]:
    """Sorted by the chosen column (by its label in the select, so it is
    the same expression), nulls last either way, then by code."""
    column = query.selected_columns[sort.key]
    ordered = column.desc() if sort.descending else column.asc()
    return query.order_by(ordered.nulls_last(), Organisation.code)
