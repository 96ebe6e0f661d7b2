"""The figures of one alert, and its table of organisations, as they stood
at a moment: one function each, used by every report so they never
disagree.  Everything is counted or streamed by the database; no row per
organisation is loaded to be counted in Python."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    Integer,
    Row,
    Select,
    Subquery,
    and_,
    case,
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
from mailflow.reports.as_at import Moment, all_bounced, bounced, in_scope, latest_answers, moment

# Statuses that owe an update (in progress) or a review (unable).
OWING = (AnswerStatus.IN_PROGRESS.value, AnswerStatus.UNABLE.value)
# The percentiles of the time to first answer, as fractions.
MEDIAN = 0.5
NINETIETH = 0.9
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


def nearest_rank(fraction: float, count: int) -> int:
    """The 1-based rank of a percentile by the nearest-rank rule, computed
    as PostgreSQL's percentile_disc computes it (ceil in floating point),
    so both databases pick the same answer."""
    return max(1, math.ceil(fraction * count))


def _update_overdue(latest: Subquery, today: date) -> ColumnElement[bool]:
    return and_(latest.c.status.in_(OWING), latest.c.next_update_on < today)


def _counts(session: Session, at: Moment) -> tuple[int, ...]:
    scope, latest, sent = in_scope(at), latest_answers(at), bounced(at)
    unanswered = latest.c.id.is_(None)
    status_counts = [func.count(case((latest.c.status == s.value, 1))) for s in AnswerStatus]
    row = session.execute(
        select(
            func.count(),
            func.count(latest.c.id),
            func.count(case((latest.c.first_within.is_(True), 1))),
            *status_counts,
            func.count(case((and_(unanswered, ~all_bounced(sent)), 1))),
            func.count(case((and_(unanswered, all_bounced(sent)), 1))),
            func.count(case((_update_overdue(latest, at.today), 1))),
        )
        .select_from(scope)
        .outerjoin(latest, latest.c.organisation_id == scope.c.organisation_id)
        .outerjoin(sent, sent.c.organisation_id == scope.c.organisation_id)
    ).one()
    return tuple(row)


def _first_answer_percentiles(
    session: Session, at: Moment, answered: int
) -> tuple[datetime | None, datetime | None]:
    """When the organisation at the median and at the 90th percentile
    first answered: percentile_disc on PostgreSQL, the row at that rank on
    SQLite (which has no percentile functions)."""
    if answered == 0:
        return None, None
    scope, latest = in_scope(at), latest_answers(at)
    first_at = latest.c.first_at
    answered_rows = select(first_at).join(
        scope, scope.c.organisation_id == latest.c.organisation_id
    )
    if session.get_bind().dialect.name == "postgresql":
        median, p90 = session.execute(
            answered_rows.with_only_columns(
                func.percentile_disc(MEDIAN).within_group(first_at),
                func.percentile_disc(NINETIETH).within_group(first_at),
            )
        ).one()
        return median, p90
    ranked = [
        session.scalar(
            answered_rows.order_by(first_at).limit(1).offset(nearest_rank(fraction, answered) - 1)
        )
        for fraction in (MEDIAN, NINETIETH)
    ]
    return ranked[0], ranked[1]


def alert_figures(
    session: Session, alert_id: int, *, as_at: datetime, zone: ZoneInfo
) -> AlertFigures:
    alert = session.get_one(Alert, alert_id)
    at = moment(session, alert, as_at=as_at, zone=zone)
    (
        in_scope_,
        answered,
        within,
        in_progress,
        complete,
        not_applicable,
        unable,
        no_answer,
        unreachable,
        overdue,
    ) = _counts(session, at)
    median, p90 = _first_answer_percentiles(session, at, answered)
    return AlertFigures(
        reference=alert.reference,
        title=alert.title,
        severity=alert.severity.value,
        issued_at=alert.issued_at,
        deadline_at=at.deadline_at,
        closed_at=alert.closed_at if alert.closed_at and alert.closed_at <= as_at else None,
        as_at=as_at,
        in_scope=in_scope_,
        answered=answered,
        answered_within_deadline=within,
        in_progress=in_progress,
        complete=complete,
        not_applicable=not_applicable,
        unable=unable,
        no_answer=no_answer,
        unreachable=unreachable,
        overdue_updates=overdue,
        median_to_first_answer=median - at.round_started_at if median else None,
        p90_to_first_answer=p90 - at.round_started_at if p90 else None,
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
    scope, latest = in_scope(at), latest_answers(at)
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
    scope, latest, sent = in_scope(at), latest_answers(at), bounced(at)
    parent = aliased(Organisation)
    unanswered = latest.c.id.is_(None)
    late = unanswered if at.deadline_at < as_at else false()
    overdue = or_(late, _update_overdue(latest, at.today))
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
            all_bounced(sent).label("bounced"),
        )
        .select_from(scope)
        .join(Organisation, Organisation.id == scope.c.organisation_id)
        .outerjoin(parent, parent.id == Organisation.parent_id)
        .outerjoin(latest, latest.c.organisation_id == scope.c.organisation_id)
        .outerjoin(User, User.id == latest.c.user_id)
        .outerjoin(sent, sent.c.organisation_id == scope.c.organisation_id)
        .execution_options(yield_per=STREAM_ROWS)
    )
    if only.status == NO_ANSWER:
        query = query.where(unanswered, ~all_bounced(sent))
    elif only.status == UNREACHABLE:
        query = query.where(unanswered, all_bounced(sent))
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
