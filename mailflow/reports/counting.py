"""The counts behind every alert's figures, as one aggregate query over
the organisations in scope joined to their answers then: for one alert or,
grouped by alert, for many at once.  Where the answers come from (the
current statuses, or the history as at a past time) is the caller's
choice; the counting is the same."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, Subquery, and_, case, func, select
from sqlalchemy.orm import Session

from mailflow.answers.statuses import AnswerStatus
from mailflow.core.models import AlertAudience
from mailflow.reports.as_at import closed_by, statuses_of, unreachable, unreachable_counts

# Statuses that owe an update (in progress) or a review (unable).
OWING = (AnswerStatus.IN_PROGRESS.value, AnswerStatus.UNABLE.value)
# The order in which count_columns counts the statuses.
STATUS_ORDER = (
    AnswerStatus.IN_PROGRESS,
    AnswerStatus.COMPLETE,
    AnswerStatus.NOT_APPLICABLE,
    AnswerStatus.UNABLE,
)
# The percentiles of the time to first answer, as fractions.
MEDIAN = 0.5
NINETIETH = 0.9


@dataclass(frozen=True)
class Counts:
    in_scope: int
    answered: int
    within_deadline: int
    in_progress: int
    complete: int
    not_applicable: int
    unable: int
    no_answer: int
    unreachable: int
    overdue_updates: int
    # When the organisation at the median (and 90th percentile) first
    # answered; None when none has.
    median_first_at: datetime | None
    p90_first_at: datetime | None
    # The newest answer counted (any answer recorded since changes it,
    # even one that leaves every count as it was).
    last_answer_at: datetime | None = None


def nearest_rank(fraction: float, count: int) -> int:
    """The 1-based rank of a percentile by the nearest-rank rule, computed
    as PostgreSQL's percentile_disc computes it (ceil in floating point),
    so both databases pick the same answer."""
    return max(1, math.ceil(fraction * count))


def update_overdue(latest: Subquery, today: date) -> ColumnElement[bool]:
    return and_(latest.c.status.in_(OWING), latest.c.next_update_on < today)


def answer_columns(latest: Subquery, today: date) -> list[Any]:
    """The aggregates over the answers themselves, in Counts' order:
    answered, within the deadline, each status, overdue updates, the
    newest answer."""
    return [
        func.count(latest.c.id),
        func.count(case((latest.c.first_within.is_(True), 1))),
        *(func.count(case((latest.c.status == s.value, 1))) for s in STATUS_ORDER),
        func.count(case((update_overdue(latest, today), 1))),
        func.max(latest.c.recorded_at),
    ]


def count_columns(latest: Subquery, scope: Subquery, today: date) -> list[Any]:
    """In scope, unreachable, then ``answer_columns``, over ``scope``
    (alert_id, organisation_id) outer-joined to ``latest``: the counts as
    at a past time.  Whether an unanswered organisation is unreachable is
    looked up only for those (the CASE stops at the first false
    condition)."""
    unanswered = latest.c.id.is_(None)
    cut_off = and_(unanswered, unreachable(scope.c.alert_id, scope.c.organisation_id))
    return [func.count(), func.count(case((cut_off, 1))), *answer_columns(latest, today)]


def counts_of(values: Sequence[Any]) -> Counts:
    """Counts from in scope, unreachable, ``answer_columns`` and the two
    percentiles.  The silent are the unanswered less the unreachable."""
    (in_scope, cut_off, answered, within, in_progress, complete, not_applicable, unable, overdue,
     last_answer_at, median, p90) = values  # fmt: skip
    return Counts(
        in_scope=in_scope,
        answered=answered,
        within_deadline=within,
        in_progress=in_progress,
        complete=complete,
        not_applicable=not_applicable,
        unable=unable,
        no_answer=in_scope - answered - cut_off,
        unreachable=cut_off,
        overdue_updates=overdue,
        median_first_at=median,
        p90_first_at=p90,
        last_answer_at=last_answer_at,
    )


def percentile_columns(latest: Subquery) -> list[Any]:
    """PostgreSQL's ordered-set aggregates (nulls, the unanswered, are
    left out); SQLite has none, see ``ranked_first_answers``."""
    first_at = latest.c.first_at
    return [
        func.percentile_disc(MEDIAN).within_group(first_at),
        func.percentile_disc(NINETIETH).within_group(first_at),
    ]


@dataclass(frozen=True)
class CurrentCounts:
    counts: Counts
    # The newest answer counted: later than the time asked about, the
    # statuses are not those of that time.
    newest_at: datetime | None


def current_counts(
    session: Session, alert_ids: Sequence[int], today: date
) -> dict[int, CurrentCounts]:
    """Counts per alert from the current statuses, as three grouped
    queries each reading one thing once: the answers (with the
    percentiles on PostgreSQL; on SQLite see ``ranked_first_answers``),
    the audience, and the bounces.  An organisation has a status only if
    the alert went to it (answers are taken only for the audience), so
    the answers need no join to the audience."""
    latest = statuses_of(alert_ids)
    postgresql = session.get_bind().dialect.name == "postgresql"
    columns = answer_columns(latest, today)
    if postgresql:
        columns += percentile_columns(latest)
    answered = {
        alert_id: values
        for alert_id, *values in session.execute(
            select(latest.c.alert_id, *columns)
            .where(~closed_by(latest.c.organisation_id, today))
            .group_by(latest.c.alert_id)
        )
    }
    in_scope = session.execute(
        select(AlertAudience.alert_id, func.count())
        .where(
            AlertAudience.alert_id.in_(alert_ids),
            ~closed_by(AlertAudience.organisation_id, today),
        )
        .group_by(AlertAudience.alert_id)
    )
    cut_off = {
        alert_id: int(count)
        for alert_id, count in session.execute(unreachable_counts(alert_ids, today))
    }
    nothing = [0] * (len(columns) - 1) + [None]
    found = {}
    for alert_id, scope_count in in_scope:
        values = answered.get(alert_id, nothing)
        padded = values if postgresql else [*values, None, None]
        counts = counts_of([scope_count, cut_off.get(alert_id, 0), *padded])
        found[alert_id] = CurrentCounts(counts, counts.last_answer_at)
    return found


def ranked_first_answers(
    session: Session, latest: Subquery, scope: Subquery, answered: int
) -> tuple[datetime | None, datetime | None]:
    """The median and 90th-percentile first answers by nearest rank, one
    ORDER BY ... OFFSET each: SQLite's way, as percentile_disc picks."""
    if answered == 0:
        return None, None
    first_at = latest.c.first_at
    answered_rows = select(first_at).join(
        scope, scope.c.organisation_id == latest.c.organisation_id
    )
    median, p90 = (
        session.scalar(
            answered_rows.order_by(first_at).limit(1).offset(nearest_rank(fraction, answered) - 1)
        )
        for fraction in (MEDIAN, NINETIETH)
    )
    return median, p90
