"""Recording confirmed answers: the history, each organisation's current
status, and the single use of the links that commit them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailflow.answers.answer_rights import AnswerRights, answer_rights
from mailflow.answers.answer_values import AnswerValue
from mailflow.answers.statuses import AnswerStatus
from mailflow.answers.update_dates import UpdateDates, next_update_problem
from mailflow.config import Settings
from mailflow.core import pending
from mailflow.core.audit import record_event
from mailflow.core.errors import InvalidInput, NotAllowed, NotFound
from mailflow.core.models import (
    AlertAudience,
    AlertStatus,
    AlertUpdate,
    Answer,
    Confirmation,
    Organisation,
    User,
)

MAX_TEXT = 4000


class AccessRefused(NotAllowed):
    """The person no longer answers for an organisation named."""


def answers_asked_again_at(session: Session, alert_id: int) -> datetime | None:
    """When an update last asked for answers again (a new round began);
    an answer asked for before then (an older link, a reply confirmed
    late) belongs to the round that ended and is not recorded."""
    return session.scalar(
        select(func.max(AlertUpdate.published_at)).where(
            AlertUpdate.alert_id == alert_id, AlertUpdate.answer_again.is_(True)
        )
    )


def _text(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


def validate_further_information(
    status: AnswerStatus, *, note: str | None, reason: str | None, mitigations: str | None
) -> None:
    """The further information each status needs (the design's table)."""
    for field, value in (("note", note), ("reason", reason), ("mitigations", mitigations)):
        if value is not None and len(value) > MAX_TEXT:
            raise InvalidInput(field, f"keep it under {MAX_TEXT} characters")
    if status in (AnswerStatus.NOT_APPLICABLE, AnswerStatus.UNABLE) and not _text(reason):
        what = "why it does not apply" if status is AnswerStatus.NOT_APPLICABLE else "why"
        raise InvalidInput("reason", f"Say {what}")
    if status is AnswerStatus.UNABLE and not _text(mitigations):
        raise InvalidInput("mitigations", "Say what mitigations are in place")


def validate_next_update(answer: AnswerValue, today: date) -> None:
    """A next update (or review) date the person asked for must be from
    today to a year ahead."""
    if answer.next_update_on is None:
        return
    problem = next_update_problem(answer.status, answer.next_update_on, today)
    if problem is not None:
        raise InvalidInput("next_update", problem)


def record_answers(
    session: Session,
    settings: Settings,
    *,
    user_id: int,
    alert_id: int,
    answers: Sequence[AnswerValue],
    via: str,
    confirmation_id: int | None = None,
    now: datetime,
    rights: AnswerRights | None = None,
) -> list[Answer]:
    """Record confirmed answers in the caller's transaction: each one joins
    the history and becomes its organisation's current status, with when
    its next update (in progress) or review (unable) is due; a final
    answer ends the chasing for its organisation.  ``rights`` are the
    person's, read in this transaction by the caller (read here if not)."""
    dates = UpdateDates.of(settings)
    if rights is None:
        rights = answer_rights(session, user_id=user_id, alert_id=alert_id)
    if rights is None:
        raise NotFound(f"no user {user_id} or no alert {alert_id}")
    allowed = rights.allowed
    if not rights.active:
        raise AccessRefused("your access has been removed")
    if not answers:
        raise InvalidInput("organisations", "Choose at least one organisation")
    for answer in answers:
        if answer.organisation not in allowed:
            raise AccessRefused(f"you no longer answer for {answer.organisation}")
        validate_further_information(
            answer.status, note=answer.note, reason=answer.reason, mitigations=answer.mitigations
        )
        validate_next_update(answer, dates.today(now))

    within = now <= rights.deadline_at
    recorded = []
    for answer in answers:
        organisation_id = allowed[answer.organisation]
        next_update_on = dates.next_update_on(
            answer.status,
            answered_at=now,
            expected_on=answer.expected_on,
            asked_on=answer.next_update_on,
        )
        row = Answer(
            alert_id=alert_id,
            organisation_id=organisation_id,
            user_id=user_id,
            status=answer.status.value,
            note=_text(answer.note),
            reason=_text(answer.reason),
            mitigations=_text(answer.mitigations),
            expected_on=answer.expected_on,
            next_update_on=next_update_on,
            via=via,
            confirmation_id=confirmation_id,
            recorded_at=now,
            within_deadline=within,
        )
        session.add(row)
        session.flush()
        current = session.get(AlertStatus, (alert_id, organisation_id))
        if current is None:
            session.add(
                AlertStatus(
                    alert_id=alert_id,
                    organisation_id=organisation_id,
                    answer_id=row.id,
                    status=row.status,
                    first_answered_at=now,
                    updated_at=now,
                    within_deadline=within,
                    update_due_on=next_update_on,
                    next_update_on=next_update_on,
                )
            )
        else:
            current.answer_id = row.id
            current.status = row.status
            current.updated_at = now
            current.update_due_on = next_update_on
            current.next_update_on = next_update_on
        record_event(
            session,
            at=now,
            actor=f"user:{user_id}",
            action="answer.recorded",
            subject=f"alert:{rights.alert_reference}",
            organisation_id=organisation_id,
            status=row.status,
            via=via,
            answer_id=row.id,
        )
        recorded.append(row)
    session.flush()
    return recorded


# The kind of pending action that keeps the single use of each link
# purpose ("answer", "enrol").
def use_confirmation(
    session: Session, *, confirmation_id: int, nonce: str, user_id: int, now: datetime
) -> Confirmation | None:
    """Take a reply's confirmation for committing, once: None when it was
    used already, was replaced by a newer one, has expired, or is not this
    person's."""
    if not pending.use(
        session,
        action_id=confirmation_id,
        kind=pending.REPLY_ANSWERS,
        token=nonce,
        user_id=user_id,
        now=now,
    ):
        return None
    confirmation = session.get_one(Confirmation, confirmation_id)
    session.refresh(confirmation)
    return confirmation


@dataclass(frozen=True)
class StatusLine:
    code: str
    name: str
    status: str | None
    note: str | None
    reason: str | None
    mitigations: str | None
    expected_on: date | None
    # When the current answer's next update or review is due, as its
    # person was told: it stays while chasers go out, so a past date shows
    # an update that is overdue.
    update_due_on: date | None
    answered_by: str | None
    answered_by_name: str | None
    answered_at: datetime | None
    first_answered_at: datetime | None
    within_deadline: bool | None


def alert_status_lines(
    session: Session, *, alert_id: int, organisation_ids: Sequence[int] | None = None
) -> list[StatusLine]:
    """Each organisation in the alert's audience (or those of them named)
    with its current status."""
    query = (
        select(Organisation, AlertStatus, Answer, User)
        .join(AlertAudience, AlertAudience.organisation_id == Organisation.id)
        .outerjoin(
            AlertStatus,
            (AlertStatus.organisation_id == Organisation.id) & (AlertStatus.alert_id == alert_id),
        )
        .outerjoin(Answer, Answer.id == AlertStatus.answer_id)
        .outerjoin(User, User.id == Answer.user_id)
        .where(AlertAudience.alert_id == alert_id)
        .order_by(Organisation.code)
    )
    if organisation_ids is not None:
        query = query.where(Organisation.id.in_(organisation_ids))
    rows = session.execute(query).all()
    return [
        StatusLine(
            code=org.code,
            name=org.name,
            status=current.status if current else None,
            note=answer.note if answer else None,
            reason=answer.reason if answer else None,
            mitigations=answer.mitigations if answer else None,
            expected_on=answer.expected_on if answer else None,
            update_due_on=answer.next_update_on if answer else None,
            answered_by=user.email if user else None,
            answered_by_name=user.name if user else None,
            answered_at=answer.recorded_at if answer else None,
            first_answered_at=current.first_answered_at if current else None,
            within_deadline=current.within_deadline if current else None,
        )
        for org, current, answer, user in rows
    ]
