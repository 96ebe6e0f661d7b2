"""The scheduler edge: one pass of the work that falls due with time
(mailflow/workers/periodic.py) every ``MAILFLOW_SCHEDULER_SECONDS``, by
whichever scheduler leads.

What is due is always worked out from the database, and every chaser is
a row with a unique key written with its emails and its job, so two
passes at once, or a pass again after a crash, do each thing once: that
is the guarantee.  Leading only keeps the schedulers of a deployment
from doing the same work twice over and then throwing one copy away.

On PostgreSQL, the leader holds a session-level advisory lock on a
connection of its own for as long as it lives; the others poll for it.
On SQLite there is one machine and its write lock already takes passes
in turn (and overlapping passes would be safe anyway), so nobody waits.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Protocol

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from mailflow.core.runtime import Runtime
from mailflow.core.scheduling import Task
from mailflow.db.engine import make_engine
from mailflow.workers.periodic import run_pass

log = logging.getLogger(__name__)

# The advisory lock key of the leading scheduler: "mailflow" in ASCII, as a
# signed 64-bit number (other users of the database must not pick it).
LEADER_LOCK_KEY = int.from_bytes(b"mailflow", "big", signed=True)
# How often a waiting scheduler asks for the lock again.
LEAD_POLL_SECONDS = 2.0


class Leadership(Protocol):
    def lead(self, stop: threading.Event, *, timeout: float | None = None) -> bool:
        """Hold the lead, waiting for it as long as needed (or ``timeout``
        seconds); False when stopped or out of time first."""

    def release(self) -> None:
        """Let the next scheduler lead."""


class Everyone:
    """SQLite: every scheduler leads (see the module's docstring)."""

    def lead(self, stop: threading.Event, *, timeout: float | None = None) -> bool:
        return not stop.is_set()

    def release(self) -> None:
        pass


class AdvisoryLock:
    """The lead on PostgreSQL: ``pg_advisory_lock`` is held by a database
    session, so it is kept on a dedicated connection, outside the pool and
    outside any transaction, and lost only with that connection."""

    def __init__(
        self, database_url: str, *, key: int = LEADER_LOCK_KEY, poll: float = LEAD_POLL_SECONDS
    ) -> None:
        self.key = key
        self.poll = poll
        self._engine: Engine = make_engine(database_url, poolclass=NullPool)
        self._connection: Connection | None = None

    def lead(self, stop: threading.Event, *, timeout: float | None = None) -> bool:
        if stop.is_set():
            return False
        if self._connection is not None:
            if self._still_connected(self._connection):
                return True
            log.warning("the scheduler lost its connection and the lead with it; asking again")
            self._drop()
        give_up = None if timeout is None else time.monotonic() + timeout
        said_waiting = False
        while not stop.is_set():
            if self._try():
                if said_waiting:
                    log.info("this scheduler leads now")
                return True
            if not said_waiting:
                log.info("another scheduler leads (advisory lock %s); waiting", self.key)
                said_waiting = True
            if give_up is not None and time.monotonic() >= give_up:
                return False
            pause = self.poll if give_up is None else min(self.poll, give_up - time.monotonic())
            stop.wait(max(pause, 0.0))
        return False

    def release(self) -> None:
        if self._connection is not None:
            # If the connection is gone, the lock went with it.
            with contextlib.suppress(DBAPIError):
                self._connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
            self._drop()
        self._engine.dispose()

    def _try(self) -> bool:
        try:
            connection = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except DBAPIError:
            log.warning("cannot reach the database to lead; trying again", exc_info=True)
            return False
        try:
            got = connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key})
        except DBAPIError:
            log.warning("cannot ask for the lead; trying again", exc_info=True)
            connection.close()
            return False
        if not got:
            connection.close()
            return False
        self._connection = connection
        return True

    @staticmethod
    def _still_connected(connection: Connection) -> bool:
        try:
            connection.execute(text("SELECT 1"))
        except DBAPIError:
            return False
        return True

    def _drop(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(DBAPIError):
                self._connection.invalidate()
                self._connection.close()
            self._connection = None


def leadership_for(runtime: Runtime) -> Leadership:
    if runtime.engine.dialect.name == "postgresql":
        return AdvisoryLock(runtime.settings.database_url)
    return Everyone()


class Scheduler:
    """Wait to lead, run a pass as at the runtime's clock, log each line,
    sleep, again; until ``stop`` is set.  `mailflow scheduler` runs it in
    the foreground, `mailflow serve` in a thread of its own."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        interval: float | None = None,
        leadership: Leadership | None = None,
        tasks: tuple[tuple[str, Task], ...] | None = None,
    ) -> None:
        self.runtime = runtime
        self.interval = runtime.settings.scheduler_seconds if interval is None else interval
        self.leadership = leadership if leadership is not None else leadership_for(runtime)
        self.tasks = tasks
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run(self, stop: threading.Event | None = None) -> None:
        stop = self._stop if stop is None else stop
        try:
            while self.leadership.lead(stop):
                self.run_pass()
                stop.wait(self.interval)
        finally:
            self.leadership.release()

    def run_pass(self) -> None:
        try:
            for line in run_pass(self.runtime, self.runtime.clock(), self.tasks):
                log.info("%s", line)
        except Exception:
            # run_pass logs a failing task itself; this is the database
            # being away before any task ran.  The next pass tries again.
            log.exception("the scheduler pass failed")

    # `mailflow serve` starts and stops it beside the other edges.
    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
