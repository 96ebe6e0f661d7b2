"""What a digest says changed since the auditor's last one, from the two
snapshots alone; and how it writes its figures (percentages, times to
first answer as a person says them)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from mailflow.reports.digest_changes import Change, changes, dumps, loads, snapshot_of
from mailflow.reports.figures import AlertFigures
from mailflow.reports.wording import human_duration, percent

ISSUED = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
FIGURES = AlertFigures(
    reference="CC-4720",
    title="Remote code execution",
    severity="high",
    issued_at=ISSUED,
    deadline_at=ISSUED + timedelta(hours=48),
    closed_at=None,
    as_at=ISSUED + timedelta(hours=24),
    in_scope=9,
    answered=4,
    answered_within_deadline=4,
    in_progress=2,
    complete=1,
    not_applicable=0,
    unable=1,
    no_answer=4,
    unreachable=1,
    overdue_updates=0,
    median_to_first_answer=timedelta(hours=4),
    p90_to_first_answer=timedelta(hours=20),
    round_started_at=ISSUED,
    last_answer_at=ISSUED + timedelta(hours=20),
)


def test_the_same_figures_a_day_later_are_no_change() -> None:
    later = replace(FIGURES, as_at=FIGURES.as_at + timedelta(hours=20))

    assert changes(snapshot_of([FIGURES]), snapshot_of([later])) == []


def test_answers_that_leave_every_count_as_it_was_are_still_a_change() -> None:
    # One organisation went from complete to in progress and another the
    # other way; or an unable one gave a new reason.
    swapped = replace(FIGURES, last_answer_at=FIGURES.as_at + timedelta(hours=3))

    assert [str(c) for c in changes(snapshot_of([FIGURES]), snapshot_of([swapped]))] == [
        "CC-4720: new answers given, the counts as they were (see the report page)"
    ]


def test_answers_moving_statuses_and_the_deadline_passing_are_each_said() -> None:
    after = replace(
        FIGURES,
        as_at=FIGURES.deadline_at + timedelta(hours=1),
        answered=6,
        in_progress=1,
        complete=3,
        not_applicable=1,
        no_answer=2,
        unreachable=2,
        overdue_updates=1,
    )

    assert [str(c) for c in changes(snapshot_of([FIGURES]), snapshot_of([after]))] == [
        "CC-4720: answered 4 -> 6 of 9",
        "CC-4720: statuses moved: in progress 2 -> 1, complete 1 -> 3, not applicable 0 -> 1,"
        " no answer 4 -> 2",
        "CC-4720: 4 more organisations overdue (no answer since the deadline), 4 in all",
        "CC-4720: 1 more organisation unreachable (every email bounced), 2 in all",
        "CC-4720: 1 more organisation with an update overdue, 1 in all",
    ]


def test_a_new_alert_comes_first_and_a_closed_one_last() -> None:
    new = replace(FIGURES, reference="CC-4730", title="Default password", severity="critical")
    gone = replace(FIGURES, reference="CC-4710")

    found = changes(snapshot_of([FIGURES, gone]), snapshot_of([FIGURES, new]))

    assert found == [
        Change("CC-4730", "new alert, critical: Default password"),
        Change("CC-4710", "closed"),
    ]


def test_an_update_asking_again_is_said_with_the_counts_starting_afresh() -> None:
    again = replace(
        FIGURES,
        deadline_at=FIGURES.deadline_at + timedelta(days=3),
        answered=0,
        answered_within_deadline=0,
        in_progress=0,
        complete=0,
        unable=0,
        no_answer=8,
    )

    said = [c.what for c in changes(snapshot_of([FIGURES]), snapshot_of([again]))]

    assert said[:2] == ["answers asked for again, with a new deadline", "answered 4 -> 0 of 9"]


def test_a_snapshot_is_stored_as_json_and_read_back() -> None:
    snapshot = snapshot_of([FIGURES])

    assert loads(dumps(snapshot)) == snapshot
    assert loads(None) is None
    assert loads("not json") is None
    assert loads("[1, 2]") is None


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (None, "none yet"),
        (timedelta(minutes=40, seconds=59), "40 min"),
        (timedelta(hours=5, minutes=59), "5 h"),
        (timedelta(hours=24), "1 d"),
        (timedelta(hours=27, minutes=10), "1 d 3 h"),
        (timedelta(hours=60), "2 d 12 h"),
    ],
)
def test_times_to_first_answer_read_as_a_person_says_them(
    value: timedelta | None, said: str
) -> None:
    assert human_duration(value) == said


@pytest.mark.parametrize(
    ("part", "whole", "said"),
    [
        (6, 9, "67%"),
        (5, 9, "56%"),
        (1, 3, "33%"),
        (0, 9, "0%"),
        (9, 9, "100%"),
        (0, 0, "-"),
        # Never all, or none, while it is not.
        (199, 200, ">99%"),
        (1, 200, "<1%"),
        (197, 200, "98%"),
        (3, 200, "2%"),
    ],
)
def test_percentages_are_of_the_organisations_in_scope_to_a_whole_percent(
    part: int, whole: int, said: str
) -> None:
    assert percent(part, whole) == said
