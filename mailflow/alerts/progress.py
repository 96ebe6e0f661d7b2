"""How far an alert's emails have gone: sent, failed and still waiting, of
all of them; and when the next progress line is due.  Read by the worker
while it fans an alert out (a ``fanout_progress`` log line every few
seconds) and by ``mailflow alert show --watch``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from mailflow.alerts.deliveries import count_by_state
from mailflow.core.models import DeliveryState


@dataclass(frozen=True)
class FanoutProgress:
    # Taken by the relay (a bounce that came later counts: it was sent).
    sent: int
    failed: int
    total: int

    @property
    def waiting(self) -> int:
        """Queued, being sent, or deferred for a retry."""
        return self.total - self.sent - self.failed

    @property
    def done(self) -> bool:
        return self.waiting == 0


def fanout_progress(session: Session, *, alert_id: int) -> FanoutProgress:
    counts = count_by_state(session, alert_id=alert_id)
    return FanoutProgress(
        sent=counts[DeliveryState.SENT] + counts[DeliveryState.BOUNCED],
        failed=counts[DeliveryState.FAILED],
        total=sum(counts.values()),
    )


class ProgressPace:
    """Whether a progress line is due at ``now`` (the caller's clock): the
    first an interval after ``started_at``, then one an interval after
    the last."""

    def __init__(self, started_at: datetime, interval: timedelta) -> None:
        self.interval = interval
        self._last = started_at

    def due(self, now: datetime) -> bool:
        if now - self._last < self.interval:
            return False
        self._last = now
        return True
