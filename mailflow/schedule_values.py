"""The chasing settings' own kinds of value (working hours and days,
reminder points, a cron schedule), parsed strictly so that a bad one stops
mailflow with the setting named rather than chasing at the wrong time."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time

from cronsim import CronSim, CronSimError

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True)
class WorkingHours:
    """From ``start`` (inclusive) to ``end`` (exclusive), local time."""

    start: time
    end: time

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    def __contains__(self, moment: object) -> bool:
        return isinstance(moment, time) and self.start <= moment < self.end


@dataclass(frozen=True)
class WorkingDays:
    """Weekdays as datetime.weekday() numbers (Monday is 0)."""

    days: frozenset[int]

    def __str__(self) -> str:
        return ",".join(DAY_NAMES[d] for d in sorted(self.days))

    def __contains__(self, weekday: object) -> bool:
        return weekday in self.days


def _clock(text: str) -> time:
    match = _CLOCK.match(text.strip())
    if match is None:
        raise ValueError(f"{text.strip()!r} is not a time of day like 08:00")
    return time(int(match.group(1)), int(match.group(2)))


def parse_working_hours(text: str) -> WorkingHours:
    start, sep, end = text.partition("-")
    if not sep:
        raise ValueError("expected START-END, e.g. 08:00-18:00")
    hours = WorkingHours(_clock(start), _clock(end))
    if hours.start >= hours.end:
        raise ValueError("the end must come after the start, on the same day")
    return hours


def _day(text: str) -> int:
    name = text.strip().lower()[:3]
    if name not in DAY_NAMES or not DAY_NAMES[DAY_NAMES.index(name)].startswith(name):
        raise ValueError(f"{text.strip()!r} is not a day (mon, tue, ... sun)")
    return DAY_NAMES.index(name)


def parse_working_days(text: str) -> WorkingDays:
    """``mon-fri``, ``mon,tue,thu`` or a mix: ``mon-wed,fri``."""
    days: set[int] = set()
    for part in (p for p in text.split(",") if p.strip()):
        first, sep, last = part.partition("-")
        if not sep:
            days.add(_day(first))
            continue
        start, stop = _day(first), _day(last)
        if stop < start:
            raise ValueError(f"{part.strip()!r}: a range runs forward, e.g. mon-fri")
        days.update(range(start, stop + 1))
    if not days:
        raise ValueError("name at least one day, e.g. mon-fri")
    return WorkingDays(frozenset(days))


OFFICE_HOURS = WorkingHours(time(8), time(18))
WEEKDAYS = WorkingDays(frozenset(range(5)))


def parse_reminder_hours(text: str) -> tuple[int, ...]:
    """Hours before the deadline, e.g. ``24,4``; empty for no reminders."""
    hours: set[int] = set()
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if not part.isdigit() or int(part) <= 0:
            raise ValueError(f"{part!r} is not a whole number of hours above 0")
        hours.add(int(part))
    return tuple(sorted(hours, reverse=True))


def parse_cron(text: str) -> str:
    """A five-field cron expression, checked by the parser that will run it."""
    expression = " ".join(text.split())
    try:
        CronSim(expression, datetime(2026, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        raise ValueError(f"not a cron expression ({exc}), e.g. '0 8 * * mon-fri'") from exc
    return expression
