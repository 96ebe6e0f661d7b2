"""When to chase, worked out from settings and the time alone (no I/O, the
clock is an argument): reminder points, working hours, the auditors'
follow-up days, and when an answer's next update is due."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim

from mailflow.answers.statuses import AnswerStatus
from mailflow.answers.update_dates import UpdateDates
from mailflow.config import Settings
from mailflow.core.models import Severity
from mailflow.schedule_values import WorkingDays, WorkingHours

# A chaser's step names the round of answers it belongs to, so an update
# that asks for answers again chases afresh: "r1:24h", "r2:deadline".
DEADLINE_STEP = "deadline"


def step_name(round_: int, step: str) -> str:
    return f"r{round_}:{step}"


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

    def reminder_step(
        self, severity: Severity, round_: int, deadline: datetime, now: datetime
    ) -> ReminderStep | None:
        """The latest reminder point that has passed, if the deadline has
        not; None when no reminder is due now (quiet hours included)."""
        points = self.reminder_hours.get(severity, ())
        passed = [h for h in points if deadline - timedelta(hours=h) <= now]
        if now >= deadline or not passed or not self.is_working_time(now):
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

    def next_update_on(
        self,
        status: AnswerStatus,
        *,
        answered_at: datetime,
        expected_on: date | None,
        asked_on: date | None = None,
    ) -> date | None:
        """When an answer's next update (in progress) or review (unable) is
        due: the date the person asked for, else the expected date if it is
        still ahead, else the configured number of days after the answer;
        None for final ones.  The rule lives with the answers, which record
        it (:class:`mailflow.answers.update_dates.UpdateDates`)."""
        dates = UpdateDates(self.zone, self.update_days, self.review_days)
        return dates.next_update_on(
            status, answered_at=answered_at, expected_on=expected_on, asked_on=asked_on
        )

    def after_chasing(self, status: str, today: date) -> date:
        """When to chase again after an update or review chaser today."""
        days = self.update_days if status == AnswerStatus.IN_PROGRESS else self.review_days
        return today + timedelta(days=days)
