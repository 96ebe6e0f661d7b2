"""Confirmed answers: history, current status, deadlines, access, single
use of committing links, and receipts."""

from __future__ import annotations

from datetime import timedelta
from email import message_from_bytes
from email.policy import default

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailflow.answers.answer_values import AnswerValue
from mailflow.answers.pending_answers import record_pending_answers
from mailflow.answers.receipts import queue_receipts
from mailflow.answers.recording import (
    AccessRefused,
    alert_status_lines,
    record_answers,
    use_confirmation,
)
from mailflow.answers.statuses import AnswerStatus
from mailflow.config import Settings
from mailflow.core import pending
from mailflow.core.errors import InvalidInput
from mailflow.core.models import (
    AlertStatus,
    Answer,
    AuditEvent,
    Organisation,
    OutgoingEmail,
    User,
)
from mailflow.people.users import remove_user
from tests.support.seed import NOW, issue, seed_people


@pytest.fixture
def world(session: Session) -> dict[str, int]:
    seed_people(session)
    alert = issue(session).alert
    session.commit()
    ids = {u.email.split("@")[0]: u.id for u in session.scalars(select(User))}
    ids.update({o.code: o.id for o in session.scalars(select(Organisation))})
    ids["alert"] = alert.id
    return ids


def test_answers_keep_their_history_and_the_newest_is_current(
    session: Session,
    settings: Settings,
    world: dict[str, int],
) -> None:
    first = record_answers(
        session,
        settings,
        user_id=world["raj"],
        alert_id=world["alert"],
        via="link",
        now=NOW,
        answers=[AnswerValue("RXA", AnswerStatus.IN_PROGRESS, note="patching tonight")],
    )
    later = NOW + timedelta(days=3)  # after the 48-hour deadline
    record_answers(
        session,
        settings,
        user_id=world["ann"],
        alert_id=world["alert"],
        via="reply",
        now=later,
        answers=[AnswerValue("RXA", AnswerStatus.COMPLETE)],
    )
    session.commit()

    assert [a.status for a in session.scalars(select(Answer).order_by(Answer.id))] == [
        "in_progress",
        "complete",
    ]
    current = session.get_one(AlertStatus, (world["alert"], world["RXA"]))
    assert current.status == "complete"
    # Whether the organisation met the deadline is judged by its first answer.
    assert current.within_deadline is True and current.first_answered_at == first[0].recorded_at
    assert (
        session.scalars(select(Answer).order_by(Answer.id.desc())).first().within_deadline is False
    )  # type: ignore[union-attr]
    lines = {line.code: line for line in alert_status_lines(session, alert_id=world["alert"])}
    assert lines["RXA"].status == "complete" and lines["RXA"].answered_by == "ann@riverside.example"
    assert lines["RXB"].status is None and lines["RXC"].status is None
    events = session.scalar(select(func.count()).where(AuditEvent.action == "answer.recorded"))
    assert events == 2


@pytest.mark.parametrize(
    ("status", "reason", "mitigations", "field"),
    [
        (AnswerStatus.NOT_APPLICABLE, None, None, "reason"),
        (AnswerStatus.UNABLE, "no patch", None, "mitigations"),
        (AnswerStatus.UNABLE, "  ", "offline", "reason"),
    ],
)
def test_required_further_information_is_required(
    session: Session,
    settings: Settings,
    world: dict[str, int],
    status: AnswerStatus,
    reason: str | None,
    mitigations: str | None,
    field: str,
) -> None:
    with pytest.raises(InvalidInput) as refused:
        record_answers(
            session,
            settings,
            user_id=world["raj"],
            alert_id=world["alert"],
            via="link",
            now=NOW,
            answers=[AnswerValue("RXA", status, reason=reason, mitigations=mitigations)],
        )
    assert refused.value.where == field
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Answer)) == 0


def test_no_answer_for_an_organisation_the_person_does_not_answer_for(
    session: Session,
    settings: Settings,
    world: dict[str, int],
) -> None:
    with pytest.raises(AccessRefused):  # alert-only contact
        record_answers(
            session,
            settings,
            user_id=world["tom"],
            alert_id=world["alert"],
            via="link",
            now=NOW,
            answers=[AnswerValue("RXC", AnswerStatus.COMPLETE)],
        )
    with pytest.raises(AccessRefused):  # someone else's organisation
        record_answers(
            session,
            settings,
            user_id=world["raj"],
            alert_id=world["alert"],
            via="link",
            now=NOW,
            answers=[AnswerValue("RXB", AnswerStatus.COMPLETE)],
        )
    remove_user(session, email="raj@riverside.example", org_code="RXA", now=NOW, actor="test")
    with pytest.raises(AccessRefused):  # access removed after the email was sent
        record_answers(
            session,
            settings,
            user_id=world["raj"],
            alert_id=world["alert"],
            via="link",
            now=NOW,
            answers=[AnswerValue("RXA", AnswerStatus.COMPLETE)],
        )


def test_a_committing_link_works_once(session: Session, world: dict[str, int]) -> None:
    def use(token: str) -> bool:
        return pending.use_link_once(
            session, kind=pending.ANSWER_LINK_USE, token=token, user_id=world["raj"], now=NOW
        )

    assert use("abc")
    session.commit()
    assert not use("abc")
    assert use("abd")


def test_a_confirmation_is_used_once_by_its_own_person_before_it_expires(
    session: Session,
    world: dict[str, int],
) -> None:
    confirmation = record_pending_answers(
        session,
        user_id=world["li"],
        alert_id=world["alert"],
        delivery_id=None,
        inbound_message_id=None,
        answers=[AnswerValue("RXB", AnswerStatus.COMPLETE)],
        now=NOW,
        lifetime=timedelta(hours=24),
    )
    session.commit()
    args = {"confirmation_id": confirmation.id, "nonce": confirmation.nonce}
    assert use_confirmation(session, **args, user_id=world["ann"], now=NOW) is None
    assert (
        use_confirmation(
            session, confirmation_id=confirmation.id, nonce="forged", user_id=world["li"], now=NOW
        )
        is None
    )
    late = NOW + timedelta(hours=25)
    assert use_confirmation(session, **args, user_id=world["li"], now=late) is None
    used = use_confirmation(session, **args, user_id=world["li"], now=NOW)
    assert used is not None and used.used_at == NOW
    assert use_confirmation(session, **args, user_id=world["li"], now=NOW) is None


def test_receipts_go_to_the_person_and_their_organisations_administrators(
    session: Session,
    world: dict[str, int],
    settings: Settings,
) -> None:
    raj = session.get_one(User, world["raj"])
    answers = record_answers(
        session,
        settings,
        user_id=raj.id,
        alert_id=world["alert"],
        via="link",
        now=NOW,
        answers=[AnswerValue("RXA", AnswerStatus.NOT_APPLICABLE, reason="no VPN here")],
    )
    from mailflow.core.models import Alert

    count = queue_receipts(
        session,
        settings,
        user=raj,
        alert=session.get_one(Alert, world["alert"]),
        answers=answers,
        now=NOW,
    )
    session.commit()
    emails = session.scalars(select(OutgoingEmail).order_by(OutgoingEmail.id)).all()
    assert count == 2
    assert [(e.kind, e.recipient) for e in emails] == [
        ("receipt", "raj@riverside.example"),
        ("receipt", "ann@riverside.example"),
    ]
    to_ann = message_from_bytes(emails[1].raw, policy=default)
    text = to_ann.get_body(("plain",)).get_content()
    assert "Raj Patel (raj@riverside.example) recorded an answer" in text
    assert "Riverside Acute NHS Trust (RXA): Not applicable" in text and "no VPN here" in text
    assert "CC-4720" in str(to_ann["Subject"])
