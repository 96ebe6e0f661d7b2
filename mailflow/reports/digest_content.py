"""What a digest says about each open alert, gathered from the database by
the same functions as every other report: the figures, the organisations
that have not answered, the ``unable`` answers with their reasons, and how
the share answered grew hour by hour (for the chart).  Lists are cut to
``limit`` rows; the totals say how many there are, and the report page
has them all."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from mailflow.core.models import Alert, ChaseKind, Chaser, Organisation
from mailflow.reports.figures import (
    NO_ANSWER,
    UNREACHABLE,
    AlertFigures,
    OrganisationRow,
    RowFilter,
    alert_figures,
    alert_rows,
    first_answers_by_hour,
)

# Rows of each list in an email; the page and the CSV have every row.
LIST_LIMIT = 50
SECONDS_PER_HOUR = 3600


@dataclass(frozen=True)
class Unanswered:
    code: str
    name: str
    parent_code: str | None
    # Whole hours since the deadline passed; None before it.
    hours_overdue: int | None
    reminders_sent: int
    # Every email sent for it bounced: "unreachable", not just silent.
    unreachable: bool


@dataclass(frozen=True)
class Unable:
    code: str
    name: str
    reason: str | None
    mitigations: str | None
    answered_at: datetime
    next_update_on: date | None


@dataclass(frozen=True)
class AlertDigest:
    figures: AlertFigures
    unanswered: tuple[Unanswered, ...]
    unanswered_total: int
    unable: tuple[Unable, ...]
    unable_total: int
    # (whole hours since the round began, organisations answered by the
    # end of that hour), one point per hour in which someone first
    # answered, in order.
    answered_by_hour: tuple[tuple[int, int], ...]


def gather_alert(
    session: Session, alert_id: int, *, as_at: datetime, zone: ZoneInfo, limit: int = LIST_LIMIT
) -> AlertDigest:
    figures = alert_figures(session, alert_id, as_at=as_at, zone=zone)
    silent = sorted(
        (
            (row, status == UNREACHABLE)
            for status in (NO_ANSWER, UNREACHABLE)
            for row in _rows(session, alert_id, as_at, zone, status, limit)
        ),
        key=lambda listed: str(listed[0].code),
    )[:limit]
    reminders = _reminders_sent(session, alert_id, [row.code for row, _ in silent])
    unanswered = [
        _unanswered(row, figures, reminders, unreachable=unreachable) for row, unreachable in silent
    ]
    unable = [
        Unable(row.code, row.name, row.reason, row.mitigations, row.answered_at, row.next_update_on)
        for row in _rows(session, alert_id, as_at, zone, "unable", limit)
    ]
    return AlertDigest(
        figures=figures,
        unanswered=tuple(unanswered),
        unanswered_total=figures.no_answer + figures.unreachable,
        unable=tuple(unable),
        unable_total=figures.unable,
        answered_by_hour=_cumulative(
            first_answers_by_hour(session, alert_id, as_at=as_at, zone=zone)
        ),
    )


def _rows(
    session: Session, alert_id: int, as_at: datetime, zone: ZoneInfo, status: str, limit: int
) -> Iterator[OrganisationRow]:
    only = RowFilter(status=status)
    return alert_rows(session, alert_id, as_at=as_at, zone=zone, only=only, limit=limit)


def _unanswered(
    row: OrganisationRow,
    figures: AlertFigures,
    reminders: dict[str, int],
    *,
    unreachable: bool,
) -> Unanswered:
    late = (figures.as_at - figures.deadline_at).total_seconds()
    return Unanswered(
        code=row.code,
        name=row.name,
        parent_code=row.parent_code,
        hours_overdue=int(late // SECONDS_PER_HOUR) if late > 0 else None,
        reminders_sent=reminders.get(row.code, 0),
        unreachable=unreachable,
    )


def _reminders_sent(session: Session, alert_id: int, codes: list[str]) -> dict[str, int]:
    """Reminder steps decided on for each of these organisations in the
    alert's current round (their steps start ``r<round>:``): only those
    listed, not every organisation a national alert chased."""
    alert = session.get_one(Alert, alert_id)
    rows = session.execute(
        select(Organisation.code, func.count())
        .join(Chaser, Chaser.organisation_id == Organisation.id)
        .where(
            and_(
                Chaser.alert_id == alert_id,
                Chaser.kind == ChaseKind.REMINDER,
                Chaser.step.startswith(f"r{alert.round}:"),
                Organisation.code.in_(codes),
            )
        )
        .group_by(Organisation.code)
    )
    return {code: count for code, count in rows}


def _cumulative(per_hour: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    total = 0
    points = []
    for hour, count in per_hour:
        total += count
        points.append((hour, total))
    return tuple(points)
