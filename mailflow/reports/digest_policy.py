"""When an auditor's digest falls due, worked out from the settings and the
time alone (no I/O; the clock is an argument).

A schedule is a cron expression on the local clock (``MAILFLOW_TIMEZONE``),
so a digest at 08:00 goes at 08:00 on both sides of a clock change.  The
period due at ``now`` is the schedule's latest time at or before ``now``,
kept in UTC as ``Digest.period_at``: every pass in that period finds the
same one, and the unique key (auditor, period) makes it one row.

After downtime only the latest period is due: the periods missed while
mailflow was down are never sent as a backlog, and the latest goes late,
once, with the figures as they stand when it is composed (a digest says
how things are now; older figures would be out of date on arrival)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim

from mailflow.config import Settings
from mailflow.core.models import DigestSchedule


@dataclass(frozen=True)
class DigestPolicy:
    zone: ZoneInfo
    daily: str
    weekly: str

    @classmethod
    def of(cls, settings: Settings) -> DigestPolicy:
        return cls(zone=settings.zone, daily=settings.digest_daily, weekly=settings.digest_weekly)

    def period_at(self, schedule: DigestSchedule, now: datetime) -> datetime | None:
        """The start (UTC) of the schedule's period at ``now``: its latest
        time at or before ``now``.  None for an auditor who wants none."""
        expression = {DigestSchedule.DAILY: self.daily, DigestSchedule.WEEKLY: self.weekly}.get(
            schedule
        )
        if expression is None:
            return None
        # cronsim's reverse walk starts strictly before its start: begin a
        # minute on, so that a time on the schedule is its own period.
        start = now.astimezone(self.zone).replace(second=0, microsecond=0) + timedelta(minutes=1)
        return next(CronSim(expression, start, reverse=True)).astimezone(UTC)

    def periods_at(self, now: datetime) -> dict[DigestSchedule, datetime]:
        """The period of each schedule that sends digests, at ``now``."""
        periods = {schedule: self.period_at(schedule, now) for schedule in DigestSchedule}
        return {schedule: at for schedule, at in periods.items() if at is not None}
