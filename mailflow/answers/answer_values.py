"""One organisation's answer as a value: the same type from the reply
grammar (or the web form) to the pending row and to the recorded answer,
so nothing converts it on the way."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from mailflow.answers.statuses import AnswerStatus


@dataclass(frozen=True)
class AnswerValue:
    """What a person says for one organisation.  Whether the further
    information is enough for the status is checked in one place,
    :func:`mailflow.answers.recording.validate_further_information`."""

    # The organisation's code: what a reply names and what a page shows.
    organisation: str
    status: AnswerStatus
    # The reply line it was read from, so the reply grammar can name it in
    # a problem; None when it came from a page.
    line: int | None = None
    note: str | None = None
    reason: str | None = None
    mitigations: str | None = None
    expected_on: date | None = None
    # The next update (in progress) or review (unable) the person asked
    # for; None to take the default (mailflow.answers.update_dates).
    next_update_on: date | None = None
