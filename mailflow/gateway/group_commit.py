"""Storing received messages on one thread of their own, committing
whatever arrived together in one transaction (the SMTP edge's hot path)."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future

from mailflow.core.runtime import Runtime
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
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple[Received, Future[int]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="smtpd-store", daemon=True)
        self._thread.start()

    def submit(self, received: Received) -> Future[int]:
        future: Future[int] = Future()
        self._queue.put((received, future))
        return future

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stopping = False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            self._commit(batch)
            if stopping:
                return

    def _commit(self, batch: list[tuple[Received, Future[int]]]) -> None:
        try:
            with self.runtime.sessions.begin() as session:
                ids = store_received_messages(
                    session, [received for received, _ in batch], now=self.runtime.clock()
                )
        except Exception as exc:
            if len(batch) > 1:
                # One message must not take others down with it: each on
                # its own, so only a message that cannot be stored fails.
                for item in batch:
                    self._commit([item])
                return
            _settle(batch[0][1], error=exc)
            return
        for (_, future), message_id in zip(batch, ids, strict=True):
            _settle(future, result=message_id)


def _settle(future: Future[int], *, result: int = 0, error: Exception | None = None) -> None:
    """Tell the session how its message fared, unless it is gone: a client
    that hangs up while its message is stored cancels the future, and
    setting it then would raise here and end the thread that stores
    everyone's mail.  (The message stays stored; a retry is a duplicate the
    processing job recognises.)"""
    if future.set_running_or_notify_cancel():
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
