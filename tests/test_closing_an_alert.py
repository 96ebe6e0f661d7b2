"""A publisher closes an alert with `mailflow alert close REF --reason`:
the scheduler chases it no more (no reminder, overdue notice, escalation,
follow-up or update chaser), the closing is audited once however often
it is asked for, and answers that still come are recorded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from mailflow.answers.statuses import AnswerStatus
from mailflow.config import Settings
from mailflow.core.models import (
    Alert,
    AlertStatus,
    AlertUpdate,
    AuditEvent,
    Chaser,
    ChaserEmail,
)
from mailflow.core.runtime import Runtime
from tests.support.alert_lifecycle import DEADLINE, ISSUED, answer, chase, issue_at
from tests.support.cli import mailflow_with, one_error_line

REASON = "Superseded by CC-4721"


@pytest.fixture
def alert_id(session: Session) -> int:
    return issue_at(session, ISSUED)


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime(settings)
    yield rt
    rt.close()


def chasing_rows(session: Session) -> tuple[int, int]:
    session.rollback()  # a fresh look: the command wrote in its own transaction
    return (
        session.scalar(select(func.count()).select_from(Chaser)) or 0,
        session.scalar(select(func.count()).select_from(ChaserEmail)) or 0,
    )


def closings(session: Session) -> list[AuditEvent]:
    session.rollback()  # a fresh look: the command wrote in its own transaction
    return list(session.scalars(select(AuditEvent).where(AuditEvent.action == "alert.closed")))


def test_closing_an_alert_stops_all_chasing(
    alert_id: int, runtime: Runtime, settings: Settings, session: Session
) -> None:
    assert chase(runtime, DEADLINE - timedelta(hours=23)) != []
    answer(
        session,
        alert_id,
        "raj@riverside.example",
        "RXA",
        DEADLINE - timedelta(hours=20),
        AnswerStatus.IN_PROGRESS,
    )
    # RXA's update falls due (as the answer would have said) while it is open.
    session.execute(update(AlertStatus).values(update_due_on=date(2026, 12, 3)))
    session.commit()
    before = chasing_rows(session)

    closed = mailflow_with(settings, "alert", "close", "cc-4720", "--reason", REASON)

    assert closed.exit_code == 0, closed.stderr
    assert closed.stdout == f"CC-4720 closed ({REASON}): chasing has stopped\n"
    # The 4-hour reminder, the deadline, Friday's follow-up and the update
    # of RXA all fall due after the closing: none of them is chased.
    for at in (
        DEADLINE - timedelta(hours=3),
        DEADLINE,
        DEADLINE + timedelta(hours=1),
        datetime(2026, 12, 4, 8, 0, tzinfo=DEADLINE.tzinfo),
        datetime(2026, 12, 7, 11, 0, tzinfo=DEADLINE.tzinfo),
    ):
        assert chase(runtime, at) == [], at
    assert chasing_rows(session) == before
    [event] = closings(session)
    assert event.subject == "alert:CC-4720"
    assert event.details == {"reason": REASON}
    assert event.actor.startswith("cli")


def test_closing_twice_changes_nothing_the_second_time(
    alert_id: int, settings: Settings, session: Session
) -> None:
    first = mailflow_with(settings, "alert", "close", "CC-4720", "--reason", REASON)
    closed_at = session.get_one(Alert, alert_id).closed_at

    again = mailflow_with(settings, "alert", "close", "CC-4720", "--reason", "Another reason")

    assert (first.exit_code, again.exit_code) == (0, 0)
    assert again.stdout.startswith("CC-4720 was already closed on ")
    assert again.stdout.endswith(f" ({REASON}): nothing changed\n")
    session.rollback()  # a fresh look: the command wrote in its own transaction
    alert = session.get_one(Alert, alert_id)
    assert (alert.closed_at, alert.closed_reason) == (closed_at, REASON)
    assert len(closings(session)) == 1


def test_closing_an_unknown_alert_is_a_clear_error(alert_id: int, settings: Settings) -> None:
    result = mailflow_with(settings, "alert", "close", "CC-9999")

    assert result.exit_code == 1
    assert one_error_line(result) == "no alert CC-9999 (nothing was written)"


def test_a_late_answer_to_a_closed_alert_is_still_recorded(
    alert_id: int, settings: Settings, session: Session
) -> None:
    # Closing ends the chasing, not the record: an answer that comes
    # afterwards is worth having, and is shown as after the deadline.
    mailflow_with(settings, "alert", "close", "CC-4720")
    answer(session, alert_id, "bea@brookfield.example", "RXB", DEADLINE + timedelta(days=2))

    status = mailflow_with(settings, "alert", "status", "CC-4720", "--json")

    lines = {line["organisation"]: line for line in json.loads(status.stdout)["organisations"]}
    assert lines["RXB"]["status"] == "complete"
    assert lines["RXB"]["within_deadline"] is False


def test_show_status_and_list_say_the_alert_is_closed(
    alert_id: int, settings: Settings, session: Session
) -> None:
    before = mailflow_with(settings, "alert", "list")
    assert "CC-4720    HIGH     open " in before.stdout

    mailflow_with(settings, "alert", "close", "CC-4720", "--reason", REASON)

    shown = mailflow_with(settings, "alert", "show", "CC-4720")
    status = mailflow_with(settings, "alert", "status", "CC-4720")
    listed = mailflow_with(settings, "alert", "list")
    assert any(
        line.startswith("closed    ") and line.endswith(f": {REASON}")
        for line in shown.stdout.splitlines()
    ), shown.stdout
    assert "\nclosed    " in status.stdout
    assert "CC-4720    HIGH     closed " in listed.stdout
    data = json.loads(mailflow_with(settings, "alert", "show", "CC-4720", "--json").stdout)
    assert (data["round"], data["closed_reason"]) == (1, REASON)
    assert data["closed_at"] is not None
    [listed_data] = json.loads(mailflow_with(settings, "alert", "list", "--json").stdout)
    assert listed_data["state"] == "closed"


def test_an_update_to_a_closed_alert_is_refused(
    alert_id: int, settings: Settings, session: Session, tmp_path: Path
) -> None:
    file = tmp_path / "update.toml"
    file.write_text('summary = "Version 9.4.3 fixes a second flaw."\n', encoding="utf-8")
    mailflow_with(settings, "alert", "close", "CC-4720")

    result = mailflow_with(settings, "alert", "update", "CC-4720", str(file))

    assert result.exit_code == 1
    error = one_error_line(result)
    assert error.startswith("alert CC-4720: it was closed at ")
    assert error.endswith(" and takes no updates (nothing was written)")
    session.rollback()  # a fresh look: the command wrote in its own transaction
    assert session.scalar(select(func.count()).select_from(AlertUpdate)) == 0
    assert chasing_rows(session) == (0, 0)
