"""Work for the SMTP edge's event loop done on a thread of its own, in
batches: whatever arrived while the last batch ran is handed over at once,
and the answers go back to the loop in one call.

Each hop between the loop and a thread costs a wake-up and a turn at the
GIL; with a pool thread per request and a callback per answer, those hops
took more of the edge's time than the database did (py-spy, issue 13).
Here a burst of N requests costs one wake-up each way."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Answer = TypeVar("Answer")

_Request = tuple[Item, asyncio.AbstractEventLoop, "asyncio.Future[Answer]"]
_Settled = tuple["asyncio.Future[Answer]", Answer | BaseException]


class BatchThread(Generic[Item, Answer]):
    """``run(items)`` on one thread for whatever was submitted together (at
    most ``max_batch`` items); it returns one answer or exception per item,
    in order.  ``submit`` is called on an event loop and returns that
    loop's future."""

    def __init__(
        self,
        name: str,
        run: Callable[[list[Item]], list[Answer | BaseException]],
        *,
        max_batch: int,
    ) -> None:
        self._run_batch = run
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Request[Item, Answer] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: Item) -> asyncio.Future[Answer]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()
        self._queue.put((item, loop, future))
        return future

    def stop(self) -> None:
        """Finish what was submitted, then end the thread."""
        self._queue.put(None)
        self._thread.join()

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stopping = False
            while len(batch) < self.max_batch:
                try:
                    request = self._queue.get_nowait()
                except queue.Empty:
                    break
                if request is None:
                    stopping = True
                    break
                batch.append(request)
            self._answer(batch)
            if stopping:
                return

    def _answer(self, batch: list[_Request[Item, Answer]]) -> None:
        try:
            outcomes = self._run_batch([item for item, _, _ in batch])
        except Exception as exc:  # run() should not raise; if it does, all fail
            outcomes = [exc] * len(batch)
        by_loop: dict[asyncio.AbstractEventLoop, list[_Settled[Answer]]] = {}
        for (_, loop, future), outcome in zip(batch, outcomes, strict=True):
            by_loop.setdefault(loop, []).append((future, outcome))
        for loop, settled in by_loop.items():
            # RuntimeError: the loop is closed, as the server stopped after
            # its grace period and hung up on these sessions.  (A stored
            # message stays stored; the sender's retry is a duplicate the
            # processing job recognises.)
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle_all, settled)


def _settle_all(settled: list[_Settled[Answer]]) -> None:
    """On the loop: tell each session how its request fared, unless it is
    gone (a client that hung up cancelled its future)."""
    for future, outcome in settled:
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
