"""An alert as it stood at one moment: its round of answers, the
organisations in scope, each one's answer then, and whether every email
sent for it bounced.  Each is a subquery, so the figures and the rows are
aggregated or streamed by the database from the same definitions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Boolean, ColumnElement, Subquery, and_, case, func, or_, select
from sqlalchemy.orm import Session

from mailflow.core.models import (
    Alert,
    AlertAudience,
    AlertStatus,
    AlertUpdate,
    Answer,
    Delivery,
    DeliveryState,
    Membership,
    Organisation,
)


@dataclass(frozen=True)
class Moment:
    """The alert at ``as_at``: the round of answers then running began at
    ``round_started_at`` (the issue, or an update asking for answers
    again); ``today`` is the local date, against which updates are due.
    ``later_round``: an update after ``as_at`` asked for answers again,
    so the current statuses are not those of ``as_at``."""

    alert: Alert
    as_at: datetime
    today: date
    round_started_at: datetime
    deadline_at: datetime
    later_round: bool = False


def moment(session: Session, alert: Alert, *, as_at: datetime, zone: ZoneInfo) -> Moment:
    """An update that asked for answers again cleared the statuses: the
    answers given before it no longer count from its publication on."""
    restarts = session.execute(
        select(AlertUpdate.published_at, AlertUpdate.deadline_at)
        .where(AlertUpdate.alert_id == alert.id, AlertUpdate.answer_again.is_(True))
        .order_by(AlertUpdate.published_at.desc(), AlertUpdate.id.desc())
    ).all()
    return moment_of(alert, [(r[0], r[1]) for r in restarts], as_at=as_at, zone=zone)


def moment_of(
    alert: Alert,
    restarts: Sequence[tuple[datetime, datetime | None]],
    *,
    as_at: datetime,
    zone: ZoneInfo,
) -> Moment:
    """The moment from the alert's rounds: ``restarts`` are its updates
    that asked for answers again, (published, deadline), newest first."""
    before = [r for r in restarts if r[0] <= as_at]
    started, deadline = before[0] if before else (alert.issued_at, None)
    return Moment(
        alert=alert,
        as_at=as_at,
        today=as_at.astimezone(zone).date(),
        round_started_at=started,
        # The first round's deadline is not kept once a later round has
        # replaced it on the alert; the alert's own is the best there is.
        deadline_at=deadline or alert.deadline_at,
        later_round=len(before) < len(restarts),
    )


def in_scope(at: Moment) -> Subquery:
    """The organisations the alert went to that were open at the time."""
    return (
        select(AlertAudience.alert_id, Organisation.id.label("organisation_id"))
        .join(AlertAudience, AlertAudience.organisation_id == Organisation.id)
        .where(
            AlertAudience.alert_id == at.alert.id,
            or_(Organisation.closed_on.is_(None), Organisation.closed_on > at.today),
        )
        .subquery("scope")
    )


def latest_answers(at: Moment) -> Subquery:
    """Per organisation, its newest answer of the round recorded by then
    (by commit time), with when and whether within the deadline it first
    answered in that round."""
    per_org = Answer.organisation_id
    ranked = (
        select(
            Answer.id,
            Answer.organisation_id,
            Answer.user_id,
            Answer.status,
            Answer.note,
            Answer.reason,
            Answer.mitigations,
            Answer.next_update_on,
            Answer.recorded_at,
            func.row_number()
            .over(partition_by=per_org, order_by=(Answer.recorded_at.desc(), Answer.id.desc()))
            .label("newest"),
            func.min(Answer.recorded_at).over(partition_by=per_org).label("first_at"),
            func.first_value(Answer.within_deadline)
            .over(partition_by=per_org, order_by=(Answer.recorded_at, Answer.id))
            .label("first_within"),
        )
        .where(
            Answer.alert_id == at.alert.id,
            Answer.recorded_at >= at.round_started_at,
            Answer.recorded_at <= at.as_at,
        )
        .subquery("ranked")
    )
    return select(ranked).where(ranked.c.newest == 1).subquery("latest")


def current_statuses(at: Moment, *, with_answers: bool) -> Subquery:
    """The same columns as ``latest_answers`` read from ``alert_statuses``
    (one row per organisation, kept current as each answer is recorded),
    which is right only while nothing was recorded after ``as_at``: see
    ``statuses_are_current``.  ``with_answers`` joins each status to its
    answer for the note, reason, mitigations and who gave it; the counts
    need none of them."""
    status = AlertStatus
    columns: list[Any] = [
        status.answer_id.label("id"),
        status.organisation_id,
        status.status,
        status.next_update_on,
        status.updated_at.label("recorded_at"),
        status.first_answered_at.label("first_at"),
        status.within_deadline.label("first_within"),
    ]
    if with_answers:
        columns += [Answer.user_id, Answer.note, Answer.reason, Answer.mitigations]
    query = select(*columns).where(status.alert_id == at.alert.id)
    if with_answers:
        query = query.join(Answer, Answer.id == status.answer_id)
    return query.subquery("latest")


def statuses_are_current(session: Session, at: Moment) -> bool:
    """Whether ``alert_statuses`` still holds the answers as they stood at
    ``as_at``: no answer recorded and no round begun since."""
    if at.later_round:
        return False
    newest = session.scalar(
        select(func.max(AlertStatus.updated_at)).where(AlertStatus.alert_id == at.alert.id)
    )
    return newest is None or newest <= at.as_at


def answers_then(session: Session, at: Moment, *, with_answers: bool) -> Subquery:
    """Each organisation's answer at ``as_at``: from the current statuses
    when they still hold it (reports as at now, the usual case), else from
    the history of answers."""
    if statuses_are_current(session, at):
        return current_statuses(at, with_answers=with_answers)
    return latest_answers(at)


def bounced(at: Moment) -> Subquery:
    """Per organisation the alert was sent to (anyone holding a role
    there), whether every one of those emails bounced.  (Deliveries keep
    only their current state, so this is as of now, not ``as_at``.)"""
    reached = func.count(case((Delivery.state != DeliveryState.BOUNCED, 1)))
    return (
        select(
            Membership.organisation_id,
            (reached == 0).label("all_bounced"),
        )
        .join(
            Delivery,
            and_(Delivery.user_id == Membership.user_id, Delivery.alert_id == at.alert.id),
        )
        .group_by(Membership.organisation_id)
        .subquery("sent")
    )


def all_bounced(sent: Subquery) -> ColumnElement[bool]:
    """True for an organisation whose every email bounced; false (not
    null) for one never sent the alert."""
    return func.coalesce(sent.c.all_bounced, False, type_=Boolean)
