"""Leases that a worker renews while it lives.

A worker that takes rows to work on (emails to send, jobs to run) holds
them until a time; a worker that dies leaves them to another once that
time has passed.  A short lease, renewed every quarter of it by the
worker that holds it, lets another take over within one lease of a crash,
however long the work itself takes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from datetime import datetime

from sqlalchemy import ColumnElement, update
from sqlalchemy.orm import InstrumentedAttribute, Session

# How many renewals fit in one lease: a renewal may come late by up to
# three quarters of a lease (a slow statement, a paused process) before
# another worker could take the rows.
RENEWALS_PER_LEASE = 4


def renew_lease(
    session: Session,
    lease: InstrumentedAttribute[datetime | None],
    ids: Collection[int],
    *,
    still_held: ColumnElement[bool],
    now: datetime,
    until: datetime,
) -> int:
    """Extend to ``until``, in one UPDATE, the lease of each of ``ids``
    that is still held (``still_held``: its row is still in the state a
    holder leaves it in) and has not yet run out.  A lease that has run
    out is not revived: another worker may have taken the row since.
    Returns how many were renewed."""
    if not ids:
        return 0
    model = lease.class_
    result = session.execute(
        update(model)
        .where(model.id.in_(list(ids)), still_held, lease >= now)
        .values({lease: until})
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


class Heartbeat:
    """When the next renewal of a lease of ``lease_seconds`` is due, on the
    monotonic clock (so a change of the wall clock neither rushes nor
    delays it)."""

    def __init__(
        self, lease_seconds: float, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = lease_seconds / RENEWALS_PER_LEASE
        self._monotonic = monotonic
        self._next = monotonic() + self.interval

    def due(self) -> bool:
        return self._monotonic() >= self._next

    def seconds_left(self) -> float:
        return max(0.0, self._next - self._monotonic())

    def beat(self) -> None:
        """A renewal was made: the next is due an interval from now."""
        self._next = self._monotonic() + self.interval
