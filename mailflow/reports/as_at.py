"""An alert as it stood at one moment: its round of answers, the
organisations in scope, each one's answer then, and whether every email
sent for it bounced.  Each is a subquery, so the figures and the rows are
aggregated or streamed by the database from the same definitions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import Boolean, ColumnElement, Subquery, and_, case, func, or_, select
from sqlalchemy.orm import Session

from mailflow.core.models import (
    Alert,
    AlertAudience,
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
    again); ``today`` is the local date, against which updates are due."""

    alert: Alert
    as_at: datetime
    today: date
    round_started_at: datetime
    deadline_at: datetime


def moment(session: Session, alert: Alert, *, as_at: datetime, zone: ZoneInfo) -> Moment:
    """An update that asked for answers again cleared the statuses: the
    answers given before it no longer count from its publication on."""
    restart = session.execute(
        select(AlertUpdate.published_at, AlertUpdate.deadline_at)
        .where(
            AlertUpdate.alert_id == alert.id,
            AlertUpdate.answer_again.is_(True),
            AlertUpdate.published_at <= as_at,
        )
        .order_by(AlertUpdate.published_at.desc(), AlertUpdate.id.desc())
        .limit(1)
    ).first()
    started, deadline = restart if restart else (alert.issued_at, None)
    return Moment(
        alert=alert,
        as_at=as_at,
        today=as_at.astimezone(zone).date(),
        round_started_at=started,
        # The first round's deadline is not kept once a later round has
        # replaced it on the alert; the alert's own is the best there is.
        deadline_at=deadline or alert.deadline_at,
    )


def in_scope(at: Moment) -> Subquery:
    """The organisations the alert went to that were open at the time."""
    return (
        select(Organisation.id.label("organisation_id"))
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
