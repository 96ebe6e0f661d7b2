"""An alert as it stood at one moment: its round of answers, the
organisations in scope, each one's answer then, and whether every email
sent for it bounced.  Each is a subquery, so the figures and the rows are
aggregated or streamed by the database from the same definitions."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Select, Subquery, case, distinct, func, select
from sqlalchemy.orm import Session, aliased

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


def restarts_of(session: Session, alert_ids: Sequence[int]) -> dict[int, list[Any]]:
    """Each alert's updates that asked for answers again, newest first."""
    found: dict[int, list[Any]] = defaultdict(list)
    rows = session.execute(
        select(AlertUpdate.alert_id, AlertUpdate.published_at, AlertUpdate.deadline_at)
        .where(AlertUpdate.alert_id.in_(alert_ids), AlertUpdate.answer_again.is_(True))
        .order_by(AlertUpdate.published_at.desc(), AlertUpdate.id.desc())
    )
    for alert_id, published_at, deadline_at in rows:
        found[alert_id].append((published_at, deadline_at))
    return found


def moment(session: Session, alert: Alert, *, as_at: datetime, zone: ZoneInfo) -> Moment:
    """An update that asked for answers again cleared the statuses: the
    answers given before it no longer count from its publication on."""
    restarts = restarts_of(session, [alert.id])[alert.id]
    return moment_of(alert, restarts, as_at=as_at, zone=zone)


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
    return scope_of([at.alert.id], at.today)


def scope_of(alert_ids: Sequence[int], today: date) -> Subquery:
    """The organisations each alert went to that were open on ``today``."""
    return (
        select(AlertAudience.alert_id, AlertAudience.organisation_id)
        .where(
            AlertAudience.alert_id.in_(alert_ids),
            ~closed_by(AlertAudience.organisation_id, today),
        )
        .subquery("scope")
    )


def closed_by(organisation_id: Any, today: date) -> ColumnElement[bool]:
    """The organisation had closed by ``today``.  Few ever close, and the
    index on ``closed_on`` finds those few, so leaving them out (NOT this)
    costs next to nothing, where joining every organisation did."""
    return (
        select(Organisation.id)
        .where(Organisation.id == organisation_id, Organisation.closed_on <= today)
        .exists()
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


def statuses_of(alert_ids: Sequence[int], *, with_answers: bool = False) -> Subquery:
    """The current statuses of these alerts (one row per organisation,
    kept current as each answer is recorded), under the names of
    ``latest_answers``: right only while nothing was recorded after the
    time asked about (see ``statuses_are_current``).  ``with_answers``
    joins each to its answer for the note, reason, mitigations and who
    gave it; the counts need none of them."""
    columns: list[Any] = [
        AlertStatus.alert_id,
        AlertStatus.organisation_id,
        AlertStatus.answer_id.label("id"),
        AlertStatus.status,
        AlertStatus.next_update_on,
        AlertStatus.updated_at.label("recorded_at"),
        AlertStatus.first_answered_at.label("first_at"),
        AlertStatus.within_deadline.label("first_within"),
    ]
    if with_answers:
        columns += [Answer.user_id, Answer.note, Answer.reason, Answer.mitigations]
    query = select(*columns).where(AlertStatus.alert_id.in_(alert_ids))
    if with_answers:
        query = query.join(Answer, Answer.id == AlertStatus.answer_id)
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
        return statuses_of([at.alert.id], with_answers=with_answers)
    return latest_answers(at)


def unreachable(alert_id: Any, organisation_id: Any) -> ColumnElement[bool]:
    """Every email of the alert sent to the organisation's people bounced
    (and there was at least one: with none, the comparison is with null,
    which is not true).  As of now: deliveries keep only their current
    state.  One correlated subquery, so the database looks it up once
    for each organisation it asks about."""
    reached = func.max(case((Delivery.state != DeliveryState.BOUNCED, 1), else_=0))
    return (
        select(reached)
        .join(Membership, Membership.user_id == Delivery.user_id)
        .where(Delivery.alert_id == alert_id, Membership.organisation_id == organisation_id)
        .scalar_subquery()
        == 0
    )


def unreachable_counts(alert_ids: Sequence[int], today: date) -> Select[int, int]:
    """Per alert, the organisations in scope with no current status whose
    every email bounced: the same as ``unreachable``, found from the
    bounces (one email in fifty, say) rather than by asking of every
    organisation."""
    organisation = Membership.organisation_id
    reached, member = aliased(Delivery), aliased(Membership)
    not_bounced = (
        select(reached.id)
        .join(member, member.user_id == reached.user_id)
        .where(
            reached.alert_id == Delivery.alert_id,
            member.organisation_id == organisation,
            reached.state != DeliveryState.BOUNCED,
        )
    )
    in_audience = select(AlertAudience.organisation_id).where(
        AlertAudience.alert_id == Delivery.alert_id, AlertAudience.organisation_id == organisation
    )
    answered = select(AlertStatus.organisation_id).where(
        AlertStatus.alert_id == Delivery.alert_id, AlertStatus.organisation_id == organisation
    )
    return (
        select(Delivery.alert_id, func.count(distinct(organisation)))
        .join(Membership, Membership.user_id == Delivery.user_id)
        .where(
            Delivery.alert_id.in_(alert_ids),
            Delivery.state == DeliveryState.BOUNCED,
            in_audience.exists(),
            ~closed_by(organisation, today),
            ~answered.exists(),
            ~not_bounced.exists(),
        )
        .group_by(Delivery.alert_id)
    )
