"""The scheduler's chasing, as rows: which reminders, overdue marks,
escalations and follow-ups a pass decides on at each moment, and that a
pass run again, or as a dry run, adds nothing."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.alerts.alert_files import parse_alert_spec
from mailflow.alerts.issuing import issue_alert
from mailflow.answers.answer_values import AnswerValue
from mailflow.answers.recording import record_answers
from mailflow.answers.statuses import AnswerStatus
from mailflow.config import Settings
from mailflow.core.models import ChaseKind, Chaser, ChaserEmail, User
from mailflow.core.runtime import Runtime
from mailflow.workers.periodic import TASKS, run_pass
from tests.support.seed import alert_spec_data, seed_people

# A Tuesday, 15:00 in London (GMT): the deadline is Thursday 15:00.
ISSUED = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
DEADLINE = ISSUED + timedelta(hours=48)
CHASING = tuple((name, task) for name, task in TASKS if name == "chasing")


def issue_at(session: Session, when: datetime, hours: int = 48) -> int:
    seed_people(session)
    spec = parse_alert_spec(alert_spec_data(deadline_hours=hours), source="test")
    issued = issue_alert(session, spec, now=when, actor="test", mail_domain="alerts.test")
    session.commit()
    return issued.alert.id


@pytest.fixture
def alert_id(session: Session) -> int:
    return issue_at(session, ISSUED)


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime(settings)
    yield rt
    rt.close()


def chase(runtime: Runtime, at: datetime, *, dry_run: bool = False) -> list[str]:
    return run_pass(runtime, at, CHASING, dry_run=dry_run)


def emails(session: Session) -> Counter[tuple[str, str, str]]:
    session.expire_all()
    rows = session.execute(
        select(ChaserEmail.kind, ChaserEmail.step, User.email).join(
            User, User.id == ChaserEmail.user_id
        )
    )
    return Counter((kind.value, step, email) for kind, step, email in rows)


def chased(session: Session, kind: ChaseKind) -> set[tuple[str, int | None]]:
    session.expire_all()
    return {
        (step, org)
        for step, org in session.execute(
            select(Chaser.step, Chaser.organisation_id).where(Chaser.kind == kind)
        )
    }


def answer(
    session: Session, settings: Settings, alert_id: int, email: str, code: str, at: datetime
) -> None:
    user = session.scalars(select(User).where(User.email == email)).one()
    record_answers(
        session,
        settings,
        user_id=user.id,
        alert_id=alert_id,
        answers=[AnswerValue(code, AnswerStatus.COMPLETE)],
        via="link",
        now=at,
    )
    session.commit()


def test_reminders_then_the_deadline_then_follow_ups_each_once(
    alert_id: int, runtime: Runtime, session: Session
) -> None:
    assert chase(runtime, DEADLINE - timedelta(hours=30)) == []

    first = chase(runtime, DEADLINE - timedelta(hours=23))
    assert first == ["chasing: CC-4720: 24-hour reminder for 3 organisation(s), 5 email(s)"]
    assert chase(runtime, DEADLINE - timedelta(hours=22)) == []
    # Li Chen answers for two of them and gets one email.
    assert set(emails(session)) == {
        ("reminder", "r1:24h", who)
        for who in (
            "ann@riverside.example",
            "raj@riverside.example",
            "bea@brookfield.example",
            "li@itservices.example",
            "sam@castleton.example",
        )
    }

    answer(
        session,
        runtime.settings,
        alert_id,
        "raj@riverside.example",
        "RXA",
        DEADLINE - timedelta(hours=10),
    )
    second = chase(runtime, DEADLINE - timedelta(hours=3))
    assert second == ["chasing: CC-4720: 4-hour reminder for 2 organisation(s), 3 email(s)"]

    at_deadline = chase(runtime, DEADLINE)
    assert at_deadline == [
        "chasing: CC-4720: deadline passed, 2 organisation(s) overdue, 1 email(s)"
    ]
    assert len(chased(session, ChaseKind.OVERDUE)) == 2
    assert emails(session)[("escalation", "r1:deadline", "ola@oversight.example")] == 1
    assert chase(runtime, DEADLINE + timedelta(hours=1)) == []

    # Friday 08:00 is the first follow-up day after Thursday's deadline.
    friday = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)
    assert chase(runtime, friday - timedelta(minutes=1)) == []
    assert chase(runtime, friday) == [
        "chasing: CC-4720: overdue follow-up for 2026-12-04, 1 email(s)"
    ]
    assert chase(runtime, friday + timedelta(hours=5)) == []
    # No follow-up at the weekend; Monday's comes even if the pass is late.
    assert chase(runtime, datetime(2026, 12, 5, 8, 0, tzinfo=UTC)) == []
    monday = chase(runtime, datetime(2026, 12, 7, 11, 30, tzinfo=UTC))
    assert monday == ["chasing: CC-4720: overdue follow-up for 2026-12-07, 1 email(s)"]


def test_a_dry_run_says_what_it_would_do_and_writes_nothing(
    alert_id: int, runtime: Runtime, session: Session
) -> None:
    would = chase(runtime, DEADLINE - timedelta(hours=23), dry_run=True)

    assert would == ["chasing: CC-4720: 24-hour reminder for 3 organisation(s), 5 email(s)"]
    assert emails(session) == Counter()
    assert chased(session, ChaseKind.REMINDER) == set()
    assert chase(runtime, DEADLINE - timedelta(hours=23)) == would


def test_reminders_wait_for_working_hours(runtime: Runtime, session: Session) -> None:
    # Issued on Tuesday at 02:00: the 24-hour point is Wednesday 02:00.
    issue_at(session, datetime(2026, 12, 1, 2, 0, tzinfo=UTC))
    assert chase(runtime, datetime(2026, 12, 2, 7, 59, tzinfo=UTC)) == []
    held = chase(runtime, datetime(2026, 12, 2, 8, 0, tzinfo=UTC))
    assert held == ["chasing: CC-4720: 24-hour reminder for 3 organisation(s), 5 email(s)"]
    # The 4-hour point, Thursday 22:00, is after working hours: none is sent.
    assert chase(runtime, datetime(2026, 12, 2, 22, 30, tzinfo=UTC)) == []
    assert chase(runtime, datetime(2026, 12, 3, 1, 59, tzinfo=UTC)) == []


def test_a_short_deadline_skips_reminder_points_before_the_alert_went_out(
    runtime: Runtime, session: Session
) -> None:
    # A 12-hour alert issued on Tuesday at 10:00: its 24-hour point came
    # before it; the 4-hour point (18:00) is after working hours, and the
    # next working morning after the deadline, so it comes at 17:00.
    issue_at(session, datetime(2026, 12, 1, 10, 0, tzinfo=UTC), hours=12)

    assert chase(runtime, datetime(2026, 12, 1, 10, 1, tzinfo=UTC)) == []
    assert chase(runtime, datetime(2026, 12, 1, 16, 59, tzinfo=UTC)) == []
    sent = chase(runtime, datetime(2026, 12, 1, 17, 0, tzinfo=UTC))
    assert sent == ["chasing: CC-4720: 4-hour reminder for 3 organisation(s), 5 email(s)"]


def test_a_monday_morning_deadline_is_reminded_on_friday_afternoon(
    runtime: Runtime, session: Session
) -> None:
    # Due Monday 07:30: both points (Sunday 07:30, Monday 03:30) are out of
    # hours, and the next working morning is after the deadline.
    issue_at(session, datetime(2026, 12, 4, 7, 30, tzinfo=UTC), hours=72)

    assert chase(runtime, datetime(2026, 12, 4, 16, 59, tzinfo=UTC)) == []
    sent = chase(runtime, datetime(2026, 12, 4, 17, 0, tzinfo=UTC))
    assert sent == ["chasing: CC-4720: 4-hour reminder for 3 organisation(s), 5 email(s)"]
    assert chase(runtime, datetime(2026, 12, 6, 7, 30, tzinfo=UTC)) == []


def test_a_deadline_acted_on_late_is_followed_up_the_next_day_not_the_same_pass(
    alert_id: int, runtime: Runtime, session: Session
) -> None:
    # The deadline is Thursday 15:00; nothing ran until Monday 09:00.
    monday = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    # Ann, RXA's administrator, and the auditor.
    assert chase(runtime, monday) == [
        "chasing: CC-4720: deadline passed, 3 organisation(s) overdue, 2 email(s)"
    ]
    assert chase(runtime, monday + timedelta(hours=1)) == []
    tuesday = datetime(2026, 12, 8, 8, 0, tzinfo=UTC)
    assert chase(runtime, tuesday) == [
        "chasing: CC-4720: overdue follow-up for 2026-12-08, 1 email(s)"
    ]


def test_chasers_worked_out_for_a_round_that_has_since_ended_are_not_written(
    alert_id: int, session: Session
) -> None:
    from mailflow.core.models import Alert
    from mailflow.deadlines import due

    # An update asking for answers again commits between the pass's look
    # and its write: the round-1 deadline must not mark anyone overdue.
    session.get_one(Alert, alert_id).round = 2
    due.add_organisation_chasers(
        session,
        steps={alert_id: (ChaseKind.OVERDUE, "r1:deadline")},
        batch="b",
        now=DEADLINE,
    )
    session.flush()
    assert session.scalars(select(Chaser)).all() == []
