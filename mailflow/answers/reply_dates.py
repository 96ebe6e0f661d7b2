"""Reading the dates in an answer: the expected date ("expected 5
December", "by 3/12/2026") and the next update or review the person asks
for ("next update 12 December", "review on 1/3/2027").  UK dates, day
before month; a date without a year is the next one on or after today."""

from __future__ import annotations

import re
from datetime import date


class NotADate(ValueError):
    """Something written as a date that does not exist (31 April), or a
    next update that is not given as a date ("next update Friday")."""


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
        raise NotADate(f"{match.group(0)!r} is not a real date") from exc


# "next update 12 December", "; update by 12 Dec", "review on 1 March",
# "next update due: 12/12/2026".  "update" or "review" alone counts only at
# the start of a clause ("apply the update by Friday" is no such date);
# "next update" anywhere.
_NEXT_UPDATE = re.compile(
    r"(?:^|(?<=[;,.!(:\u2013\u2014])|\s(?=next\s))\s*(?:(?:the|our)\s+)?"
    r"(?P<next>next\s+)?(?:updates?|review)\b"
    r"(?P<due>\s+(?:is\s+)?(?:due|expected))?(?P<when>\s+(?:on|by|before))?\s*[:\-\u2013]?\s*",
    re.IGNORECASE,
)
_DATE_PATTERNS = (
    (_ISO_DATE, "ymd"),
    (_UK_NUMERIC_DATE, "dmy"),
    (_DAY_MONTH, "dMy"),
    (_MONTH_DAY, "Mdy"),
)
_JOIN = re.compile(r"\s*([;,.])(?:\s*[;,.:])+\s*")
_ENDS = " ;,.:-\u2013\u2014"


def _date_at(text: str, pos: int) -> tuple[re.Match[str], str] | None:
    for pattern, order in _DATE_PATTERNS:
        found = pattern.match(text, pos)
        if found is not None:
            return found, order
    return None


def _next_update_clauses(text: str) -> list[tuple[re.Match[str], tuple[re.Match[str], str] | None]]:
    """Each "next update ..." clause: its words, and the date after them
    (None when the words say a date is due but give none)."""
    clauses = []
    for words in _NEXT_UPDATE.finditer(text):
        written = _date_at(text, words.end())
        # "update by Friday" or "review on Monday with the CAB" is a note;
        # only "next update ..." without a date is an attempt to name one.
        if written is not None or words["next"]:
            clauses.append((words, written))
    return clauses


def is_next_update_line(text: str) -> bool:
    """Whether a line says only when the next update or review is due
    ("Next update: 12 December"), to add to the answer above it."""
    clauses = _next_update_clauses(text)
    return bool(clauses) and clauses[0][0].start() == 0


def next_update_in(text: str, today: date) -> tuple[str | None, date | None]:
    """The text without its "next update DATE" clause, and that date; the
    text as it was and None when it asks for none."""
    clauses = _next_update_clauses(text)
    if not clauses:
        return text, None
    if len(clauses) > 1:
        raise NotADate("give one next update date")
    words, written = clauses[0]
    if written is None:
        raise NotADate(
            f"{text[words.start() :].strip()!r} does not give a date: "
            "write it as a date, e.g. next update 12 December"
        )
    match, order = written
    on = _to_date(match, order, today)
    rest = _JOIN.sub(r"\1 ", text[: words.start()] + " " + text[match.end() :])
    return rest.strip(_ENDS) or None, on
