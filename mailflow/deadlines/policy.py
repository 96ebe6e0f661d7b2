"""When to chase, worked out from settings and the time alone (no I/O, the
clock is an argument): reminder points, working hours, the auditors'
follow-up days, and when an answer's next update is due."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim

from mailflow.answers.statuses import AnswerStatus
from mailflow.config import Settings
from mailflow.core.models import Severity
from mailflow.schedule_values import WorkingDays, WorkingHours

# A chaser's step names the round of answers it belongs to, so an update
# that asks for answers again chases afresh: "r1:24h", "r2:deadline".
DEADLINE_STEP = "deadline"
# No reminder within this long of the alert (or of a round asking for
# answers again): its fan-out may still be going out.
REMINDER_GRACE = timedelta(hours=1)


def step_name(round_: int, step: str) -> str:
    return f"r{round_}:{step}"


def round_of(step: str) -> int:
    """The round a step name belongs to ("r2:24h" -> 2)."""
    return int(step.split(":", 1)[0].removeprefix("r"))


@dataclass(frozen=True)
class ReminderStep:
    """The reminder that is due: its hours before the deadline, and every
    step name that, already sent, means it is not (itself and the later
    points: after a 4-hour reminder a 24-hour one is pointless)."""

    hours: int
    name: str
    covered_by: tuple[str, ...]


@dataclass(frozen=True)
class ChasePolicy:
    zone: ZoneInfo
    reminder_hours: dict[Severity, tuple[int, ...]]
    update_days: int
    review_days: int
    working_hours: WorkingHours
    working_days: WorkingDays
    follow_up_schedule: str

    @classmethod
    def of(cls, settings: Settings) -> ChasePolicy:
        return cls(
            zone=settings.zone,
            reminder_hours={
                Severity.CRITICAL: settings.reminder_hours_critical,
                Severity.HIGH: settings.reminder_hours_high,
            },
            update_days=settings.update_days,
            review_days=settings.unable_review_days,
            working_hours=settings.working_hours,
            working_days=settings.working_days,
            follow_up_schedule=settings.follow_up_schedule,
        )

    def local(self, moment: datetime) -> datetime:
        return moment.astimezone(self.zone)

    def today(self, now: datetime) -> date:
        return self.local(now).date()

    def is_working_time(self, now: datetime) -> bool:
        """Whether reminders and update chasers may go out now.  Worked out
        on the local wall clock, so a change to or from summer time moves
        nothing: 08:00 is 08:00 on either side of it."""
        local = self.local(now)
        return local.weekday() in self.working_days and local.time() in self.working_hours

    def _hours_on(self, day: date) -> tuple[datetime, datetime]:
        start, end = self.working_hours.start, self.working_hours.end
        return datetime.combine(day, start, self.zone), datetime.combine(day, end, self.zone)

    def next_working_time(self, moment: datetime) -> datetime | None:
        """The first moment at or after ``moment`` in working hours."""
        first = self.today(moment)
        for day in (first + timedelta(days=n) for n in range(15)):
            start, end = self._hours_on(day)
            if day.weekday() in self.working_days and moment < end:
                return max(moment, start)
        return None

    def last_working_hour(self, moment: datetime) -> datetime | None:
        """The last working hour that starts before ``moment`` (the hour
        before the end of the latest working day's hours), for a reminder
        that cannot wait for the next working morning."""
        last = self.today(moment)
        for day in (last - timedelta(days=n) for n in range(15)):
            start, end = self._hours_on(day)
            hour = max(start, end - timedelta(hours=1))
            if day.weekday() in self.working_days and hour < moment:
                return hour
        return None

    def reminder_time(self, point: datetime, deadline: datetime) -> datetime | None:
        """When a reminder for ``point`` goes out: then, in working hours;
        else the next working morning; or, when that would be after the
        deadline (a Monday 07:30 deadline), the last working hour before."""
        at = self.next_working_time(point)
        if at is None or at >= deadline:
            at = self.last_working_hour(point)
        return at

    def reminder_step(
        self,
        severity: Severity,
        round_: int,
        deadline: datetime,
        now: datetime,
        *,
        started_at: datetime | None = None,
    ) -> ReminderStep | None:
        """The latest reminder point whose time has come, if the deadline
        has not; None when no reminder is due now (quiet hours included).
        A point within ``REMINDER_GRACE`` of the round's start (a short
        deadline) is skipped: the alert itself has only just gone out."""
        if now >= deadline or not self.is_working_time(now):
            return None
        points = self.reminder_hours.get(severity, ())
        passed = []
        for hours in points:
            at = self.reminder_time(deadline - timedelta(hours=hours), deadline)
            if at is None or (started_at is not None and at < started_at + REMINDER_GRACE):
                continue
            if at <= now:
                passed.append(hours)
        if not passed:
            return None
        hours = min(passed)
        return ReminderStep(
            hours=hours,
            name=step_name(round_, f"{hours}h"),
            covered_by=tuple(step_name(round_, f"{h}h") for h in points if h <= hours),
        )

    def follow_up_day(self, deadline: datetime, now: datetime) -> date | None:
        """The local day of the latest follow-up time (the cron schedule)
        at or before ``now``, when it falls on a later day than the
        deadline's; None before the first."""
        start = now.astimezone(self.zone).replace(second=0, microsecond=0) + timedelta(minutes=1)
        latest = next(CronSim(self.follow_up_schedule, start, reverse=True))
        day = latest.astimezone(self.zone).date()
        return day if day > self.today(deadline) else None

    def after_chasing(self, status: str, today: date) -> date:
        """When to chase again after an update or review chaser today."""
        days = self.update_days if status == AnswerStatus.IN_PROGRESS else self.review_days
        return today + timedelta(days=days)
