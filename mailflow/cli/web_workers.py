"""`mailflow web --workers N`: N forked processes, each a whole uvicorn
server with its own database pool, accepting on the one socket the parent
bound.  The parent only supervises: it replaces a worker that dies and,
on SIGTERM or SIGINT, passes SIGTERM on (each worker finishes its requests
in flight) and waits for them all."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger("mailflow")

# A worker that ends this soon after it started may be failing to start:
# it is replaced after a growing delay, so it cannot spin.  A worker
# exits with NEVER_SERVED when uvicorn never served (the app cannot be
# built): replacing it would not help, and the command stops.
QUICK_DEATH_SECONDS = 1.0
FIRST_RESTART_SECONDS = 0.5
LONGEST_RESTART_SECONDS = 30.0
NEVER_SERVED = 3
STOP_SECONDS = 30.0


# serve(sock, slot): a worker's slot is 0 to N-1, and a replacement takes
# the slot of the worker it replaces (its metrics port is the slot's).
Serve = Callable[[socket.socket, int], bool]


def run_workers(serve: Serve, sock: socket.socket, workers: int) -> bool:
    """Run ``serve(sock, slot)`` (True if it served) in ``workers`` forked
    processes until SIGTERM or SIGINT; False if a worker could not start."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, _setter(stop)) for sig in (signal.SIGTERM, signal.SIGINT)}
    children: dict[int, float] = {}
    slots: dict[int, int] = {}
    healthy = True
    delay = 0.0
    try:
        for slot in range(workers):
            pid = _start(serve, sock, slot, previous)
            children[pid], slots[pid] = time.monotonic(), slot
        while not stop.wait(0.2):
            for pid, status in _reap(children):
                started = children.pop(pid)
                code = os.waitstatus_to_exitcode(status)
                if code == NEVER_SERVED:
                    log.error("web worker %s could not start (exit %s); stopping", pid, code)
                    healthy = False
                    stop.set()
                    break
                # One that dies soon after it started (killed, or failing
                # as it begins) is replaced ever more slowly, never in a
                # tight loop; one that had been serving, at once.
                quick = time.monotonic() - started < QUICK_DEATH_SECONDS
                delay = min(2 * delay or FIRST_RESTART_SECONDS, LONGEST_RESTART_SECONDS)
                delay = delay if quick else 0.0
                log.warning(
                    "web worker %s ended (exit %s); starting another in %.1fs", pid, code, delay
                )
                if delay and stop.wait(delay):
                    break
                slot = slots.pop(pid)
                new = _start(serve, sock, slot, previous)
                children[new], slots[new] = time.monotonic(), slot
    finally:
        _stop_all(children)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return healthy


def _setter(stop: threading.Event) -> Callable[[int, FrameType | None], None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    return handler


def _start(
    serve: Serve, sock: socket.socket, slot: int, handlers: dict[signal.Signals, Any]
) -> int:
    pid = os.fork()
    if pid:
        return pid
    # The child: uvicorn installs its own handlers for SIGTERM and SIGINT
    # while it runs; until then the parent's defaults apply.
    code = NEVER_SERVED
    try:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        code = 0 if serve(sock, slot) else NEVER_SERVED
    except KeyboardInterrupt:
        code = 0
    except BaseException:
        log.exception("web worker failed")
        code = 1
    finally:
        # Skips the parent's exit handlers and its inherited cleanup.
        logging.shutdown()
        os._exit(code)


def _reap(children: dict[int, float]) -> list[tuple[int, int]]:
    ended = []
    for pid in list(children):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            ended.append((pid, status))
    return ended


def _stop_all(children: dict[int, float]) -> None:
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    while children and time.monotonic() < deadline:
        for pid, _ in _reap(children):
            children.pop(pid)
        time.sleep(0.05)
    for pid in children:
        log.error("web worker %s did not stop in %.0fs; killing it", pid, STOP_SECONDS)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
