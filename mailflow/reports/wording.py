"""How figures are written, once, so the digest, its chart, the report
page and the command line say the same number the same way."""

from __future__ import annotations

from datetime import timedelta

MINUTES_PER_HOUR = 60
HOURS_PER_DAY = 24


def percent(part: int, whole: int) -> str:
    """'67%', rounded to the nearest whole per cent (halves to even), but
    never to 0% or 100% unless it is: 1 of 200 is '<1%' and 199 of 200
    '>99%', so nobody reads "all answered" while one has not.  '-' when
    there is nothing to be a share of."""
    if not whole:
        return "-"
    share = 100 * part / whole
    if 0 < share < 1:
        return "<1%"
    if 99 < share < 100:
        return ">99%"
    return f"{share:.0f}%"


def human_duration(value: timedelta | None) -> str:
    """'40 min', '5 h', '2 d', '1 d 3 h' (whole units, rounded down);
    'none yet' when nobody has answered."""
    if value is None:
        return "none yet"
    minutes = max(0, int(value.total_seconds() // 60))
    if minutes < MINUTES_PER_HOUR:
        return f"{minutes} min"
    days, hours = divmod(minutes // MINUTES_PER_HOUR, HOURS_PER_DAY)
    if not days:
        return f"{hours} h"
    return f"{days} d" if not hours else f"{days} d {hours} h"
