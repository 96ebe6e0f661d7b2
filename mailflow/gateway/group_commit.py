"""Storing received messages on one thread of their own, committing
whatever arrived together in one transaction (the SMTP edge's hot path)."""

from __future__ import annotations

import asyncio

from mailflow.core.runtime import Runtime
from mailflow.gateway.batching import BatchThread
from mailflow.gateway.inbound_messages import Received, store_received_messages

# At most this many messages in one commit.
GROUP_COMMIT_MAX = 64


class GroupCommitter:
    """Stores messages on one thread, committing together whatever arrived
    while the previous commit ran (group commit).  Each sender still hears
    250 only after the commit that holds its message; one commit per
    message, with SMTP sessions queueing for SQLite's write lock, was most
    of the cost of receiving."""

    def __init__(self, runtime: Runtime, *, max_batch: int = GROUP_COMMIT_MAX) -> None:
        self.runtime = runtime
        self._thread: BatchThread[Received, int] = BatchThread(
            "smtpd-store", self._commit, max_batch=max_batch
        )

    def submit(self, received: Received) -> asyncio.Future[int]:
        """On the event loop: the new message's id, once committed."""
        return self._thread.submit(received)

    def stop(self) -> None:
        self._thread.stop()

    def _commit(self, batch: list[Received]) -> list[int | BaseException]:
        try:
            with self.runtime.sessions.begin() as session:
                return list(store_received_messages(session, batch, now=self.runtime.clock()))
        except Exception as exc:
            if len(batch) == 1:
                return [exc]
        # One message must not take others down with it: each on its own,
        # so only a message that cannot be stored fails.
        return [outcome for received in batch for outcome in self._commit([received])]
