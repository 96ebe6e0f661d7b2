"""The reply form: the one place that knows how an answer is written in an
email, both to show it in the alert email and to read it back from a reply.

One line per organisation, at the top of the reply::

    RXA: complete
    RXA, RXB: in progress: patching this weekend, expected 5 December
    ALL: not applicable: we do not run the product
    RXC: unable: the supplier has no fix yet; mitigations: service taken offline
    complete                       (when the person answers for one organisation)

Case, bullets, bold markers and blank lines do not matter.  Lines that are
plainly prose ("Thanks, Ann") are passed over; a line that is meant as an
answer but cannot be read exactly is an error, never a guess.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

from mailflow.domain.statuses import AnswerStatus

ALL = "ALL"

# Every word or phrase a person may use for a status; the first of each is
# the one the form shows.
STATUS_WORDS: dict[AnswerStatus, tuple[str, ...]] = {
    AnswerStatus.COMPLETE: ("complete", "completed", "done", "remediated"),
    AnswerStatus.IN_PROGRESS: ("in progress", "in-progress", "investigating"),
    AnswerStatus.NOT_APPLICABLE: ("not applicable", "not-applicable", "n/a", "na"),
    AnswerStatus.UNABLE: ("unable", "unable to implement", "cannot", "cannot implement"),
}
WORD_TO_STATUS = {word: status for status, words in STATUS_WORDS.items() for word in words}
# Longest first, so "unable to implement" wins over "unable".
_STATUS_ALTERNATIVES = "|".join(re.escape(w) for w in sorted(WORD_TO_STATUS, key=len, reverse=True))
_CODE = r"[A-Za-z0-9]{3,10}"
_ANSWER_LINE = re.compile(
    rf"^(?P<orgs>{_CODE}(?:\s*(?:,|&|\band\b)\s*{_CODE})*)\s*:\s*(?P<rest>.*)$", re.IGNORECASE
)
_STATUS_AT_START = re.compile(
    rf"^(?P<word>{_STATUS_ALTERNATIVES})(?=$|[\s:.,;!\-\u2013\u2014])(?P<after>.*)$", re.IGNORECASE
)
_DECORATION = re.compile(r"^(?:[-*•·\u2013>]+|\d{1,2}[.)])\s+")
_MITIGATIONS = re.compile(r"(?:;|\.|,)?\s*\bmitigations?\s*:\s*", re.IGNORECASE)
_SIGNATURE_DELIMITER = "-- "

MONTHS = {
    name: number
    for number, names in enumerate(
        [
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ],
        start=1,
    )
    for name in names
}
_MONTH_NAMES = "|".join(sorted(MONTHS, key=len, reverse=True))
_ISO_DATE = re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b")
_UK_NUMERIC_DATE = re.compile(r"\b(\d{1,2})/(\d{1,2})/(\d{4}|\d{2})\b")
_DAY_MONTH = re.compile(
    rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?({_MONTH_NAMES})\.?(?:,?\s+(\d{{4}}))?\b",
    re.IGNORECASE,
)
_MONTH_DAY = re.compile(
    rf"\b({_MONTH_NAMES})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?(?:,?\s+(\d{{4}}))?\b", re.IGNORECASE
)


@dataclass(frozen=True)
class Answer:
    """One organisation's answer as the person wrote it."""

    organisation: str
    status: AnswerStatus
    line: int
    note: str | None = None
    reason: str | None = None
    mitigations: str | None = None
    expected_on: date | None = None


@dataclass(frozen=True)
class LineProblem:
    line: int
    text: str
    problem: str


class ReplyNotUnderstood(Exception):
    def __init__(self, problems: Sequence[LineProblem]) -> None:
        super().__init__("; ".join(f"line {p.line}: {p.problem}" for p in problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class FormOrganisation:
    code: str
    name: str


@dataclass(frozen=True)
class ReplyForm:
    """What the alert email shows so a person can answer by replying."""

    organisations: list[FormOrganisation]
    example_lines: list[str] = field(default_factory=list)
    status_lines: list[str] = field(default_factory=list)
    single: bool = False


def build_reply_form(organisations: Sequence[tuple[str, str]]) -> ReplyForm:
    orgs = [FormOrganisation(code, name) for code, name in organisations]
    if len(orgs) == 1:
        examples = [f"{orgs[0].code}: complete", "(or just: complete)"]
    else:
        examples = [f"{o.code}: complete" for o in orgs[:3]]
        examples.append(f"{ALL}: not applicable: we do not run the product")
    status_lines = [
        "complete  (optional note after a colon)",
        "in progress  (optional: expected completion date, e.g. expected 5 December)",
        "not applicable: REASON",
        "unable: REASON; mitigations: WHAT YOU HAVE DONE INSTEAD",
    ]
    return ReplyForm(orgs, examples, status_lines, single=len(orgs) == 1)


def _clean(line: str) -> str:
    line = line.replace("\u00a0", " ").replace("\u200b", "")
    line = line.replace("**", "").replace("__", "").strip()
    line = _DECORATION.sub("", line).strip()
    # A line wrapped in single emphasis markers: *complete* or _complete_.
    if len(line) > 2 and line[0] == line[-1] and line[0] in "*_":
        line = line[1:-1].strip()
    return " ".join(line.split())


def parse_reply(text: str, *, held: Sequence[str], today: date) -> list[Answer]:
    """Read the answers in what the person wrote (quoted text already cut
    away).  ``held`` is the codes of the organisations they answer for.
    Returns one Answer per organisation, or raises ReplyNotUnderstood
    listing every line that could not be read."""
    held_codes = [c.upper() for c in held]
    answers: dict[str, Answer] = {}
    problems: list[LineProblem] = []

    for number, raw in enumerate(text.splitlines(), start=1):
        if raw.rstrip("\r") == _SIGNATURE_DELIMITER or raw.strip() == "--":
            break
        line = _clean(raw)
        if not line:
            continue
        try:
            parsed = _parse_line(line, number, held_codes, today)
        except _LineError as exc:
            problems.append(LineProblem(number, line, str(exc)))
            continue
        for answer in parsed:
            earlier = answers.get(answer.organisation)
            if earlier is not None:
                problems.append(
                    LineProblem(
                        number,
                        line,
                        f"{answer.organisation} already has an answer on line {earlier.line}: "
                        "give one answer per organisation",
                    )
                )
                continue
            answers[answer.organisation] = answer

    if not answers and not problems:
        problems.append(LineProblem(0, "", "no answer found at the top of the reply"))
    if problems:
        raise ReplyNotUnderstood(problems)
    return [answers[c] for c in held_codes if c in answers]


class _LineError(Exception):
    pass


def _parse_line(line: str, number: int, held: list[str], today: date) -> list[Answer]:
    match = _ANSWER_LINE.match(line)
    if match is not None:
        codes = [c.upper() for c in re.split(r"\s*(?:,|&|\band\b)\s*", match["orgs"], flags=re.I)]
        rest = match["rest"].strip()
        is_ours = all(c == ALL or c in held for c in codes)
        if not is_ours and not _STATUS_AT_START.match(rest):
            # "Note: we will patch tonight" is prose, not an answer.
            return []
        for code in codes:
            if code != ALL and code not in held:
                raise _LineError(f"{code} is not an organisation you answer for")
        if ALL in codes and len(codes) > 1:
            raise _LineError("ALL already means every organisation: give it alone")
        if not rest:
            # An untouched line of the form: no answer for these.
            return []
        targets = held if codes == [ALL] else codes
        return [_answer(code, rest, number, today) for code in targets]

    if _STATUS_AT_START.match(line):
        if len(held) != 1:
            raise _LineError(
                "you answer for several organisations: start the line with the code, "
                f"e.g. {held[0] if held else 'RXA'}: complete, or ALL: complete"
            )
        return [_answer(held[0], line, number, today)]
    return []


def _answer(code: str, rest: str, number: int, today: date) -> Answer:
    match = _STATUS_AT_START.match(rest)
    if match is None:
        first = rest.split(":")[0].strip()
        raise _LineError(
            f"{first!r} is not a status: use complete, in progress, not applicable or unable"
        )
    status = WORD_TO_STATUS[match["word"].lower()]
    after = match["after"].strip()
    if after and after[0] in ":-\u2013\u2014":
        after = after[1:].strip()
    elif after and after[0] in ".,;!":
        after = after[1:].strip()
        if after:
            raise _LineError(f"put a colon after the status: {code}: {match['word']}: ...")
    elif after:
        raise _LineError(f"put a colon after the status: {code}: {match['word']}: {after}")
    info = after or None

    if status is AnswerStatus.NOT_APPLICABLE:
        if info is None:
            raise _LineError(f"say why it does not apply: {code}: not applicable: REASON")
        return Answer(code, status, number, reason=info)
    if status is AnswerStatus.UNABLE:
        parts = _MITIGATIONS.split(info or "", maxsplit=1)
        reason = parts[0].strip(" ;.,") or None
        mitigations = parts[1].strip() if len(parts) > 1 else None
        if reason is None or not mitigations:
            raise _LineError(
                f"say why and what you have done instead: {code}: unable: REASON; mitigations: WHAT"
            )
        return Answer(code, status, number, reason=reason, mitigations=mitigations)
    if status is AnswerStatus.IN_PROGRESS:
        expected = find_date(info, today) if info else None
        return Answer(code, status, number, note=info, expected_on=expected)
    return Answer(code, status, number, note=info)


def find_date(text: str, today: date) -> date | None:
    """The first date in ``text``, read as a UK date (day before month).
    A date without a year is the next one on or after ``today``."""
    found: list[tuple[int, date]] = []
    for pattern, order in (
        (_ISO_DATE, "ymd"),
        (_UK_NUMERIC_DATE, "dmy"),
        (_DAY_MONTH, "dMy"),
        (_MONTH_DAY, "Mdy"),
    ):
        for m in pattern.finditer(text):
            found.append((m.start(), _to_date(m, order, today)))
    if not found:
        return None
    return min(found, key=lambda item: item[0])[1]


def _next_occurrence(day: int, month: int, today: date) -> date:
    # Eight years always include a leap year, so 29 February is found too.
    for year in range(today.year, today.year + 9):
        try:
            candidate = date(year, month, day)
        except ValueError:
            continue
        if candidate >= today:
            return candidate
    raise ValueError(f"no date {day}/{month}")


def _to_date(match: re.Match[str], order: str, today: date) -> date:
    groups = dict(zip(order, match.groups(), strict=True))
    day = int(groups["d"])
    month = MONTHS[groups["M"].lower()] if "M" in groups else int(groups["m"])
    year_text = groups.get("y")
    try:
        if year_text is None:
            return _next_occurrence(day, month, today)
        year = int(year_text)
        if year < 100:
            year += 2000
        return date(year, month, day)
    except ValueError as exc:
        raise _LineError(f"{match.group(0)!r} is not a real date") from exc
