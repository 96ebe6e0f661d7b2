"""Reading the expected date in an answer ("expected 5 December",
"by 3/12/2026"): UK dates, day before month; a date without a year is the
next one on or after today."""

from __future__ import annotations

import re
from datetime import date


class NotADate(ValueError):
    """Something written as a date that does not exist (31 April)."""


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
