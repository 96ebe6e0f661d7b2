"""`mailflow alert status` shows which organisations are overdue: those
the scheduler marked at the deadline of the alert's current round that
have still not answered.  An answer, however late, takes the mark away;
an update that asks to answer again starts a round with no one overdue."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from mailflow.alerts.alert_files import parse_update_spec
from mailflow.alerts.updates import publish_update
from mailflow.config import Settings
from mailflow.core.runtime import Runtime
from tests.support.alert_lifecycle import DEADLINE, ISSUED, answer, chase, issue_at
from tests.support.cli import mailflow_with


@pytest.fixture
def alert_id(session: Session) -> int:
    return issue_at(session, ISSUED)


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime(settings)
    yield rt
    rt.close()


def status_lines(settings: Settings) -> dict[str, str]:
    """Each organisation's line of `alert status`, by code."""
    result = mailflow_with(settings, "alert", "status", "CC-4720")
    assert result.exit_code == 0, result.stderr
    return {
        line.split()[0]: line.split(None, 1)[1]
        for line in result.stdout.split("\n\n", 1)[1].splitlines()
        if line[:1].strip()
    }


def status_data(settings: Settings) -> dict[str, object]:
    result = mailflow_with(settings, "alert", "status", "CC-4720", "--json")
    data: dict[str, object] = json.loads(result.stdout)
    return data


def overdue_in_json(settings: Settings) -> set[str]:
    lines = status_data(settings)["organisations"]
    assert isinstance(lines, list)
    return {line["organisation"] for line in lines if line["overdue"]}


def test_organisations_without_an_answer_are_overdue_after_the_deadline_pass(
    alert_id: int, runtime: Runtime, settings: Settings, session: Session
) -> None:
    answer(session, alert_id, "raj@riverside.example", "RXA", DEADLINE - timedelta(hours=5))
    chase(runtime, DEADLINE - timedelta(minutes=1))
    assert status_lines(settings)["RXB"] == "no answer"
    assert overdue_in_json(settings) == set()

    chase(runtime, DEADLINE)

    lines = status_lines(settings)
    assert (lines["RXB"], lines["RXC"]) == ("overdue", "overdue")
    assert lines["RXA"].startswith("Complete")
    header = mailflow_with(settings, "alert", "status", "CC-4720").stdout
    assert "\noverdue   2 (no answer by the deadline)\n" in header
    assert overdue_in_json(settings) == {"RXB", "RXC"}
    assert status_data(settings)["overdue"] == 2

    # A late answer takes the mark away; the answer says it was late.
    answer(session, alert_id, "bea@brookfield.example", "RXB", DEADLINE + timedelta(hours=2))
    assert status_lines(settings)["RXB"].endswith("(after the deadline)")
    assert overdue_in_json(settings) == {"RXC"}


def test_a_new_round_starts_with_no_one_overdue_until_its_own_deadline(
    alert_id: int, runtime: Runtime, settings: Settings, session: Session
) -> None:
    chase(runtime, DEADLINE)
    assert overdue_in_json(settings) == {"RXA", "RXB", "RXC"}
    monday = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    spec = parse_update_spec({"summary": "Check again.", "answer_again": True}, source="test")
    publish_update(session, "CC-4720", spec, now=monday, actor="test")
    session.commit()

    assert overdue_in_json(settings) == set()
    header = mailflow_with(settings, "alert", "status", "CC-4720").stdout
    assert "\nround     2 (answers asked for again by an update)\n" in header
    assert status_data(settings)["round"] == 2

    chase(runtime, monday + timedelta(hours=48))
    assert overdue_in_json(settings) == {"RXA", "RXB", "RXC"}
