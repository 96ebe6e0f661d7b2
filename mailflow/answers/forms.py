"""Reading the further information of an answer from a posted form, with
each problem named by the id of the field it belongs to."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from mailflow.answers.answer_values import AnswerValue
from mailflow.answers.recording import validate_further_information
from mailflow.answers.statuses import AnswerStatus
from mailflow.answers.update_dates import next_update_problem, what_is_due
from mailflow.core.errors import InvalidInput
from mailflow.core.pages.forms import Problems, text

# What each status asks for, in the order the page shows it.
FIELDS: dict[AnswerStatus, tuple[str, ...]] = {
    # A reply may carry a note with an in-progress answer ("in progress:
    # patching tonight, expected 5 December"): the page must show it, or it
    # would be lost on confirming.
    AnswerStatus.IN_PROGRESS: ("expected", "next_update", "note"),
    AnswerStatus.COMPLETE: ("note",),
    AnswerStatus.NOT_APPLICABLE: ("reason",),
    AnswerStatus.UNABLE: ("reason", "mitigations", "next_update"),
}
NO_PARTS = ("", "", "")


@dataclass(frozen=True)
class Information:
    note: str | None = None
    reason: str | None = None
    mitigations: str | None = None
    expected_on: date | None = None
    # The three parts of the date as typed, to show them again.
    expected_parts: tuple[str, str, str] = NO_PARTS
    # The next update (or review) the person asked for, as typed.
    next_update_on: date | None = None
    next_update_parts: tuple[str, str, str] = NO_PARTS
    # What is recorded if they ask for none (the page says so).
    default_next_update: date | None = None

    def answer(self, organisation_code: str, status: AnswerStatus) -> AnswerValue:
        """This information as one organisation's answer."""
        return AnswerValue(
            organisation=organisation_code,
            status=status,
            note=self.note,
            reason=self.reason,
            mitigations=self.mitigations,
            expected_on=self.expected_on,
            next_update_on=self.next_update_on,
        )


def date_parts(value: date | None) -> tuple[str, str, str]:
    """A date as the three boxes of a date input show it."""
    return (str(value.day), str(value.month), str(value.year)) if value else NO_PARTS


def typed_parts(form: dict[str, Any], prefix: str, name: str) -> tuple[str, str, str]:
    """The day, month and year typed into the date input ``name``."""
    day, month, year = (text(form, f"{prefix}{name}-{part}") for part in ("day", "month", "year"))
    return day, month, year


def field_id(prefix: str, name: str) -> str:
    return f"{prefix}{name}"


def read_information(
    form: dict[str, Any], status: AnswerStatus, prefix: str, problems: Problems, *, today: date
) -> Information:
    """The information ``status`` takes, from fields named PREFIX+name;
    problems go into ``problems`` under the id of their field.  ``today``
    is the local date, which a next update may not be before."""
    wanted = FIELDS[status]
    values = {
        name: (text(form, field_id(prefix, name)) or None) if name in wanted else None
        for name in ("note", "reason", "mitigations")
    }
    expected_on = None
    parts = NO_PARTS
    if "expected" in wanted:
        parts = typed_parts(form, prefix, "expected")
        expected_on = _read_date(
            parts, "Expected completion date", field_id(prefix, "expected-day"), problems
        )
    next_update_on = None
    next_parts = NO_PARTS
    if "next_update" in wanted:
        next_parts = typed_parts(form, prefix, "next-update")
        next_update_on = _read_next_update(status, next_parts, prefix, problems, today)
    # The domain names one problem at a time; stand a placeholder in for
    # each field it names, so every problem is listed at once.
    checked = dict(values)
    for _ in range(len(checked)):
        try:
            validate_further_information(
                status,
                note=checked["note"],
                reason=checked["reason"],
                mitigations=checked["mitigations"],
            )
            break
        except InvalidInput as exc:
            problems.add(field_id(prefix, exc.where), _sentence(exc.problem))
            if exc.where not in checked or checked[exc.where] == "-":
                break
            checked[exc.where] = "-"
    return Information(
        note=values["note"],
        reason=values["reason"],
        mitigations=values["mitigations"],
        expected_on=expected_on,
        expected_parts=parts,
        next_update_on=next_update_on,
        next_update_parts=next_parts,
    )


def _sentence(problem: str) -> str:
    problem = problem.strip()
    return problem[:1].upper() + problem[1:]


def _read_next_update(
    status: AnswerStatus,
    parts: tuple[str, str, str],
    prefix: str,
    problems: Problems,
    today: date,
) -> date | None:
    """The asked-for next update (or review) date, checked the same way
    as one written in a reply."""
    where = field_id(prefix, "next-update-day")
    label = _sentence(what_is_due(status)) + " date"
    asked = _read_date(parts, label, where, problems)
    problem = next_update_problem(status, asked, today) if asked else None
    if problem is not None:
        problems.add(where, _sentence(problem))
        return None
    return asked


def _read_date(
    parts: tuple[str, str, str], label: str, where: str, problems: Problems
) -> date | None:
    if not any(parts):
        return None
    if not all(parts):
        problems.add(where, f"{label} must include a day, month and year")
        return None
    if not all(p.isdigit() for p in parts) or len(parts[2]) != 4:
        problems.add(where, f"{label} must be a real date, like 27 3 2026")
        return None
    try:
        return date(int(parts[2]), int(parts[1]), int(parts[0]))
    except ValueError:
        problems.add(where, f"{label} must be a real date, like 27 3 2026")
        return None
