"""Running an edge as N processes (``--processes N``): a parent that starts
the children, replaces one that dies, and stops them all on SIGTERM or
Ctrl-C.  Each child is the ordinary single-process command, run with its
own interpreter (nothing is forked from a parent holding database
connections or threads); processes that serve one port each listen on it
with SO_REUSEPORT, and the kernel spreads connections among them.

Use::

    sock = reserve_shared_port(host, port)  # fails now if it cannot be bound
    children = ChildProcesses("smtpd", lambda i: [...argv of child i...], count)
    sys.exit(children.run())

``run`` returns once every child has stopped, after a signal."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

log = logging.getLogger("mailflow")

# A child that ran at least this long had been working: it is replaced
# after the shortest delay.  One that dies sooner is replaced after twice
# the last delay, up to the longest, so a child that cannot start does
# not spin.
STEADY_SECONDS = 10.0
FIRST_RESTART_SECONDS = 0.5
LONGEST_RESTART_SECONDS = 30.0
# How long children get to stop after SIGTERM (the smtpd lets messages
# being stored finish, up to 10 s) before they are killed.
STOP_SECONDS = 30.0
# Set in each child's environment: a child whose parent is gone stops.
PARENT_PID_VARIABLE = "MAILFLOW_PARENT_PID"


def reserve_shared_port(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) with SO_REUSEPORT but not listening,
    which children then listen on too; it keeps the port (and, for port 0,
    the number chosen) for the parent's lifetime.  Raises OSError if
    anything already has the port, even another set of such children."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # Without SO_REUSEPORT, binding fails if anyone has the port.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        port = probe.getsockname()[1]
    held = socket.socket(family, socket.SOCK_STREAM)
    try:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        held.bind((host, port))
    except OSError:
        held.close()
        raise
    return held


def parent_is_gone() -> bool:
    """In a child started by :class:`ChildProcesses`: whether its parent
    has died (the child then stops rather than serve unsupervised)."""
    expected = os.environ.get(PARENT_PID_VARIABLE)
    return expected is not None and os.getppid() != int(expected)


@dataclass
class _Child:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float = 0.0
    delay: float = 0.0


class ChildProcesses:
    """``count`` children, child i running ``command(i)`` (an argv), watched
    until SIGTERM or SIGINT; ``name`` is what the log calls them."""

    def __init__(
        self,
        name: str,
        command: Callable[[int], list[str]],
        count: int,
        *,
        stop_seconds: float = STOP_SECONDS,
    ) -> None:
        self.name = name
        self.command = command
        self.stop_seconds = stop_seconds
        self._children = [_Child(i) for i in range(count)]
        self._stopping = threading.Event()

    def run(self) -> int:
        """Start the children, watch them until a signal, stop them; 0 if
        every child stopped cleanly, else 1."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for child in self._children:
            self._start(child)
        log.info("started %d %s processes", len(self._children), self.name)
        while not self._stopping.wait(0.1):
            self._watch()
        return self._stop_all()

    def stop(self) -> None:
        self._stopping.set()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("received signal %s: stopping the %s processes", signum, self.name)
        self._stopping.set()

    def _start(self, child: _Child) -> None:
        env = {**os.environ, PARENT_PID_VARIABLE: str(os.getpid())}
        # Ctrl-C in a terminal reaches the children too; each stops itself.
        # The argv is the caller's own, with no shell in between.
        child.process = subprocess.Popen(self.command(child.index), env=env)  # noqa: S603
        child.started_at = time.monotonic()

    def _watch(self) -> None:
        now = time.monotonic()
        for child in self._children:
            process = child.process
            if process is None:
                if now >= child.restart_at:
                    self._start(child)
                continue
            code = process.poll()
            if code is None:
                continue
            steady = now - child.started_at >= STEADY_SECONDS
            child.delay = (
                FIRST_RESTART_SECONDS
                if steady or not child.delay
                else min(child.delay * 2, LONGEST_RESTART_SECONDS)
            )
            child.process, child.restart_at = None, now + child.delay
            log.warning(
                "%s process %d (pid %d) exited with code %s; starting another in %.1fs",
                self.name,
                child.index + 1,
                process.pid,
                code,
                child.delay,
            )

    def _stop_all(self) -> int:
        running = [c.process for c in self._children if c.process is not None]
        for process in running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_seconds
        clean = True
        for process in running:
            try:
                code = process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("%s process (pid %d) did not stop: killed", self.name, process.pid)
                process.kill()
                code = process.wait()
            clean = clean and code == 0
        log.info("%s processes stopped", self.name)
        return 0 if clean else 1


def child_argv(*arguments: str) -> list[str]:
    """The argv that runs ``mailflow ARGUMENTS`` with this interpreter."""
    return [sys.executable, "-m", "mailflow", *arguments]
