"""What becomes of an email after one try at sending it: the one state
machine behind alert deliveries and one-off emails.  A relay's reply is
read once (by the transport) into an :class:`Outcome`; this module says
what that outcome means, and the two kinds of email record it in their
own tables."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

MAX_RETRY_DELAY = timedelta(hours=6)


class Outcome(enum.StrEnum):
    SENT = "sent"
    TEMPORARY = "temporary"  # 4xx or no connection: try again later
    PERMANENT = "permanent"  # 5xx: the relay will never take it


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    reply: str


class Step(enum.StrEnum):
    """Where one try leaves an email."""

    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"


@dataclass(frozen=True)
class SendPolicy:
    """How often, and how patiently, a temporary failure is tried again."""

    retry_base_seconds: float
    max_attempts: int

    def retry_delay(self, attempts: int) -> timedelta:
        """Exponential backoff: base, 2 x base, 4 x base ... up to six hours."""
        doubled = self.retry_base_seconds * 2 ** max(attempts - 1, 0)
        return min(timedelta(seconds=doubled), MAX_RETRY_DELAY)


@dataclass(frozen=True)
class NextState:
    step: Step
    # When to try again (deferred only).
    next_attempt_at: datetime | None
    # What went wrong, kept with the email (None once sent).
    error: str | None


def next_state(
    result: SendResult, *, attempts: int, now: datetime, policy: SendPolicy
) -> NextState:
    """The state one try leaves an email in.  ``attempts`` counts the tries
    so far, this one included: a temporary failure on the last allowed
    try fails the email."""
    if result.outcome is Outcome.SENT:
        return NextState(Step.SENT, None, None)
    if result.outcome is Outcome.PERMANENT:
        return NextState(Step.FAILED, None, result.reply)
    if attempts >= policy.max_attempts:
        return NextState(Step.FAILED, None, f"gave up after {attempts} attempts: {result.reply}")
    return NextState(Step.DEFERRED, now + policy.retry_delay(attempts), result.reply)
