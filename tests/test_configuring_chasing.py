"""The chasing policy is configured like every other setting, and a bad
value stops mailflow with the setting named and an example of a good one."""

from __future__ import annotations

from datetime import UTC, datetime, time
from pathlib import Path

import pytest

from mailflow.config import ConfigError, load_settings
from mailflow.core.models import Severity
from mailflow.deadlines.policy import ChasePolicy

SECRET = "an-operator-secret-0123456789-abcdefghijklmnop"


@pytest.fixture(autouse=True)
def away_from_project_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No config/mailflow.toml from the working directory can leak in."""
    monkeypatch.chdir(tmp_path)


def settings_with(**environ: str) -> ChasePolicy:
    env = {"MAILFLOW_SECRET_KEY": SECRET, **environ}
    return ChasePolicy.of(load_settings(environ=env))


def test_the_defaults_are_24_and_4_hours_on_weekdays_from_eight_to_six() -> None:
    policy = settings_with()
    assert policy.reminder_hours == {Severity.CRITICAL: (24, 4), Severity.HIGH: (24, 4)}
    assert (policy.working_hours.start, policy.working_hours.end) == (time(8), time(18))
    assert policy.working_days.days == frozenset(range(5))
    assert (policy.update_days, policy.review_days) == (3, 14)


def test_every_chasing_setting_can_be_changed() -> None:
    policy = settings_with(
        MAILFLOW_REMINDER_HOURS_CRITICAL="4, 36,12",
        MAILFLOW_REMINDER_HOURS_HIGH="",
        MAILFLOW_WORKING_HOURS="07:30-19:00",
        MAILFLOW_WORKING_DAYS="mon-wed,fri,sun",
        MAILFLOW_UPDATE_DAYS="5",
        MAILFLOW_UNABLE_REVIEW_DAYS="30",
        MAILFLOW_FOLLOW_UP_SCHEDULE="30  9 * *  tue",
    )
    assert policy.reminder_hours == {Severity.CRITICAL: (36, 12, 4), Severity.HIGH: ()}
    assert str(policy.working_hours) == "07:30-19:00"
    assert str(policy.working_days) == "mon,tue,wed,fri,sun"
    assert policy.follow_up_schedule == "30 9 * * tue"
    assert (policy.update_days, policy.review_days) == (5, 30)
    # No reminder points for high alerts: none is ever due.
    deadline = datetime(2026, 12, 2, 15, 0, tzinfo=UTC)
    assert (
        policy.reminder_step(Severity.HIGH, 1, deadline, datetime(2026, 12, 2, 14, 0, tzinfo=UTC))
        is None
    )


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("MAILFLOW_WORKING_HOURS", "18:00-08:00", "the end must come after the start"),
        ("MAILFLOW_WORKING_HOURS", "8-18", "not a time of day like 08:00"),
        ("MAILFLOW_WORKING_HOURS", "08:00", "expected START-END"),
        ("MAILFLOW_WORKING_DAYS", "fri-mon", "a range runs forward"),
        ("MAILFLOW_WORKING_DAYS", "weekdays", "is not a day"),
        ("MAILFLOW_WORKING_DAYS", ",", "name at least one day"),
        ("MAILFLOW_REMINDER_HOURS_HIGH", "24,0", "is not a whole number of hours above 0"),
        ("MAILFLOW_REMINDER_HOURS_CRITICAL", "a day", "is not a whole number of hours"),
        ("MAILFLOW_FOLLOW_UP_SCHEDULE", "0 25 * * *", "not a cron expression"),
        ("MAILFLOW_FOLLOW_UP_SCHEDULE", "daily", "not a cron expression"),
        ("MAILFLOW_UPDATE_DAYS", "0", ""),
        ("MAILFLOW_SCHEDULER_SECONDS", "-1", ""),
    ],
)
def test_a_bad_chasing_setting_is_refused_by_name(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_with(**{variable: value})
    assert caught.value.setting == variable
    assert message in caught.value.problem
