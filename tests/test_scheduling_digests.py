"""When digests fall due: at 08:00 on the local clock, every working day
for a daily auditor and on Mondays for a weekly one, on both sides of a
clock change; only the latest period after downtime; not for an alert
issued after the period began; configured like any setting, and a bad
value stops mailflow naming it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.alerts.alert_files import parse_alert_spec
from mailflow.alerts.issuing import issue_alert
from mailflow.config import ConfigError, Settings, load_settings
from mailflow.core.models import Digest, DigestSchedule, DigestState, Job, User
from mailflow.core.models.digests import SEND_DIGESTS
from mailflow.core.runtime import Runtime
from mailflow.reports.digest_policy import DigestPolicy
from mailflow.workers.periodic import run_pass
from tests.support.digests import DIGESTS, OLA, UMA, Digests, add_auditors
from tests.support.seed import alert_spec_data, seed_people

SECRET = "an-operator-secret-0123456789-abcdefghijklmnop"
DAILY, WEEKLY = DigestSchedule.DAILY, DigestSchedule.WEEKLY


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def policy_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **environ: str) -> DigestPolicy:
    monkeypatch.chdir(tmp_path)  # no config/mailflow.toml can leak in
    return DigestPolicy.of(load_settings(environ={"MAILFLOW_SECRET_KEY": SECRET, **environ}))


@pytest.fixture
def policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DigestPolicy:
    return policy_with(tmp_path, monkeypatch)


# ------------------------------------------------------------------ policy


@pytest.mark.parametrize(
    ("schedule", "now", "period"),
    [
        # The clocks go forward on Sunday 29 March 2026: Friday's 08:00 is
        # 08:00 UTC, Monday's is 07:00 UTC.
        (DAILY, utc(2026, 3, 27, 8, 0), utc(2026, 3, 27, 8, 0)),
        (DAILY, utc(2026, 3, 30, 6, 59), utc(2026, 3, 27, 8, 0)),
        (DAILY, utc(2026, 3, 30, 7, 0), utc(2026, 3, 30, 7, 0)),
        (DAILY, utc(2026, 3, 31, 6, 59, 59), utc(2026, 3, 30, 7, 0)),
        # They go back on Sunday 25 October 2026: Friday's 08:00 is 07:00
        # UTC, Monday's 08:00 UTC.
        (DAILY, utc(2026, 10, 23, 7, 0), utc(2026, 10, 23, 7, 0)),
        (DAILY, utc(2026, 10, 26, 7, 59), utc(2026, 10, 23, 7, 0)),
        (DAILY, utc(2026, 10, 26, 8, 0), utc(2026, 10, 26, 8, 0)),
        # Weekly: Mondays at 08:00, whatever the offset.
        (WEEKLY, utc(2026, 3, 30, 6, 59), utc(2026, 3, 23, 8, 0)),
        (WEEKLY, utc(2026, 3, 30, 7, 0), utc(2026, 3, 30, 7, 0)),
        (WEEKLY, utc(2026, 4, 3, 12, 0), utc(2026, 3, 30, 7, 0)),
        (WEEKLY, utc(2026, 10, 26, 7, 59), utc(2026, 10, 19, 7, 0)),
        (WEEKLY, utc(2026, 10, 26, 8, 0), utc(2026, 10, 26, 8, 0)),
    ],
)
def test_the_period_is_the_latest_0800_local_at_or_before_now(
    policy: DigestPolicy, schedule: DigestSchedule, now: datetime, period: datetime
) -> None:
    assert policy.period_at(schedule, now) == period


def test_an_auditor_who_wants_none_has_no_period(policy: DigestPolicy) -> None:
    assert policy.period_at(DigestSchedule.OFF, utc(2026, 12, 1, 9, 0)) is None
    assert set(policy.periods_at(utc(2026, 12, 1, 9, 0))) == {DAILY, WEEKLY}


def test_the_schedules_can_be_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = policy_with(
        tmp_path,
        monkeypatch,
        MAILFLOW_DIGEST_DAILY="30  7 * * *",
        MAILFLOW_DIGEST_WEEKLY="0 9 * * fri",
        MAILFLOW_TIMEZONE="America/New_York",
    )
    # Saturday 5 December, 12:00 UTC is 07:00 in New York: Friday's 07:30.
    assert policy.period_at(DAILY, utc(2026, 12, 5, 12, 0)) == utc(2026, 12, 4, 12, 30)
    assert policy.period_at(WEEKLY, utc(2026, 12, 5, 12, 0)) == utc(2026, 12, 4, 14, 0)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("MAILFLOW_DIGEST_DAILY", "0 25 * * *"), ("MAILFLOW_DIGEST_WEEKLY", "weekly")],
)
def test_a_bad_digest_schedule_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        policy_with(tmp_path, monkeypatch, **{variable: value})
    assert caught.value.setting == variable
    assert "not a cron expression" in str(caught.value)


# --------------------------------------------------------------- scheduler

MARCH_ALERT = utc(2026, 3, 20, 10, 0)


@pytest.fixture
def runtime(session: Session, settings: Settings) -> Iterator[Runtime]:
    """The seed's people, two more auditors (Uma daily, Wes weekly), and
    an alert open since 20 March 2026."""
    seed_people(session)
    add_auditors(session)
    spec = parse_alert_spec(alert_spec_data(), source="test")
    issue_alert(session, spec, now=MARCH_ALERT, actor="test", mail_domain="alerts.test")
    session.commit()
    rt = Runtime(settings)
    yield rt
    rt.close()


def periods(session: Session) -> list[tuple[str, datetime]]:
    session.rollback()
    rows = session.execute(
        select(User.email, Digest.period_at)
        .join(User, User.id == Digest.user_id)
        .order_by(Digest.period_at, User.email)
    )
    return [(email, at) for email, at in rows]


@pytest.mark.parametrize(
    ("friday", "monday_before", "monday"),
    [
        (utc(2026, 3, 27, 8, 0), utc(2026, 3, 30, 6, 59), utc(2026, 3, 30, 7, 0)),
        (utc(2026, 10, 23, 7, 0), utc(2026, 10, 26, 7, 59), utc(2026, 10, 26, 8, 0)),
    ],
    ids=["spring", "autumn"],
)
def test_the_scheduler_queues_digests_at_0800_local_across_a_clock_change(
    runtime: Runtime,
    session: Session,
    friday: datetime,
    monday_before: datetime,
    monday: datetime,
) -> None:
    # Thursday's and the week's digests, queued first; then nothing until
    # Friday's.
    assert len(run_pass(runtime, friday - timedelta(minutes=2), DIGESTS)) == 2
    assert run_pass(runtime, friday - timedelta(seconds=1), DIGESTS) == []
    assert run_pass(runtime, friday, DIGESTS) == [
        f"digests: daily digest for Fri {friday.day} {friday:%b} 08:00: 2 auditor(s)"
    ]
    assert run_pass(runtime, monday_before, DIGESTS) == []
    assert run_pass(runtime, monday, DIGESTS) == [
        f"digests: daily digest for Mon {monday.day} {monday:%b} 08:00: 2 auditor(s)",
        f"digests: weekly digest for Mon {monday.day} {monday:%b} 08:00: 1 auditor(s)",
    ]
    assert [row for row in periods(session) if row[1] >= friday] == [
        (OLA, friday),
        (UMA, friday),
        (OLA, monday),
        (UMA, monday),
        ("wes@oversight.example", monday),
    ]


def test_after_downtime_only_the_latest_period_is_queued(
    runtime: Runtime, session: Session
) -> None:
    # Down from before Monday 7 December until Wednesday at 10:00.
    wednesday_10 = utc(2026, 12, 9, 10, 0)
    lines = run_pass(runtime, wednesday_10, DIGESTS)

    assert lines == [
        "digests: daily digest for Wed 9 Dec 08:00: 2 auditor(s)",
        "digests: weekly digest for Mon 7 Dec 08:00: 1 auditor(s)",
    ]
    assert {at for _, at in periods(session)} == {utc(2026, 12, 9, 8, 0), utc(2026, 12, 7, 8, 0)}


def test_an_alert_issued_after_the_morning_waits_for_the_next_morning(
    settings: Settings, session: Session
) -> None:
    seed_people(session)
    spec = parse_alert_spec(alert_spec_data(), source="test")
    issue_alert(session, spec, now=utc(2026, 12, 1, 10, 0), actor="test", mail_domain="x.test")
    session.commit()
    runtime = Runtime(settings)
    try:
        assert run_pass(runtime, utc(2026, 12, 1, 11, 0), DIGESTS) == []
        assert run_pass(runtime, utc(2026, 12, 2, 8, 0), DIGESTS) == [
            "digests: daily digest for Wed 2 Dec 08:00: 1 auditor(s)"
        ]
    finally:
        runtime.close()


def test_a_dry_run_says_what_it_would_queue_and_writes_nothing(
    runtime: Runtime, session: Session
) -> None:
    lines = run_pass(runtime, utc(2026, 12, 1, 9, 0), DIGESTS, dry_run=True)

    assert lines == [
        "digests: daily digest for Tue 1 Dec 08:00: 2 auditor(s)",
        "digests: weekly digest for Mon 30 Nov 08:00: 1 auditor(s)",
    ]
    assert periods(session) == []
    assert session.scalars(select(Job.id).where(Job.kind == SEND_DIGESTS)).all() == []


def test_a_later_period_queued_first_sends_one_digest_not_a_backlog(digests: Digests) -> None:
    """The worker was down over Thursday's and Friday's periods: only
    Friday's digest is sent, numbered 1; Thursday's is skipped."""
    digests.build()
    thursday, friday = utc(2026, 12, 3, 8, 0), utc(2026, 12, 4, 8, 0)
    assert digests.digest_pass(thursday)
    assert digests.digest_pass(friday)

    digests.clock.now = friday + timedelta(minutes=1)
    digests.work()

    got = digests.new_digests()
    assert sorted(who for who, _ in got) == [OLA, UMA]
    assert {str(m["Subject"]) for _, m in got} == {"Digest 1, 4 December 2026"}
    digests.session.rollback()
    states = digests.session.execute(
        select(Digest.period_at, Digest.state, Digest.number).order_by(Digest.period_at)
    ).all()
    assert [tuple(s) for s in states] == [
        (thursday, DigestState.SKIPPED, None),
        (thursday, DigestState.SKIPPED, None),
        (friday, DigestState.SENT, 1),
        (friday, DigestState.SENT, 1),
    ]
