"""Calling a function in child processes, with a bound on the time any one
call may take (invariant 7).

A Python thread cannot be stopped once a parser is spinning in it, and a
parser of untrusted input has more slow paths than anyone has found.  So
the call runs in a child process that is killed when it takes longer than
its bound; the caller then records that reason, and nobody else waited.

Children come from a fork server (forking this multi-threaded process
itself could copy a held lock) with the function's module already
imported, and are kept for the next call, so a normal call costs one round
trip over a pipe.  As with any use of multiprocessing, a script that makes
such calls must keep its top-level code under ``if __name__ ==
"__main__":`` (the ``mailflow`` command and pytest do).  The function must
be a module-level function (it is sent to the child by name), and its
arguments and result must pickle.

The mail gateway reads inbound mail this way (``gateway.bounded_reading``);
the core only knows how to run a function, not which one.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, Generic, TypeVar

_CONTEXT = multiprocessing.get_context("forkserver")
STOP_SECONDS = 2.0
# How long a new child may take to start: not part of any call's bound,
# which is for the function alone (on a loaded machine a child can take
# seconds to start, and a bound that counted it failed good input, killed
# the child, and made the next call wait for a new one again).
START_SECONDS = 120.0
_READY = "ready"

Result = TypeVar("Result")


class TookTooLong(Exception):
    """A call took longer than its bound allows."""


class ChildDidNotStart(Exception):
    """A child process did not start within START_SECONDS."""


def _serve(connection: Connection, function: Callable[..., Any]) -> None:
    """The child: say it is ready, then make each call sent, until told to
    stop."""
    connection.send(_READY)
    while True:
        try:
            request = connection.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        connection.send(function(**request))


class _Child:
    def __init__(self, function: Callable[..., Any]) -> None:
        ours, theirs = _CONTEXT.Pipe()
        self.process = _CONTEXT.Process(
            target=_serve, args=(theirs, function), name="mailflow-bounded", daemon=True
        )
        self.process.start()
        theirs.close()
        self.connection = ours
        self._ready = False

    def call(self, request: dict[str, Any], seconds: float) -> object:
        if not self._ready:
            if not self.connection.poll(START_SECONDS):
                raise ChildDidNotStart(f"no child process within {START_SECONDS:g} s")
            self._ready = self.connection.recv() == _READY
        self.connection.send(request)
        if not self.connection.poll(seconds):
            raise TookTooLong(f"took longer than {seconds:g} s")
        result: object = self.connection.recv()
        return result

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


class BoundedCalls(Generic[Result]):
    """``function`` in a child process, at most ``seconds`` a call.  Safe
    to use from several threads: each takes a child of its own."""

    def __init__(
        self, function: Callable[..., Result], result: type[Result], seconds: float
    ) -> None:
        self.function = function
        self.result = result
        self.seconds = seconds
        self._idle: list[_Child] = []
        self._lock = threading.Lock()
        # Only heeded before the fork server starts: the first caller's
        # module is the one children start with.
        _CONTEXT.set_forkserver_preload([function.__module__])

    def call(self, **arguments: Any) -> Result:
        """The function's result, or TookTooLong (the child is then killed)."""
        with self._lock:
            child = self._idle.pop() if self._idle else None
        if child is None:
            child = _Child(self.function)
        try:
            result = child.call(arguments, self.seconds)
        except BaseException:
            child.kill()
            raise
        with self._lock:
            self._idle.append(child)
        assert isinstance(result, self.result)
        return result

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for child in idle:
            child.stop()
