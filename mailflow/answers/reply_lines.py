"""The answers of one reply, gathered from its lines: one answer per
organisation, lines that agree merged, lines that disagree reported, and
each answer checked for the information its status needs.  How a line is
written is the reply form's business (:mod:`mailflow.answers.reply_form`);
this module only gathers what the lines say."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date

from mailflow.answers.answer_values import AnswerValue
from mailflow.answers.reply_dates import NotADate, find_date, is_next_update_line, next_update_in
from mailflow.answers.reply_words import (
    joined_information,
    reason_and_mitigations,
    reason_of,
    says_only_the_status,
    without_sign_off,
)
from mailflow.answers.statuses import AnswerStatus
from mailflow.answers.update_dates import OWES_UPDATES, next_update_problem

__all__ = [
    "AnswerValue",
    "Found",
    "LineError",
    "LineProblem",
    "LineReader",
    "ReplyAnswers",
    "ReplyNotUnderstood",
]

_UNREADABLE = "\ufffd"


@dataclass(frozen=True)
class LineProblem:
    line: int
    text: str
    problem: str


class ReplyNotUnderstood(Exception):
    def __init__(self, problems: Sequence[LineProblem]) -> None:
        super().__init__("; ".join(f"line {p.line}: {p.problem}" for p in problems))
        self.problems = list(problems)


class LineError(Exception):
    pass


@dataclass(frozen=True)
class Found:
    """An answer as one line gives it, before the reply as a whole is checked."""

    line: int
    text: str
    status: AnswerStatus
    # The organisations named; None when the line names none.
    codes: list[str] | None
    info: str | None
    # Codes, then the status: one answer per organisation on such lines.
    explicit: bool
    # Read from a sentence: its words are the information.
    sentence: bool = False


@dataclass
class _Draft:
    found: Found
    texts: list[str] = field(default_factory=list)


# Reads one line (its text, its number, the codes held): an answer, text
# adding to the answer above ("Mitigations: ..."), or nothing.
LineReader = Callable[[str, int, list[str]], Found | str | None]


class ReplyAnswers:
    """The answers of one reply, gathered line by line."""

    def __init__(self, held: list[str]) -> None:
        self.held = held
        self.drafts: dict[str, _Draft] = {}
        # Sentences naming no organisation, from a person who holds several.
        self.uncoded: list[Found] = []
        self.problems: list[LineProblem] = []
        self.last: Found | None = None

    def read_line(self, line: str, number: int, read: LineReader) -> None:
        """Add what ``read`` finds in one line: an answer, text adding to
        the answer above, or a problem."""
        try:
            found = read(line, number, self.held)
            if isinstance(found, Found) and _garbled(found):
                raise LineError(
                    "part of this line could not be read (its characters were garbled): "
                    "write it again"
                )
        except LineError as exc:
            self.problems.append(LineProblem(number, line, str(exc)))
            return
        if isinstance(found, str):
            self._add_to_last(found)
        elif found is not None:
            self._add(found)

    def _add_to_last(self, text: str) -> None:
        """A "Reason:" or "Mitigations:" line adds to the answer above it,
        and so does a "Next update: 12 December" line."""
        last = self.last
        takes = (AnswerStatus.UNABLE, AnswerStatus.NOT_APPLICABLE)
        if is_next_update_line(text):
            takes = OWES_UPDATES
        if last is None or last.status not in takes:
            return
        for code in last.codes or self.held[:1]:
            draft = self.drafts.get(code)
            if draft is not None and draft.found is last:
                draft.texts.append(text)

    def _add(self, found: Found) -> None:
        self.last = found
        codes = found.codes
        if codes is None and len(self.held) == 1:
            codes = self.held
        if codes is None:
            self.uncoded.append(found)
            return
        for code in codes:
            problem = _add(self.drafts, code, found)
            if problem is not None:
                self.problems.append(problem)
                return

    def finish(self, today: date) -> tuple[list[AnswerValue], list[LineProblem]]:
        problems = self.problems + _check_uncoded(self.uncoded, self.drafts, self.held)
        answers: list[AnswerValue] = []
        for code in self.held:
            if code in self.drafts:
                try:
                    answers.append(_answer(code, self.drafts[code], today))
                except LineError as exc:
                    found = self.drafts[code].found
                    problems.append(LineProblem(found.line, found.text, str(exc)))
        return answers, problems


def _garbled(found: Found) -> bool:
    """Whether characters the charset could not decode stand where they may
    change the meaning: anywhere in a sentence, or before the information
    that follows a status."""
    if _UNREADABLE not in found.text:
        return False
    if found.sentence or not found.info or not found.text.endswith(found.info):
        return True
    return _UNREADABLE in found.text[: -len(found.info)]


def _add(drafts: dict[str, _Draft], code: str, found: Found) -> LineProblem | None:
    """Add ``found`` to the answer for ``code``; a problem when it disagrees."""
    earlier = drafts.get(code)
    if earlier is None:
        drafts[code] = _Draft(found, _information(found))
        return None
    before = earlier.found
    if before is found:
        return None
    if before.explicit and found.explicit:
        return LineProblem(
            found.line,
            found.text,
            f"{code} already has an answer on line {before.line}: give one answer per organisation",
        )
    if before.status is not found.status:
        return LineProblem(
            found.line,
            found.text,
            f"this reads as {found.status.label.lower()} for {code}, but line {before.line} "
            f"reads as {before.status.label.lower()}: give one status per organisation",
        )
    earlier.texts.extend(_information(found))
    return None


def _information(found: Found) -> list[str]:
    """The note, reason or mitigations ``found`` gives, if any: a sentence
    that only says the status ("We are now fully patched") gives none."""
    if found.info is None:
        return []
    only_status = found.sentence and found.status in (
        AnswerStatus.COMPLETE,
        AnswerStatus.IN_PROGRESS,
    )
    if only_status and says_only_the_status(without_sign_off(found.info)):
        return []
    return [found.info]


def _check_uncoded(
    uncoded: list[Found], drafts: dict[str, _Draft], held: list[str]
) -> list[LineProblem]:
    """A sentence without a code, from a person who holds several
    organisations, only supports coded answers that all say the same: its
    words are added to each of them."""
    coded = {d.found.status for d in drafts.values()}
    problems = []
    for found in uncoded:
        if coded == {found.status}:
            for draft in drafts.values():
                draft.texts.extend(_information(found))
            continue
        problems.append(
            LineProblem(
                found.line,
                found.text,
                "you answer for several organisations: start the line with the code, "
                f"e.g. {held[0] if held else 'RXA'}: complete, or ALL: complete",
            )
        )
    return problems


def _answer(code: str, draft: _Draft, today: date) -> AnswerValue:
    found = draft.found
    status, number = found.status, found.line
    info = joined_information(draft.texts)
    if status is AnswerStatus.NOT_APPLICABLE:
        reason = reason_of(info)
        if not reason:
            raise LineError(f"say why it does not apply: {code}: not applicable: REASON")
        return AnswerValue(code, status, number, reason=reason)
    info, next_update_on = _next_update(status, info, today)
    if status is AnswerStatus.UNABLE:
        reason, mitigations = reason_and_mitigations(info)
        if not reason or not mitigations:
            raise LineError(
                f"say why and what you have done instead: {code}: unable: REASON; mitigations: WHAT"
            )
        return AnswerValue(
            code,
            status,
            number,
            reason=reason,
            mitigations=mitigations,
            next_update_on=next_update_on,
        )
    if status is AnswerStatus.IN_PROGRESS:
        try:
            expected = find_date(info, today) if info else None
        except NotADate as exc:
            raise LineError(str(exc)) from exc
        return AnswerValue(
            code, status, number, note=info, expected_on=expected, next_update_on=next_update_on
        )
    return AnswerValue(code, status, number, note=info)


def _next_update(
    status: AnswerStatus, info: str | None, today: date
) -> tuple[str | None, date | None]:
    """The information without the next update (or review) it asks for,
    and that date, checked: only answers that are not final owe one."""
    if info is None or status not in OWES_UPDATES:
        return info, None
    try:
        rest, on = next_update_in(info, today)
    except NotADate as exc:
        raise LineError(str(exc)) from exc
    if on is None:
        return info, None
    problem = next_update_problem(status, on, today)
    if problem is not None:
        raise LineError(problem)
    # "In progress, next update 12 December": the rest says nothing more.
    if rest is not None and status is AnswerStatus.IN_PROGRESS and says_only_the_status(rest):
        rest = None
    return rest, on
