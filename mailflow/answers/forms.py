"""Reading the further information of an answer from a posted form, with
each problem named by the id of the field it belongs to."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from mailflow.answers.answer_values import AnswerValue
from mailflow.answers.recording import validate_further_information
from mailflow.answers.statuses import AnswerStatus
from mailflow.core.errors import InvalidInput
from mailflow.core.pages.forms import Problems, text

# What each status asks for, in the order the page shows it.
FIELDS: dict[AnswerStatus, tuple[str, ...]] = {
    # A reply may carry a note with an in-progress answer ("in progress:
    # patching tonight, expected 5 December"): the page must show it, or it
    # would be lost on confirming.
    AnswerStatus.IN_PROGRESS: ("expected", "note"),
    AnswerStatus.COMPLETE: ("note",),
    AnswerStatus.NOT_APPLICABLE: ("reason",),
    AnswerStatus.UNABLE: ("reason", "mitigations"),
}


@dataclass(frozen=True)
class Information:
    note: str | None = None
    reason: str | None = None
    mitigations: str | None = None
    expected_on: date | None = None
    # The three parts of the date as typed, to show them again.
    expected_parts: tuple[str, str, str] = ("", "", "")

    def answer(self, organisation_code: str, status: AnswerStatus) -> AnswerValue:
        """This information as one organisation's answer."""
        return AnswerValue(
            organisation=organisation_code,
            status=status,
            note=self.note,
            reason=self.reason,
            mitigations=self.mitigations,
            expected_on=self.expected_on,
        )


def field_id(prefix: str, name: str) -> str:
    return f"{prefix}{name}"


def read_information(
    form: dict[str, Any], status: AnswerStatus, prefix: str, problems: Problems
) -> Information:
    """The information ``status`` takes, from fields named PREFIX+name;
    problems go into ``problems`` under the id of their field."""
    wanted = FIELDS[status]
    values = {
        name: (text(form, field_id(prefix, name)) or None) if name in wanted else None
        for name in ("note", "reason", "mitigations")
    }
    expected_on = None
    parts = ("", "", "")
    if "expected" in wanted:
        parts = (
            text(form, field_id(prefix, "expected-day")),
            text(form, field_id(prefix, "expected-month")),
            text(form, field_id(prefix, "expected-year")),
        )
        expected_on = _read_date(parts, field_id(prefix, "expected-day"), problems)
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
    )


def _sentence(problem: str) -> str:
    problem = problem.strip()
    return problem[:1].upper() + problem[1:]


def _read_date(parts: tuple[str, str, str], where: str, problems: Problems) -> date | None:
    if not any(parts):
        return None
    if not all(parts):
        problems.add(where, "Expected completion date must include a day, month and year")
        return None
    if not all(p.isdigit() for p in parts) or len(parts[2]) != 4:
        problems.add(where, "Expected completion date must be a real date, like 27 3 2026")
        return None
    try:
        return date(int(parts[2]), int(parts[1]), int(parts[0]))
    except ValueError:
        problems.add(where, "Expected completion date must be a real date, like 27 3 2026")
        return None
