"""The re-check when a chasing email comes to be composed: the pass decided
on it a moment (or, after a crash, a while) ago, and since then an
organisation may have answered, the alert may have been closed, or the
person may have left.  Only what is still true goes into the email; when
nothing is, the email is dropped with the reason."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import ColumnElement, and_, exists, select
from sqlalchemy.orm import Session

from mailflow.answers.statuses import AnswerStatus
from mailflow.core.models import (
    Alert,
    AlertStatus,
    Answer,
    ChaseKind,
    Chaser,
    ChaserEmail,
    Membership,
    NationalRole,
    Organisation,
    Role,
    User,
)

ANSWERING_ROLES = (Role.ADMINISTRATOR, Role.RESPONDER)
# Who is chased for each kind, by their role at the organisation.
ROLES_CHASED: dict[ChaseKind, tuple[Role, ...]] = {
    ChaseKind.REMINDER: ANSWERING_ROLES,
    ChaseKind.OVERDUE: (Role.ADMINISTRATOR,),
    ChaseKind.UPDATE_DUE: ANSWERING_ROLES,
    ChaseKind.REVIEW_DUE: ANSWERING_ROLES,
}
# The status an update-due (review-due) chaser is about.
STATUS_CHASED = {
    ChaseKind.UPDATE_DUE: AnswerStatus.IN_PROGRESS,
    ChaseKind.REVIEW_DUE: AnswerStatus.UNABLE,
}

ALERT_CLOSED = "the alert was closed"
ROUND_OVER = "the alert was updated and answers asked for again since"
PERSON_GONE = "the person is no longer active"
NO_ROLE = "the person no longer holds the role for a chased organisation"
ALL_ANSWERED = "every chased organisation has answered"
ALL_UPDATED = "every chased organisation has updated its answer"
NOT_AUDITOR = "the person is no longer an auditor"


@dataclass(frozen=True)
class LastAnswer:
    """The answer an update-due or review-due email reminds them of."""

    status: AnswerStatus
    note: str | None
    reason: str | None
    mitigations: str | None
    expected_on: date | None
    recorded_at: datetime


@dataclass(frozen=True)
class StillChased:
    """An organisation the email is still about."""

    organisation: Organisation
    last: LastAnswer | None = None


@dataclass(frozen=True)
class Recheck:
    alert: Alert
    user: User
    chased: list[StillChased]


def open_alert_and_person(session: Session, row: ChaserEmail) -> tuple[Alert, User] | str:
    """The alert and the person, or why the email is not to be sent."""
    alert = session.get_one(Alert, row.alert_id)
    user = session.get_one(User, row.user_id)
    if alert.closed_at is not None:
        return ALERT_CLOSED
    # A chaser of an earlier round (written just before an update asked
    # for answers again) would name the wrong deadline.
    if row.step.split(":", 1)[0] != f"r{alert.round}":
        return ROUND_OVER
    if not user.active:
        return PERSON_GONE
    return alert, user


def recheck_auditor(session: Session, row: ChaserEmail) -> tuple[Alert, User] | str:
    found = open_alert_and_person(session, row)
    if isinstance(found, str):
        return found
    if found[1].national_role != NationalRole.AUDITOR:
        return NOT_AUDITOR
    return found


def recheck_member(session: Session, row: ChaserEmail) -> Recheck | str:
    """The organisations a reminder, overdue, update-due or review-due
    email is still about, in code order; or why it is not to be sent."""
    found = open_alert_and_person(session, row)
    if isinstance(found, str):
        return found
    alert, user = found
    held = _held_chased(session, row)
    if not held:
        return NO_ROLE
    status = STATUS_CHASED.get(row.kind)
    if status is None:
        chased = [StillChased(org) for org in held if _unanswered(session, alert.id, org.id)]
        return Recheck(alert, user, chased) if chased else ALL_ANSWERED
    owed = _still_owed(session, row, status, [org.id for org in held])
    chased = [StillChased(org, owed[org.id]) for org in held if org.id in owed]
    return Recheck(alert, user, chased) if chased else ALL_UPDATED


def _held_chased(session: Session, row: ChaserEmail) -> list[Organisation]:
    """The organisations chased at this step for which the person still
    holds a role this kind of email goes to."""
    return list(
        session.scalars(
            select(Organisation)
            .join(Chaser, Chaser.organisation_id == Organisation.id)
            .join(Membership, Membership.organisation_id == Organisation.id)
            .where(
                Chaser.alert_id == row.alert_id,
                Chaser.kind == row.kind,
                Chaser.step == row.step,
                Membership.user_id == row.user_id,
                Membership.role.in_(ROLES_CHASED[row.kind]),
                Organisation.closed_on.is_(None),
            )
            .order_by(Organisation.code)
        )
    )


def _unanswered(session: Session, alert_id: int, organisation_id: int) -> bool:
    return not session.scalar(select(_has_status(alert_id, organisation_id)))


def _has_status(alert_id: int, organisation_id: int) -> ColumnElement[bool]:
    return exists().where(
        AlertStatus.alert_id == alert_id, AlertStatus.organisation_id == organisation_id
    )


def _still_owed(
    session: Session, row: ChaserEmail, status: AnswerStatus, organisation_ids: list[int]
) -> dict[int, LastAnswer]:
    """Of these organisations, those whose current status is still the one
    chased and was not changed after the chaser was written, with the
    answer they last gave."""
    rows = session.execute(
        select(
            AlertStatus.organisation_id,
            Answer.status,
            Answer.note,
            Answer.reason,
            Answer.mitigations,
            Answer.expected_on,
            Answer.recorded_at,
        )
        .join(Answer, Answer.id == AlertStatus.answer_id)
        .join(
            Chaser,
            and_(
                Chaser.alert_id == AlertStatus.alert_id,
                Chaser.organisation_id == AlertStatus.organisation_id,
                Chaser.kind == row.kind,
                Chaser.step == row.step,
            ),
        )
        .where(
            AlertStatus.alert_id == row.alert_id,
            AlertStatus.organisation_id.in_(organisation_ids),
            AlertStatus.status == status.value,
            AlertStatus.updated_at <= Chaser.created_at,
        )
    )
    return {
        org_id: LastAnswer(AnswerStatus(status_), note, reason, mitigations, expected, at)
        for org_id, status_, note, reason, mitigations, expected, at in rows
    }
