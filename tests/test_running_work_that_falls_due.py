"""Work that falls due with time (expiring requests, reminders, reviews):
one pass runs every task as at a given time, by hand with `mailflow
scheduler --once --at`, and every MAILFLOW_SCHEDULER_SECONDS by the
scheduler; a task that fails does not stop the others."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from mailflow.config import ConfigError, load_settings
from mailflow.core.runtime import Runtime
from mailflow.core.scheduling import SchedulerPass, Task
from mailflow.workers import periodic
from mailflow.workers.scheduler import Scheduler
from tests.support.cli import SECRET_KEY, mailflow, one_error_line
from tests.support.waiting import wait_until

AT = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def noting(seen: list[datetime]) -> Task:
    def task(run: SchedulerPass) -> list[str]:
        seen.append(run.now)
        return [f"did one thing at {run.now:%H:%M}"]

    return task


def failing(run: SchedulerPass) -> list[str]:
    raise RuntimeError("the database went away")


def test_one_pass_runs_every_task_and_one_failing_does_not_stop_the_others(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[datetime] = []
    runtime = Runtime(settings)
    try:
        with caplog.at_level(logging.ERROR):
            done = periodic.run_pass(
                runtime, AT, (("broken", failing), ("reminders", noting(seen)))
            )
    finally:
        runtime.close()

    assert done == ["reminders: did one thing at 09:00"]
    assert seen == [AT]
    assert "periodic task broken failed" in caplog.text


def test_the_scheduler_command_runs_a_pass_as_at_the_time_it_is_given(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[datetime] = []
    monkeypatch.setattr(periodic, "TASKS", (("reminders", noting(seen)),))
    assert mailflow("db", "upgrade", database_url=database_url).exit_code == 0

    result = mailflow("scheduler", "--once", "--at", "2026-12-01T09:00", database_url=database_url)

    assert result.exit_code == 0, result.output
    # Without an offset, the time is in MAILFLOW_TIMEZONE (London: GMT in December).
    assert seen == [AT]
    assert result.stdout == "reminders: did one thing at 09:00\n"


def test_a_pass_with_nothing_due_says_so(database_url: str) -> None:
    assert mailflow("db", "upgrade", database_url=database_url).exit_code == 0

    result = mailflow("scheduler", "--once", database_url=database_url)

    assert (result.exit_code, result.stdout) == (0, "nothing was due\n")


def test_a_time_that_is_not_iso_8601_is_refused(database_url: str) -> None:
    assert mailflow("db", "upgrade", database_url=database_url).exit_code == 0

    result = mailflow("scheduler", "--once", "--at", "tomorrow", database_url=database_url)

    assert result.exit_code == 1
    assert one_error_line(result).startswith("--at: 'tomorrow' is not an ISO 8601 time")


def test_the_scheduler_runs_a_pass_every_interval_until_stopped(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[datetime] = []
    monkeypatch.setattr(periodic, "TASKS", (("reminders", noting(seen)),))
    runtime = Runtime(settings)
    scheduler = Scheduler(runtime, interval=0.2)
    scheduler.start()
    try:
        wait_until(lambda: len(seen) >= 2, timeout=10, what="two passes")
    finally:
        started = time.monotonic()
        scheduler.stop()
        stopped_in = time.monotonic() - started
        runtime.close()
    assert stopped_in < 1


def test_a_reminder_later_than_the_expiry_of_a_request_is_refused() -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(
            {
                "MAILFLOW_SECRET_KEY": SECRET_KEY,
                "MAILFLOW_ACCESS_REQUEST_DAYS": "3",
                "MAILFLOW_ACCESS_REMINDER_DAYS": "3",
            }
        )

    assert "MAILFLOW_ACCESS_REMINDER_DAYS" in str(refused.value)
