"""The reply form: a person answers an alert by replying with one line per
organisation; what the alert email shows must read back, and anything
meant as an answer that cannot be read exactly is an error naming its
line, never a guess."""

from __future__ import annotations

import contextlib
import re
import time
from datetime import date

import pytest

from mailflow.answers.answer_values import AnswerValue
from mailflow.answers.reply_form import (
    ReplyNotUnderstood,
    build_reply_form,
    find_date,
    parse_reply,
)
from mailflow.answers.statuses import AnswerStatus

TODAY = date(2026, 11, 26)
THREE = ["RXA", "RXB", "RXC"]


def read(text: str, held: list[str] | None = None, today: date = TODAY) -> list[AnswerValue]:
    return parse_reply(text, held=THREE if held is None else held, today=today)


def statuses(answers: list[AnswerValue]) -> dict[str, AnswerStatus]:
    return {a.organisation: a.status for a in answers}


def problems(
    text: str, held: list[str] | None = None, today: date = TODAY
) -> list[tuple[int, str]]:
    with pytest.raises(ReplyNotUnderstood) as caught:
        read(text, held, today)
    found = [(p.line, p.problem) for p in caught.value.problems]
    assert str(caught.value) == "; ".join(f"line {n}: {problem}" for n, problem in found)
    return found


# ------------------------------------------------------------ round trip


def test_every_example_for_one_organisation_reads_back() -> None:
    form = build_reply_form([("RXA", "Riverside Acute NHS Trust")])

    assert form.single is True
    assert [(o.code, o.name) for o in form.organisations] == [("RXA", "Riverside Acute NHS Trust")]
    for line in form.example_lines:
        # "(or just: complete)" offers the bare word as an alternative.
        offered = re.sub(r"^\(or just: (.*)\)$", r"\1", line)
        answers = read(offered, ["RXA"])
        assert [(a.organisation, a.status) for a in answers] == [("RXA", AnswerStatus.COMPLETE)]


def test_every_example_for_several_organisations_reads_back() -> None:
    orgs = [("RXA", "Riverside"), ("RXB", "Brookfield"), ("RXC", "Castleton"), ("QAB", "Moor")]
    held = [code for code, _ in orgs]

    form = build_reply_form(orgs)

    assert form.single is False
    assert len(form.example_lines) == 4
    for line in form.example_lines[:-1]:
        code = line.split(":")[0]
        assert statuses(read(line, held)) == {code: AnswerStatus.COMPLETE}
    everyone = read(form.example_lines[-1], held)
    assert statuses(everyone) == dict.fromkeys(held, AnswerStatus.NOT_APPLICABLE)
    assert {a.reason for a in everyone} == {"we do not run the product"}


@pytest.mark.parametrize(
    ("shown", "status"),
    [
        (0, AnswerStatus.COMPLETE),
        (1, AnswerStatus.IN_PROGRESS),
        (2, AnswerStatus.NOT_APPLICABLE),
        (3, AnswerStatus.UNABLE),
    ],
)
def test_every_status_the_form_lists_reads_back(shown: int, status: AnswerStatus) -> None:
    form = build_reply_form([("RXA", "Riverside"), ("RXB", "Brookfield")])
    written = form.status_lines[shown].split("  ")[0]  # the guidance after two spaces is not typed

    answers = read(f"RXB: {written}", ["RXA", "RXB"])

    assert statuses(answers) == {"RXB": status}


# -------------------------------------------------------- answers as written


def test_one_organisation_complete() -> None:
    answers = read("RXA: complete")

    assert answers == [AnswerValue("RXA", AnswerStatus.COMPLETE, line=1)]


def test_several_organisations_in_progress_with_an_expected_date() -> None:
    answers = read("RXA, RXB: in progress: patching this weekend, expected 5 December")

    assert statuses(answers) == {"RXA": AnswerStatus.IN_PROGRESS, "RXB": AnswerStatus.IN_PROGRESS}
    assert {a.expected_on for a in answers} == {date(2026, 12, 5)}
    assert {a.note for a in answers} == {"patching this weekend, expected 5 December"}


def test_a_date_without_a_year_that_has_passed_means_next_year() -> None:
    answers = read(
        "RXA, RXB: in progress: patching this weekend, expected 5 December",
        today=date(2026, 12, 10),
    )

    assert {a.expected_on for a in answers} == {date(2027, 12, 5)}


def test_all_means_every_organisation_held() -> None:
    answers = read("ALL: not applicable: we do not run the product")

    assert [a.organisation for a in answers] == THREE
    assert {(a.status, a.reason) for a in answers} == {
        (AnswerStatus.NOT_APPLICABLE, "we do not run the product")
    }


def test_unable_with_a_reason_and_mitigations() -> None:
    answers = read("RXC: unable: the supplier has no fix yet; mitigations: service taken offline")

    assert len(answers) == 1
    assert answers[0].status is AnswerStatus.UNABLE
    assert answers[0].reason == "the supplier has no fix yet"
    assert answers[0].mitigations == "service taken offline"


def test_unable_without_mitigations_is_refused() -> None:
    found = problems("RXC: unable: the supplier has no fix yet")

    assert len(found) == 1
    assert found[0][0] == 1
    assert "mitigations" in found[0][1]


def test_not_applicable_without_a_reason_is_refused() -> None:
    found = problems("RXA: complete\nRXB: not applicable")

    assert len(found) == 1
    assert found[0][0] == 2
    assert "say why it does not apply" in found[0][1]


def test_a_bare_status_is_enough_for_one_organisation() -> None:
    answers = read("Complete", ["RXA"])

    assert statuses(answers) == {"RXA": AnswerStatus.COMPLETE}


def test_a_bare_status_is_refused_for_several_organisations() -> None:
    found = problems("complete")

    assert found[0][0] == 1
    assert "several organisations" in found[0][1]


def test_case_bullets_bold_blank_lines_and_non_breaking_spaces_do_not_matter() -> None:
    text = "\n".join(
        [
            "- rxa: complete",
            "",
            "* **RXB: in progress**",
            "   ",
            "1. RXC:\u00a0not\u00a0applicable: no such system",
        ]
    )

    answers = read(text)

    assert [(a.organisation, a.status, a.line) for a in answers] == [
        ("RXA", AnswerStatus.COMPLETE, 1),
        ("RXB", AnswerStatus.IN_PROGRESS, 3),
        ("RXC", AnswerStatus.NOT_APPLICABLE, 5),
    ]
    assert answers[2].reason == "no such system"


def test_a_bold_answer_line_reads_like_a_plain_one() -> None:
    assert read("**RXA: complete**", ["RXA"]) == [AnswerValue("RXA", AnswerStatus.COMPLETE, line=1)]


def test_prose_around_the_answers_is_passed_over() -> None:
    text = "Hi team,\n\nRXA: complete\n\nThanks, Ann\nNote: we patch tonight\n"

    answers = read(text)

    assert answers == [AnswerValue("RXA", AnswerStatus.COMPLETE, line=3)]


def test_an_untouched_line_of_the_form_is_not_an_answer() -> None:
    answers = read("RXA:\nRXB: complete\nRXC:")

    assert answers == [AnswerValue("RXB", AnswerStatus.COMPLETE, line=2)]


def test_the_signature_ends_the_answers() -> None:
    answers = read("RXA: complete\n-- \nRXB: complete\n")

    assert statuses(answers) == {"RXA": AnswerStatus.COMPLETE}


# ------------------------------------------------------------------ errors


def test_an_organisation_not_held_is_refused() -> None:
    found = problems("RXA: complete\nRZZ: complete")

    assert found == [(2, "RZZ is not an organisation you answer for")]


def test_an_unknown_status_word_is_refused_naming_the_line() -> None:
    found = problems("Hi,\nRXA: compleet\nRXB: complete")

    assert len(found) == 1
    line, problem = found[0]
    assert line == 2
    assert "'compleet' is not a status" in problem


def test_two_answers_for_one_organisation_are_refused() -> None:
    found = problems("RXA: complete\nRXB: complete\nrxa: in progress")

    assert found == [(3, "RXA already has an answer on line 1: give one answer per organisation")]


def test_all_with_other_codes_is_refused() -> None:
    found = problems("ALL, RXA: complete")

    assert found == [(1, "ALL already means every organisation: give it alone")]


def test_every_bad_line_is_reported_at_once() -> None:
    found = problems("RXA: compleet\nRXB: complete\nRXC: not applicable\nRZZ: done")

    assert [line for line, _ in found] == [1, 3, 4]


@pytest.mark.parametrize(
    "text",
    ["", "Hi team,\nThanks, Ann", "RXA:\nRXB:\nRXC:"],
    ids=["empty", "prose only", "untouched form"],
)
def test_a_reply_without_any_answer_is_refused(text: str) -> None:
    found = problems(text)

    assert found == [(0, "no answer found at the top of the reply")]


# ------------------------------------------------------------------- dates


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("expected 2026-12-05", date(2026, 12, 5)),
        ("expected 5/12/2026", date(2026, 12, 5)),  # day first, as in the UK
        ("expected 5/12/26", date(2026, 12, 5)),
        ("expected December 5", date(2026, 12, 5)),
        ("expected 5th of December", date(2026, 12, 5)),
        ("expected 5 Dec 2027", date(2027, 12, 5)),
        ("by 3 March", date(2027, 3, 3)),
        ("no date given yet", None),
    ],
)
def test_an_expected_date_is_read_as_a_uk_date(written: str, expected: date | None) -> None:
    answers = read(f"RXA: in progress: {written}", ["RXA"])

    assert answers[0].expected_on == expected
    assert find_date(written, TODAY) == expected


@pytest.mark.parametrize("written", ["31/02/2026", "2026-02-30", "31 April"])
def test_a_date_that_does_not_exist_is_refused(written: str) -> None:
    found = problems(f"RXA: complete\nRXB: in progress: expected {written}")

    assert len(found) == 1
    line, problem = found[0]
    assert line == 2
    assert problem == f"{written!r} is not a real date"


def test_the_first_date_written_is_the_one_taken() -> None:
    assert find_date("patch on 2026-12-01, reboot 8 December", TODAY) == date(2026, 12, 1)


def test_29_february_without_a_year_is_the_next_leap_day() -> None:
    # find_date: "A date without a year is the next one on or after today."
    # In 2026 and 2027 there is no 29 February; the next is in 2028.
    answers = read("RXA: in progress: expected 29 February", ["RXA"], today=date(2026, 3, 1))

    assert answers[0].expected_on == date(2028, 2, 29)


# ------------------------------------------------------- hostile replies


@pytest.mark.parametrize(
    "unit",
    [
        "complete ",
        "we don't use ",
        "not complete ",
        "done, ",
        "RXA and ",
        "Thanks Ann Bob ",
        "n/a ",
    ],
)
@pytest.mark.parametrize("line_chars", [1990, 500_000])
def test_half_a_megabyte_of_status_words_is_read_quickly(unit: str, line_chars: int) -> None:
    line = (unit * (line_chars // len(unit)))[:line_chars] + "\n"
    text = line * (500_000 // len(line))

    start = time.perf_counter()
    with contextlib.suppress(ReplyNotUnderstood):
        read(text)
    elapsed = time.perf_counter() - start

    assert elapsed < 2.0, f"parse_reply took {elapsed:.2f}s"
