"""When an answer that is not final is next owed: its next update (in
progress) or review (unable).  Worked out from the settings and the time
alone (no I/O, the clock is an argument), so the recording, the pages,
the reply grammar and the scheduler's chasing policy
(:mod:`mailflow.deadlines.policy`, which delegates here) agree on it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from mailflow.answers.statuses import AnswerStatus
from mailflow.config import Settings

# How far ahead a person may put their next update: further than this is
# a typing slip (a wrong year), and would silence the chasing for good.
LONGEST_AHEAD = timedelta(days=366)
OWES_UPDATES = (AnswerStatus.IN_PROGRESS, AnswerStatus.UNABLE)


def what_is_due(status: AnswerStatus) -> str:
    """What the date is called for this status: "next update" or "review"."""
    return "review" if status is AnswerStatus.UNABLE else "next update"


def next_update_problem(status: AnswerStatus, asked_on: date, today: date) -> str | None:
    """Why a date a person asked for cannot be their next update (or
    review), or None when it can: from tomorrow to a year ahead (an update
    due today would be chased the moment it was recorded)."""
    what = what_is_due(status)
    if asked_on < today:
        return f"the {what} date {_day(asked_on)} has passed: give a later date"
    if asked_on == today:
        return f"the {what} date {_day(asked_on)} is today: give a later date"
    if asked_on > today + LONGEST_AHEAD:
        return f"the {what} date {_day(asked_on)} is more than a year ahead: give an earlier date"
    return None


def _day(value: date) -> str:
    return f"{value.day} {value:%B %Y}"


@dataclass(frozen=True)
class UpdateDates:
    zone: ZoneInfo
    update_days: int
    review_days: int

    @classmethod
    def of(cls, settings: Settings) -> UpdateDates:
        return cls(settings.zone, settings.update_days, settings.unable_review_days)

    def today(self, now: datetime) -> date:
        """The local date: people are told days, on the service's clock."""
        return now.astimezone(self.zone).date()

    def next_update_on(
        self,
        status: AnswerStatus,
        *,
        answered_at: datetime,
        expected_on: date | None,
        asked_on: date | None = None,
    ) -> date | None:
        """When the answer's next update (in progress) or review (unable)
        is due: the date the person asked for; else, in progress, the
        expected completion date if it is still ahead; else the configured
        number of days after the answer.  None for final answers."""
        if status not in OWES_UPDATES:
            return None
        if asked_on is not None:
            return asked_on
        answered_on = self.today(answered_at)
        if status is AnswerStatus.UNABLE:
            return answered_on + timedelta(days=self.review_days)
        if expected_on is not None and expected_on > answered_on:
            # An expected date years ahead (a wrong year, or a long project)
            # must not silence the chasing: an update is owed within a year.
            return min(expected_on, answered_on + LONGEST_AHEAD)
        return answered_on + timedelta(days=self.update_days)
