"""An auditor reading an alert's figures and its organisations: a data set
built by hand so that every number is known, read now and as at an
earlier time, through the figures function and `mailflow report`."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from click.testing import Result
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.alerts.alert_files import parse_update_spec
from mailflow.alerts.updates import publish_update
from mailflow.answers.answer_values import AnswerValue
from mailflow.answers.recording import record_answers
from mailflow.answers.statuses import AnswerStatus
from mailflow.config import Settings
from mailflow.core.models import User
from mailflow.reports.counting import nearest_rank
from mailflow.reports.figures import RowFilter, Sort, alert_figures, alert_rows
from tests.support.cli import mailflow_with, one_error_line
from tests.support.reporting import (
    EARLIER,
    INJECTION,
    LATER,
    LONDON,
    SATURDAY,
    build,
    hours,
)


@pytest.fixture
def alert_id(session: Session, settings: Settings) -> int:
    return build(session, settings)


def test_every_figure_is_counted_from_the_answers_as_they_stood(
    session: Session, alert_id: int
) -> None:
    figures = alert_figures(session, alert_id, as_at=LATER, zone=LONDON)

    assert figures.in_scope == 9
    assert figures.answered == 6
    assert figures.answered_within_deadline == 5
    assert (figures.in_progress, figures.complete) == (1, 3)
    assert (figures.not_applicable, figures.unable) == (1, 1)
    assert (figures.no_answer, figures.unreachable) == (2, 1)
    # First answers at 2, 4, 10, 20, 30 and 60 hours: ranks 3 and 6.
    assert figures.median_to_first_answer == timedelta(hours=10)
    assert figures.p90_to_first_answer == timedelta(hours=60)


def test_as_at_an_earlier_time_leaves_out_the_answers_recorded_after_it(
    session: Session, alert_id: int
) -> None:
    figures = alert_figures(session, alert_id, as_at=EARLIER, zone=LONDON)

    assert (figures.in_scope, figures.answered, figures.answered_within_deadline) == (9, 4, 4)
    # RXE's later "complete" had not been given yet.
    assert (figures.in_progress, figures.complete, figures.unable) == (2, 1, 1)
    assert (figures.not_applicable, figures.no_answer, figures.unreachable) == (0, 4, 1)
    # First answers at 2, 4, 10 and 20 hours: ranks 2 and 4.
    assert figures.median_to_first_answer == timedelta(hours=4)
    assert figures.p90_to_first_answer == timedelta(hours=20)


@pytest.mark.parametrize(
    ("as_at", "overdue"),
    [
        # RXB's update is due on Friday 4 December, RXC's review on the 16th.
        (datetime(2026, 12, 4, 23, 0, tzinfo=UTC), 0),
        (datetime(2026, 12, 5, 12, 0, tzinfo=UTC), 1),
        (datetime(2026, 12, 17, 9, 0, tzinfo=UTC), 2),
    ],
)
def test_updates_count_as_overdue_once_the_day_they_were_due_has_passed(
    session: Session, alert_id: int, as_at: datetime, overdue: int
) -> None:
    figures = alert_figures(session, alert_id, as_at=as_at, zone=LONDON)

    assert figures.overdue_updates == overdue


def test_each_organisation_in_scope_is_one_row_with_its_answer_then(
    session: Session, alert_id: int
) -> None:
    rows = {row[0]: row for row in alert_rows(session, alert_id, as_at=SATURDAY, zone=LONDON)}

    assert sorted(rows) == ["RXA", "RXB", "RXC", "RXD", "RXE", "RXF", "RXG", "RXH", "RXJ"]
    code, name, type_, parent, status, note, reason, mitigations, *rest = rows["RXC"]
    assert (code, name, type_, parent) == (
        "RXC",
        "Castleton Mental Health NHS Foundation Trust",
        "trust",
        None,
    )
    assert (status, note, reason, mitigations) == (
        "unable",
        None,
        "Vendor has no fix",
        "Port closed",
    )
    by, at, first_at, due, overdue, bounced = rest
    assert (by, at, first_at) == ("li@itservices.example", hours(10), hours(10))
    assert (due, overdue, bounced) == (date(2026, 12, 16), False, False)
    assert rows["RXE"][4:] == (
        "complete",
        None,
        None,
        None,
        "eve@elmfield.example",
        hours(70),
        hours(20),
        None,
        False,
        False,
    )
    # After the deadline: those without an answer are overdue too.
    flags = {code: (row[4], row[-2], row[-1]) for code, row in rows.items()}
    assert flags["RXB"] == ("in_progress", True, False)
    assert flags["RXG"] == (None, True, True)
    assert flags["RXH"] == (None, True, False)


def codes(session: Session, alert_id: int, **kwargs: Any) -> list[str]:
    return [row.code for row in alert_rows(session, alert_id, as_at=LATER, zone=LONDON, **kwargs)]


def test_rows_filter_by_type_and_parent_and_sort_by_any_column_nulls_last(
    session: Session, alert_id: int
) -> None:
    assert codes(session, alert_id, only=RowFilter(organisation_type="practice")) == ["RXJ"]
    assert codes(session, alert_id, only=RowFilter(parent_code="RXA")) == ["RXE", "RXJ"]
    by_answer = codes(session, alert_id, sort=Sort("answered_at", descending=True))
    # Newest answer first (RXE at 70 hours); the unanswered last, by code.
    assert by_answer == ["RXE", "RXD", "RXF", "RXC", "RXB", "RXA", "RXG", "RXH", "RXJ"]
    assert codes(session, alert_id, sort=Sort("code"), limit=2, offset=3) == ["RXD", "RXE"]
    with pytest.raises(ValueError, match="cannot sort by 'note'"):
        Sort("note")


def test_the_percentile_rule_is_nearest_rank() -> None:
    assert [nearest_rank(0.5, n) for n in (1, 2, 3, 4, 6)] == [1, 1, 2, 2, 3]
    assert [nearest_rank(0.9, n) for n in (1, 4, 6, 10, 11)] == [1, 4, 6, 9, 10]


def report(settings: Settings, *args: str) -> Result:
    result = mailflow_with(settings, "report", *args)
    assert result.exit_code == 0, result.output
    return result


def test_the_table_shows_the_figures_then_every_organisation(
    settings: Settings, alert_id: int
) -> None:
    out = report(settings, "CC-4720", "--as-at", SATURDAY.isoformat()).stdout

    assert "in scope     9\n" in out
    assert "answered     6 (67%)\n" in out
    assert "in time      5 (56%)\n" in out
    assert (
        "statuses     in progress 1, complete 3, not applicable 1, unable 1, no answer 2\n"
    ) in out
    assert "unreachable  1 " in out
    assert "overdue      1 update(s)" in out
    assert "first answer median 10 h, 90th percentile 2 d 12 h" in out
    assert [line.split()[:2] for line in out.splitlines() if line.startswith("RX")] == [
        ["RXA", "complete"],
        ["RXB", "in_progress"],
        ["RXC", "unable"],
        ["RXD", "not_applicable"],
        ["RXE", "complete"],
        ["RXF", "complete"],
        ["RXG", "unreachable"],
        ["RXH", "no"],
        ["RXJ", "no"],
    ]


def test_json_carries_the_figures_and_the_rows_filtered(settings: Settings, alert_id: int) -> None:
    out = report(
        settings, "--format", "json", "--as-at", "2026-12-02T15:00", "--status", "in-progress"
    ).stdout

    data = json.loads(out)
    [alert] = data["alerts"]
    assert data["as_at"] == "2026-12-02T15:00:00+00:00"
    assert alert["figures"]["reference"] == "CC-4720"
    assert (alert["figures"]["answered"], alert["figures"]["in_progress"]) == (4, 2)
    assert alert["figures"]["median_to_first_answer"] == 4 * 3600
    assert [(r["code"], r["status"], r["answered_at"]) for r in alert["rows"]] == [
        ("RXB", "in_progress", "2026-12-01T19:00:00+00:00"),
        ("RXE", "in_progress", "2026-12-02T11:00:00+00:00"),
    ]


def test_csv_has_a_header_iso_times_and_no_cell_a_spreadsheet_would_run(
    settings: Settings, alert_id: int
) -> None:
    out = report(
        settings, "CC-4720", "--format", "csv", "--as-at", SATURDAY.isoformat(), "--overdue"
    ).stdout

    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0][:3] == ["alert", "code", "name"]
    assert [row[1] for row in rows[1:]] == ["RXB", "RXG", "RXH", "RXJ"]
    everything = report(settings, "CC-4720", "--format", "csv", "--as-at", SATURDAY.isoformat())
    rxa = next(row for row in csv.reader(io.StringIO(everything.stdout)) if row[1] == "RXA")
    assert rxa[0] == "CC-4720"
    assert rxa[6] == "'" + INJECTION
    assert rxa[10] == "2026-12-01T17:00:00+00:00"


def test_an_organisations_history_lists_every_answer_oldest_first(
    settings: Settings, alert_id: int
) -> None:
    out = report(settings, "cc-4720", "--history", "rxe", "--format", "json").stdout

    assert [(a["recorded_at"], a["answered_by"], a["status"]) for a in json.loads(out)] == [
        ("2026-12-02T11:00:00+00:00", "eve@elmfield.example", "in_progress"),
        ("2026-12-04T13:00:00+00:00", "eve@elmfield.example", "complete"),
    ]
    table = report(settings, "CC-4720", "--history", "RXC").stdout
    assert "unable" in table and "by li@itservices.example" in table
    assert "mitigations: Port closed" in table


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("CC-9999",), "no alert CC-9999"),
        (("CC-4720", "--status", "done"), "--status: unknown status 'done'"),
        (("CC-4720", "--as-at", "friday"), "--as-at: 'friday' is not an ISO 8601 time"),
        (("CC-4720", "--as-at", "0001-01-01T00:30+05:00"), "--as-at: choose a time between"),
        (("CC-4720", "--history", "ZZZ"), "no organisation ZZZ"),
    ],
)
def test_a_wrong_name_is_one_clear_line(
    settings: Settings, alert_id: int, args: tuple[str, ...], error: str
) -> None:
    result = mailflow_with(settings, "report", *args)

    assert result.exit_code == 1
    assert one_error_line(result).startswith(error)


def test_an_update_asking_again_starts_the_count_afresh_from_its_publication(
    session: Session, settings: Settings, alert_id: int
) -> None:
    asking_again = {"summary": "9.4.2 is not enough.", "answer_again": True}
    spec = parse_update_spec(asking_again, source="test")
    publish_update(session, "CC-4720", spec, now=hours(90), actor="test")
    user_id = session.scalars(select(User.id).where(User.email == "fay@fenwick.example")).one()
    record_answers(
        session,
        settings,
        user_id=user_id,
        alert_id=alert_id,
        answers=[AnswerValue("RXF", AnswerStatus.IN_PROGRESS)],
        via="link",
        now=hours(93),
    )
    session.commit()

    before = alert_figures(session, alert_id, as_at=hours(89), zone=LONDON)
    after = alert_figures(session, alert_id, as_at=hours(95), zone=LONDON)

    assert (before.answered, before.complete) == (6, 3)
    assert (after.answered, after.in_progress, after.complete) == (1, 1, 0)
    # Timed from the update that asked again, not from the issue.
    assert after.median_to_first_answer == timedelta(hours=3)
