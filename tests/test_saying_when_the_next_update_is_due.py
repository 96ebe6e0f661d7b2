"""An answer that is not final owes an update: in progress, by its next
update date (the date the person asks for, else its expected date, else 3
days on); unable, by its review date (14 days on).  The person says it in
a reply or on the confirmation page; the receipt and `alert status` show
it; a final answer clears it."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailflow.answers.answer_values import AnswerValue
from mailflow.answers.reply_form import ReplyNotUnderstood, build_reply_form, parse_reply
from mailflow.answers.statuses import AnswerStatus
from mailflow.core.errors import InvalidInput

TODAY = date(2026, 11, 26)
THREE = ["RXA", "RXB", "RXC"]


def read(text: str, held: list[str] | None = None) -> list[AnswerValue]:
    return parse_reply(text, held=THREE if held is None else held, today=TODAY)


def problems(text: str, held: list[str] | None = None) -> list[tuple[int, str]]:
    with pytest.raises(ReplyNotUnderstood) as caught:
        read(text, held)
    return [(p.line, p.problem) for p in caught.value.problems]


# ------------------------------------------------------------ in a reply


@pytest.mark.parametrize(
    ("written", "next_update", "expected", "note"),
    [
        ("next update 12 December", date(2026, 12, 12), None, None),
        ("next update on 12/12/2026", date(2026, 12, 12), None, None),
        ("update by 12 Dec", date(2026, 12, 12), None, None),
        ("Next update due: 2026-12-12.", date(2026, 12, 12), None, None),
        (
            "patching this weekend; expected 14 December; next update 12 December",
            date(2026, 12, 12),
            date(2026, 12, 14),
            "patching this weekend; expected 14 December",
        ),
        (
            "next update 1 December, expected 14 December",
            date(2026, 12, 1),
            date(2026, 12, 14),
            "expected 14 December",
        ),
        # Only "next update", or "update" at the start of a clause, asks
        # for a date: this is the expected date, as before.
        ("we will apply the update by 12 Dec", None, date(2026, 12, 12), None),
        ("update to follow", None, None, "update to follow"),
    ],
)
def test_an_in_progress_reply_can_say_when_the_next_update_is_due(
    written: str, next_update: date | None, expected: date | None, note: str | None
) -> None:
    [answer] = read(f"RXA: in progress: {written}", ["RXA"])

    assert answer.status is AnswerStatus.IN_PROGRESS
    assert (answer.next_update_on, answer.expected_on) == (next_update, expected)
    if note is not None or next_update is not None:
        assert answer.note == note


def test_the_next_update_on_a_line_of_its_own_belongs_to_the_answer_above() -> None:
    answers = read("RXA: in progress: patching tonight\nNext update: 2 December\nRXB: complete")

    by_code = {a.organisation: a for a in answers}
    assert by_code["RXA"].next_update_on == date(2026, 12, 2)
    assert by_code["RXA"].note == "patching tonight"
    assert by_code["RXB"].next_update_on is None


def test_a_sentence_and_all_organisations_can_carry_the_next_update() -> None:
    [one] = read("We are investigating, next update 12 December", ["RXA"])
    [bare] = read("In progress next update 12 December", ["RXA"])
    several = read("ALL: in progress, next update 3 December")

    assert (one.status, one.next_update_on) == (AnswerStatus.IN_PROGRESS, date(2026, 12, 12))
    assert one.note is None  # the sentence only says the status
    assert (bare.status, bare.next_update_on, bare.note) == (
        AnswerStatus.IN_PROGRESS,
        date(2026, 12, 12),
        None,
    )
    assert {a.next_update_on for a in several} == {date(2026, 12, 3)}
    assert len(several) == 3


def test_an_unable_reply_can_say_when_it_is_reviewed() -> None:
    [answer] = read(
        "RXC: unable: the supplier has no fix yet; mitigations: service offline; review 1 March",
        ["RXC"],
    )

    assert answer.reason == "the supplier has no fix yet"
    assert answer.mitigations == "service offline"
    assert answer.next_update_on == date(2027, 3, 1)


@pytest.mark.parametrize(
    ("written", "problem"),
    [
        ("next update Friday", "does not give a date: write it as a date"),
        ("next update 31 April", "'31 April' is not a real date"),
        ("next update 12/12/2025", "has passed: give today or a later date"),
        ("next update 1 January 2029", "is more than a year ahead"),
        ("next update 3 December; next update 4 December", "give one next update date"),
    ],
)
def test_a_next_update_that_cannot_be_read_is_named_by_its_line(written: str, problem: str) -> None:
    found = problems(f"RXA: complete\nRXB: in progress: {written}")

    assert len(found) == 1 and found[0][0] == 2
    assert problem in found[0][1]


def test_the_reply_form_shows_how_to_give_the_date_and_reads_it_back() -> None:
    form = build_reply_form([("RXA", "Riverside")])
    [in_progress] = [line for line in form.status_lines if line.startswith("in progress")]
    example = in_progress.split("optional: ")[1].rstrip(")")

    [answer] = read(f"RXA: in progress: {example}", ["RXA"])

    assert answer.next_update_on == date(2026, 12, 2)
    assert answer.expected_on == date(2026, 12, 5)
    assert any("review" in line for line in form.status_lines)
