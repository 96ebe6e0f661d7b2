"""An organisation whose answer is not final is chased for its next
update (in progress) or review (unable) when that date comes, in working
hours, once a period, until a final answer ends it: the scheduler's
chasing pass at chosen moments, seen as the chaser emails it queues."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.alerts.alert_files import parse_alert_spec
from mailflow.alerts.issuing import issue_alert
from mailflow.answers.answer_values import AnswerValue
from mailflow.answers.recording import alert_status_lines, record_answers
from mailflow.answers.statuses import AnswerStatus
from mailflow.cli.alert_report_command import due_date_text as statusdue_date_text
from mailflow.config import Settings
from mailflow.core.models import ChaseKind, ChaserEmail, User
from mailflow.core.runtime import Runtime
from mailflow.workers.periodic import TASKS, run_pass
from tests.support.seed import alert_spec_data, seed_people

CHASING = tuple((name, task) for name, task in TASKS if name == "chasing")
# December in London is GMT: these UTC times are the local wall clock.
ISSUED = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)  # a Tuesday
ANSWERED = datetime(2026, 12, 1, 16, 0, tzinfo=UTC)
# RXA's people: its administrator and its responder.
RXA_PEOPLE = {"ann@riverside.example", "raj@riverside.example"}


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime(settings)
    yield rt
    rt.close()


@pytest.fixture
def alert_id(session: Session) -> int:
    seed_people(session)
    spec = parse_alert_spec(alert_spec_data(), source="test")
    issued = issue_alert(session, spec, now=ISSUED, actor="test", mail_domain="alerts.test")
    session.commit()
    return issued.alert.id


def answer(session: Session, settings: Settings, alert_id: int, value: AnswerValue) -> None:
    raj = session.scalars(select(User).where(User.email == "raj@riverside.example")).one()
    at = ANSWERED if value.status is not AnswerStatus.COMPLETE else COMPLETED
    record_answers(
        session, settings, user_id=raj.id, alert_id=alert_id, answers=[value], via="link", now=at
    )
    session.commit()


COMPLETED = datetime(2026, 12, 7, 11, 0, tzinfo=UTC)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 12, day, hour, minute, tzinfo=UTC)


def chase_updates(runtime: Runtime, when: datetime) -> list[str]:
    """What one pass at ``when`` did about updates and reviews (reminders,
    escalations and follow-ups for the other organisations go on too)."""
    done = run_pass(runtime, when, CHASING)
    return [line for line in done if "update-due" in line or "review-due" in line]


def chaser_emails(session: Session, kind: ChaseKind) -> list[tuple[str, str]]:
    # End the read (on SQLite a transaction keeps reading its snapshot).
    session.rollback()
    rows = session.execute(
        select(ChaserEmail.step, User.email)
        .join(User, User.id == ChaserEmail.user_id)
        .where(ChaserEmail.kind == kind)
        .order_by(ChaserEmail.step, User.email)
    )
    return [(step, email) for step, email in rows]


def each_of_rxa(step: str) -> list[tuple[str, str]]:
    return [(step, who) for who in sorted(RXA_PEOPLE)]


def test_an_update_falls_due_is_chased_once_then_again_until_a_final_answer(
    alert_id: int, runtime: Runtime, session: Session, settings: Settings
) -> None:
    answer(session, settings, alert_id, AnswerValue("RXA", AnswerStatus.IN_PROGRESS))

    # Due on Friday 4 December, 3 days after Tuesday's answer.
    assert chase_updates(runtime, at(3, 12)) == []
    assert chase_updates(runtime, at(4, 7, 59)) == []  # before working hours
    assert chase_updates(runtime, at(4, 9)) == [
        "chasing: update-due for 1 organisation(s), 2 email(s)"
    ]
    assert chase_updates(runtime, at(4, 14)) == []  # not again the same day
    assert chaser_emails(session, ChaseKind.UPDATE_DUE) == each_of_rxa("r1:2026-12-04")

    # Nothing changes: 3 days on, Monday 7 December, it is chased again.
    assert chase_updates(runtime, at(5, 10)) == []
    assert chase_updates(runtime, at(7, 8)) == [
        "chasing: update-due for 1 organisation(s), 2 email(s)"
    ]
    assert chaser_emails(session, ChaseKind.UPDATE_DUE) == each_of_rxa(
        "r1:2026-12-04"
    ) + each_of_rxa("r1:2026-12-07")
    # The status still says when the update was due, so it shows overdue.
    session.rollback()
    [rxa] = [x for x in alert_status_lines(session, alert_id=alert_id) if x.code == "RXA"]
    assert rxa.update_due_on == date(2026, 12, 4)
    assert statusdue_date_text(rxa.update_due_on, date(2026, 12, 7)) == "2026-12-04 (overdue)"
    assert statusdue_date_text(rxa.update_due_on, date(2026, 12, 4)) == "2026-12-04"

    answer(session, settings, alert_id, AnswerValue("RXA", AnswerStatus.COMPLETE))

    for day in (10, 11, 14, 21):
        assert chase_updates(runtime, at(day, 10)) == []
    assert len(chaser_emails(session, ChaseKind.UPDATE_DUE)) == 4


def test_an_unable_answer_is_chased_for_review_after_fourteen_days(
    alert_id: int, runtime: Runtime, session: Session, settings: Settings
) -> None:
    answer(
        session,
        settings,
        alert_id,
        AnswerValue("RXA", AnswerStatus.UNABLE, reason="no fix yet", mitigations="offline"),
    )

    assert chase_updates(runtime, at(4, 10)) == []
    assert chase_updates(runtime, at(14, 17)) == []
    assert chase_updates(runtime, at(15, 7)) == []  # 07:00: quiet hours
    assert chase_updates(runtime, at(15, 8)) == [
        "chasing: review-due for 1 organisation(s), 2 email(s)"
    ]
    assert chaser_emails(session, ChaseKind.REVIEW_DUE) == each_of_rxa("r1:2026-12-15")
    assert chaser_emails(session, ChaseKind.UPDATE_DUE) == []


def test_an_update_due_at_the_weekend_waits_for_monday_morning(
    alert_id: int, runtime: Runtime, session: Session, settings: Settings
) -> None:
    saturday = date(2026, 12, 5)
    answer(
        session,
        settings,
        alert_id,
        AnswerValue("RXA", AnswerStatus.IN_PROGRESS, next_update_on=saturday),
    )

    assert chase_updates(runtime, at(5, 10)) == []
    assert chase_updates(runtime, at(6, 12)) == []
    assert chase_updates(runtime, at(7, 7, 30)) == []
    assert chase_updates(runtime, at(7, 8)) == [
        "chasing: update-due for 1 organisation(s), 2 email(s)"
    ]
    assert chaser_emails(session, ChaseKind.UPDATE_DUE) == each_of_rxa("r1:2026-12-05")
