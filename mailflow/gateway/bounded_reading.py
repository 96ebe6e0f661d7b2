"""Reading inbound mail in child processes, with a bound on the time any
one message may take (invariant 7).

The size limits in ``mail.raw_headers`` keep the known slow paths of the
``email`` package away, but a Python thread cannot be stopped once a parser
is spinning in it, and a parser has more slow paths than anyone has found.
So each message is read by a child process that is killed when it takes
longer than ``MAILFLOW_INBOUND_READ_SECONDS``; the job then marks the
message failed with that reason, and nobody else waited for it.

Children come from a fork server (forking this multi-threaded process
itself could copy a held lock) with the reading code already imported, and
are kept for the next message, so a normal message costs one round trip
over a pipe.  As with any use of multiprocessing, a script that processes
inbound mail must keep its top-level code under ``if __name__ ==
"__main__":`` (the ``mailflow`` command and pytest do).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
from multiprocessing.connection import Connection
from typing import Any

from mailflow.gateway.reading import InboundReading, read_inbound

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["mailflow.gateway.reading"])
STOP_SECONDS = 2.0


class ReadingTookTooLong(Exception):
    """A message took longer to read than the bound allows."""


def _serve(connection: Connection) -> None:
    """The child: read each message sent, until told to stop."""
    while True:
        try:
            request = connection.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        connection.send(read_inbound(**request))


class _Child:
    def __init__(self) -> None:
        ours, theirs = _CONTEXT.Pipe()
        self.process = _CONTEXT.Process(
            target=_serve, args=(theirs,), name="mailflow-reader", daemon=True
        )
        self.process.start()
        theirs.close()
        self.connection = ours

    def read(self, request: dict[str, Any], seconds: float) -> InboundReading:
        self.connection.send(request)
        if not self.connection.poll(seconds):
            raise ReadingTookTooLong(f"reading the message took longer than {seconds:g} s")
        reading = self.connection.recv()
        assert isinstance(reading, InboundReading)
        return reading

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.send(None)
        self.process.join(STOP_SECONDS)
        self.kill()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.process.close()
        self.connection.close()


class BoundedReader:
    """``read_inbound`` in a child process, at most ``seconds`` a message.
    Safe to use from several threads: each takes a child of its own."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._idle: list[_Child] = []
        self._lock = threading.Lock()

    def read(
        self, raw: bytes, *, envelope_from: str | None, source: str, authserv_id: str | None
    ) -> InboundReading:
        """The reading, or ReadingTookTooLong (the child is then killed)."""
        with self._lock:
            child = self._idle.pop() if self._idle else None
        if child is None:
            child = _Child()
        request = {
            "raw": raw,
            "envelope_from": envelope_from,
            "source": source,
            "authserv_id": authserv_id,
        }
        try:
            reading = child.read(request, self.seconds)
        except BaseException:
            child.kill()
            raise
        with self._lock:
            self._idle.append(child)
        return reading

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for child in idle:
            child.stop()
