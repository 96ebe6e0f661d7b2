"""What an auditor asks of the report page in its address: the as-at
time, the filters, the sort and the page of an alert's table.  Read
strictly (anything not understood is an ``InvalidInput`` naming the field,
shown as a 400), and written back into the links the page shows, so every
link keeps what was asked.  No I/O; the clock is an argument."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from mailflow.core.errors import InvalidInput
from mailflow.reports.figures import SORT_KEYS, STATUSES, RowFilter, Sort

# Rows of an alert's table on one page: a national alert has 20,000.
PAGE_ROWS = 200
# No alert has more pages than this; a bigger number is a made-up address.
MAX_PAGE = 10_000
# "2026-12-04T23:00:00.000000+05:30" is 32 characters.
MAX_TIME_LENGTH = 40
MAX_TYPE_LENGTH = 40
_CODE = re.compile(r"[A-Za-z0-9]{1,12}")
_YES = {"1": True, "": False, "0": False}


@dataclass(frozen=True)
class ReportQuery:
    """``as_at`` None: now.  ``page`` counts from 1."""

    as_at: datetime | None = None
    status: str | None = None
    overdue_only: bool = False
    organisation_type: str | None = None
    parent_code: str | None = None
    sort: str = "code"
    descending: bool = False
    page: int = 1

    @property
    def only(self) -> RowFilter:
        return RowFilter(self.status, self.overdue_only, self.organisation_type, self.parent_code)

    @property
    def order(self) -> Sort:
        return Sort(self.sort, self.descending)

    @property
    def offset(self) -> int:
        return (self.page - 1) * PAGE_ROWS

    def when(self, now: datetime) -> datetime:
        return self.as_at or now

    def sorted_by(self, key: str) -> ReportQuery:
        """The link of a column's heading: by that column, the other way
        round if it is already sorted by it; from the first page."""
        descending = not self.descending if key == self.sort else False
        return replace(self, sort=key, descending=descending, page=1)

    def on_page(self, page: int) -> ReportQuery:
        return replace(self, page=page)

    def as_at_only(self) -> ReportQuery:
        """What a link to another page of the report keeps: the time."""
        return ReportQuery(as_at=self.as_at)

    def query_string(self) -> str:
        """``?...`` with what differs from the defaults, or ""."""
        values: dict[str, Any] = {}
        if self.as_at is not None:
            values["as_at"] = self.as_at.isoformat()
        for name, value in (
            ("status", self.status),
            ("overdue", "1" if self.overdue_only else None),
            ("type", self.organisation_type),
            ("parent", self.parent_code),
            ("sort", None if self.sort == "code" else self.sort),
            ("desc", "1" if self.descending else None),
            ("page", self.page if self.page > 1 else None),
        ):
            if value is not None:
                values[name] = value
        return "?" + urlencode(values) if values else ""


def read_query(params: Mapping[str, str], *, now: datetime, zone: ZoneInfo) -> ReportQuery:
    """The query from an address's parameters (unknown ones are ignored;
    an empty one is as if not given)."""
    return ReportQuery(
        as_at=read_as_at(params.get("as_at", ""), now=now, zone=zone),
        status=_choice(params, "status", STATUSES),
        overdue_only=_flag(params, "overdue"),
        organisation_type=_type(params.get("type", "").strip()),
        parent_code=_parent(params.get("parent", "").strip()),
        sort=_choice(params, "sort", SORT_KEYS) or "code",
        descending=_flag(params, "desc"),
        page=_page(params.get("page", "").strip()),
    )


# No report is asked for as at a time before mailflow existed.
EARLIEST_YEAR = 2000


def read_as_at(text: str, *, now: datetime, zone: ZoneInfo) -> datetime | None:
    """An ISO 8601 time, in ``zone`` when it gives no offset (as a
    browser's date-and-time field sends it).  A time after ``now`` is
    refused rather than moved: the report cannot know it yet, and a page
    silently showing another time than the one asked for would mislead."""
    text = text.strip()
    if not text:
        return None
    if len(text) > MAX_TIME_LENGTH:
        raise InvalidInput("as_at", "the time is too long")
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            "as_at", f"{text!r} is not a date and time (for example 2026-12-04T09:00)"
        ) from None
    if when.year < EARLIEST_YEAR:
        # Nothing is that old, and times near year 1 overflow once moved
        # to UTC or back by the 30 days of recently closed alerts.
        raise InvalidInput("as_at", f"choose a time after {EARLIEST_YEAR}")
    if when.tzinfo is None:
        when = when.replace(tzinfo=zone)
    when = when.astimezone(UTC)
    if when > now:
        raise InvalidInput("as_at", "the time is in the future: choose a time up to now")
    return when


def _choice(params: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str | None:
    value = params.get(name, "").strip()
    if not value:
        return None
    if value not in allowed:
        shown = value if len(value) <= MAX_TYPE_LENGTH else value[:MAX_TYPE_LENGTH] + "..."
        raise InvalidInput(name, f"{shown!r} is not one of {', '.join(allowed)}")
    return value


def _flag(params: Mapping[str, str], name: str) -> bool:
    value = params.get(name, "").strip()
    if value not in _YES:
        raise InvalidInput(name, "give 1 (yes) or leave it out")
    return _YES[value]


def _type(value: str) -> str | None:
    if not value:
        return None
    if len(value) > MAX_TYPE_LENGTH or not value.isprintable():
        raise InvalidInput("type", f"an organisation type is up to {MAX_TYPE_LENGTH} characters")
    return value


def _parent(value: str) -> str | None:
    if not value:
        return None
    if not _CODE.fullmatch(value):
        raise InvalidInput("parent", "an organisation code is 1 to 12 letters and digits")
    return value.upper()


def _page(value: str) -> int:
    if not value:
        return 1
    digits = value.isascii() and value.isdigit() and len(value) <= len(str(MAX_PAGE))
    if not digits or not 1 <= int(value) <= MAX_PAGE:
        raise InvalidInput("page", f"a page is a whole number from 1 to {MAX_PAGE}")
    return int(value)
