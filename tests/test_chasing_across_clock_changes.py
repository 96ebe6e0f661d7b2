"""Chasing runs on the local wall clock (MAILFLOW_TIMEZONE) for working
hours and follow-up days, and on the real clock for deadlines: a pass every
quarter of an hour across the October and March changes of the clocks in
London neither skips nor doubles a reminder or a follow-up."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.alerts.alert_files import parse_alert_spec
from mailflow.alerts.issuing import issue_alert
from mailflow.config import Settings
from mailflow.core.models import ChaseKind, Chaser
from mailflow.core.runtime import Runtime
from mailflow.schedule_values import parse_working_days
from mailflow.workers.periodic import TASKS, run_pass
from tests.support.seed import alert_spec_data, seed_people

CHASING = tuple((name, task) for name, task in TASKS if name == "chasing")
EVERY_DAY = parse_working_days("mon-sun")

# Clocks go back at 02:00 BST on Sunday 25 October 2026 (01:00 UTC), and
# forward at 01:00 GMT on Sunday 28 March 2027.
AUTUMN = datetime(2026, 10, 25, 1, 0, tzinfo=UTC)
SPRING = datetime(2027, 3, 28, 1, 0, tzinfo=UTC)


@pytest.fixture
def runtime(settings_for: Any, database_url: str) -> Iterator[Runtime]:
    settings: Settings = settings_for(
        database_url, working_days=EVERY_DAY, follow_up_schedule="0 8 * * *"
    )
    rt = Runtime(settings)
    yield rt
    rt.close()


def issue_at(session: Session, when: datetime, hours: int) -> None:
    seed_people(session)
    spec = parse_alert_spec(alert_spec_data(deadline_hours=hours), source="test")
    issue_alert(session, spec, now=when, actor="test", mail_domain="alerts.test")
    session.commit()


def passes(runtime: Runtime, start: datetime, end: datetime) -> list[tuple[datetime, str]]:
    """A pass every 15 minutes from start to end: when each did something."""
    done = []
    at = start
    while at <= end:
        done.extend((at, line) for line in run_pass(runtime, at, CHASING))
        at += timedelta(minutes=15)
    return done


def alert_wide(session: Session) -> list[tuple[str, str]]:
    rows = session.execute(
        select(Chaser.kind, Chaser.step).where(Chaser.organisation_id.is_(None)).order_by(Chaser.id)
    )
    return [(kind.value, step) for kind, step in rows]


@pytest.mark.parametrize(
    ("change", "summer_first"), [(AUTUMN, True), (SPRING, False)], ids=["october", "march"]
)
def test_follow_ups_come_once_a_day_at_eight_local_time_across_the_change(
    runtime: Runtime, session: Session, change: datetime, summer_first: bool
) -> None:
    # The deadline passes on the Friday before the change, in the evening.
    friday_evening = change - timedelta(days=1, hours=4)
    issue_at(session, friday_evening - timedelta(hours=48), hours=48)

    done = passes(runtime, friday_evening - timedelta(hours=1), change + timedelta(days=2))

    follow_ups = [(at, line) for at, line in done if "follow-up" in line]
    assert [line.split("for ")[1].split(",")[0] for _, line in follow_ups] == [
        "2026-10-24" if summer_first else "2027-03-27",
        "2026-10-25" if summer_first else "2027-03-28",
        "2026-10-26" if summer_first else "2027-03-29",
    ]
    # At 08:00 local each day: 07:00 UTC in summer time, 08:00 UTC in winter
    # (the Sunday of the change is already on the new time at 08:00).
    summer, winter = 7, 8
    hours = [at.hour for at, _ in follow_ups]
    assert hours == ([summer, winter, winter] if summer_first else [winter, summer, summer])
    assert [kind for kind, _ in alert_wide(session)].count("escalation") == 1


@pytest.mark.parametrize("change", [AUTUMN, SPRING], ids=["october", "march"])
def test_reminders_across_the_change_come_once_each_at_their_hour(
    runtime: Runtime, session: Session, change: datetime
) -> None:
    # A 48-hour alert whose 24-hour point falls at 15:00 UTC on the day of
    # the change, and whose 4-hour point falls at 11:00 UTC the next day:
    # both in working hours on either time.
    deadline = change + timedelta(days=1, hours=14)
    issue_at(session, deadline - timedelta(hours=48), hours=48)

    done = passes(runtime, change - timedelta(hours=12), deadline + timedelta(hours=1))

    reminders = [(at, line) for at, line in done if "reminder" in line]
    assert [(at, line.split(": ")[2].split(" ")[0]) for at, line in reminders] == [
        (deadline - timedelta(hours=24), "24-hour"),
        (deadline - timedelta(hours=4), "4-hour"),
    ]
    assert alert_wide(session) == [
        ("reminder", "r1:24h"),
        ("reminder", "r1:4h"),
        ("escalation", "r1:deadline"),
    ]
    per_step = session.execute(
        select(Chaser.step, Chaser.organisation_id).where(
            Chaser.kind == ChaseKind.REMINDER, Chaser.organisation_id.is_not(None)
        )
    ).all()
    assert len(per_step) == len(set(per_step)) == 6


@pytest.mark.parametrize(
    ("change", "point", "sent_at"),
    [
        # 07:30 UTC on the October Sunday is 07:30 GMT, before working
        # hours (it would be 08:30 on summer time): held until 08:00 GMT.
        (
            AUTUMN,
            datetime(2026, 10, 25, 7, 30, tzinfo=UTC),
            datetime(2026, 10, 25, 8, 0, tzinfo=UTC),
        ),
        # 06:30 UTC on the March Sunday is 07:30 BST, before working hours
        # (it would be 06:30 on winter time): held until 08:00 BST, 07:00 UTC.
        (SPRING, datetime(2027, 3, 28, 6, 30, tzinfo=UTC), datetime(2027, 3, 28, 7, 0, tzinfo=UTC)),
    ],
    ids=["october", "march"],
)
def test_a_reminder_held_for_the_morning_waits_for_eight_on_the_new_time(
    runtime: Runtime, session: Session, change: datetime, point: datetime, sent_at: datetime
) -> None:
    deadline = point + timedelta(hours=24)
    issue_at(session, deadline - timedelta(hours=48), hours=48)

    done = passes(runtime, point - timedelta(hours=1), point + timedelta(hours=3))

    reminders = [at for at, line in done if "24-hour reminder" in line]
    assert reminders == [sent_at]
