"""Is this process ready to work: does the database answer (and the
broker, for the edges that use one)?  What /readyz reports.

Each check opens a fresh connection, never one from the process's pool:
a pooled connection can keep answering from a database file that has
been removed, or hide a server that no longer takes new connections.
Every check is bounded in time, so a database that hangs makes the
answer "not ready", not a probe that never returns.  The edges answer
through ``shared_readiness``: one check at a time, its answer shared by
the probes that arrive meanwhile and reused for a second, so a flood of
probes costs one connection a second and cannot make the answer 503.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import NullPool

from mailflow.config import Settings
from mailflow.settings_values import redact_url

CHECK_SECONDS = 3.0
# The most one readiness answer takes: each part (database, broker) is
# waited for CHECK_SECONDS and a second for its thread, one after the other.
MAX_CHECK_SECONDS = 2 * (CHECK_SECONDS + 1)
# Probes that may wait on a hung database at once; past it, the answer is
# "not ready" at once rather than one more thread waiting.
MAX_WAITING_CHECKS = 4

# How long one probe's answer is given to the probes after it: a flood of
# probes then costs one check a second, not a connection each.
REUSE_SECONDS = 1.0

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()
_waiting = threading.BoundedSemaphore(MAX_WAITING_CHECKS)


@dataclass(frozen=True)
class Readiness:
    # What does not answer, each "what: why" (empty when ready).
    problems: tuple[str, ...]

    @property
    def ready(self) -> bool:
        return not self.problems

    def text(self, *, why: bool = True) -> str:
        """The answer's body: each part that did not answer on a line of its
        own, with why unless ``why`` is False (on a public port, where the
        driver's words would tell anyone the database's host and user)."""
        if self.ready:
            return "ready\n"
        lines = self.problems if why else [p.split(":", 1)[0] for p in self.problems]
        return "not ready\n" + "".join(f"{line}\n" for line in lines)


def check_engine(url: str) -> Engine:
    """An engine that opens a new connection for every check, read-only
    on SQLite (a check must never create a database file that is gone)."""
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = _make_check_engine(url)
        return engine


def _make_check_engine(url: str) -> Engine:
    parsed = make_url(url)
    timeout = int(CHECK_SECONDS)
    if parsed.get_backend_name() == "sqlite":
        path = Path(parsed.database or "")
        uri = f"sqlite:///file:{quote(str(path.absolute()))}?mode=ro&uri=true"
        return create_engine(uri, poolclass=NullPool, connect_args={"timeout": timeout})
    return create_engine(
        url,
        poolclass=NullPool,
        hide_parameters=True,
        connect_args={
            "connect_timeout": timeout,
            "options": f"-c statement_timeout={timeout * 1000}",
        },
    )


def check_database(url: str) -> None:
    """Raises unless the database answers a query on mailflow's schema."""
    with check_engine(url).connect() as connection:
        connection.execute(text("SELECT count(*) FROM alembic_version")).scalar()


def check_broker(url: str, timeout: float = CHECK_SECONDS) -> None:
    """Raises unless the broker takes a connection within ``timeout`` seconds."""
    if url.startswith(("amqp://", "amqps://")):
        import pika

        parameters = pika.URLParameters(url)
        parameters.socket_timeout = timeout
        parameters.connection_attempts = 1
        parameters.blocked_connection_timeout = timeout
        pika.BlockingConnection(parameters).close()
        return
    import redis

    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        client.ping()
    finally:
        client.close()


def readiness(settings: Settings, *, broker: bool) -> Readiness:
    """Whether the database answers, and the broker when ``broker`` (the
    edge uses one) and one is configured."""
    checks: list[tuple[str, Callable[[], None]]] = [
        ("database", lambda: check_database(settings.database_url))
    ]
    if broker and settings.broker_url is not None:
        broker_url = settings.broker_url
        checks.append(("broker", lambda: check_broker(broker_url)))
    problems = []
    for name, check in checks:
        problem = _bounded(check)
        if problem is not None:
            # The reason names the failure, not the URL's password.
            problems.append(f"{name}: {_redacted(problem, settings)}")
    return Readiness(tuple(problems))


class SharedCheck:
    """Readiness asked by many probes, checked by one at a time: a probe
    arriving while a check runs waits for that check's answer (never longer
    than the check itself may take), and an answer is reused for
    ``reuse_seconds``.  Anyone who can reach a port can send probes; they
    must not be able to make it answer "not ready" merely by sending many."""

    def __init__(
        self,
        check: Callable[[], Readiness],
        *,
        reuse_seconds: float = REUSE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._check = check
        self._reuse_seconds = reuse_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._answer: tuple[float, Readiness] | None = None
        self._running: _Flight | None = None

    def __call__(self) -> Readiness:
        with self._lock:
            if self._answer is not None and self._clock() - self._answer[0] < self._reuse_seconds:
                return self._answer[1]
            flight, leads = self._running, self._running is None
            if flight is None:
                flight = self._running = _Flight()
        if leads:
            return self._lead(flight)
        # The leader's check is bounded; so is waiting for it.
        if flight.done.wait(MAX_CHECK_SECONDS):
            return flight.answer
        return Readiness((f"database: no answer within {MAX_CHECK_SECONDS:g} s",))

    def _lead(self, flight: _Flight) -> Readiness:
        try:
            flight.answer = self._check()
        finally:
            with self._lock:
                self._answer = (self._clock(), flight.answer)
                self._running = None
            flight.done.set()
        return flight.answer


class _Flight:
    """One check in progress, and its answer once it is done."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.answer = Readiness(("database: the check failed",))


_shared: dict[tuple[str, str | None], SharedCheck] = {}
_shared_lock = threading.Lock()


def shared_readiness(settings: Settings, *, broker: bool) -> Readiness:
    """``readiness``, checked once for all the probes that ask at about the
    same time (SharedCheck): what every edge's /readyz answers."""
    key = (settings.database_url, settings.broker_url if broker else None)
    with _shared_lock:
        shared = _shared.get(key)
        if shared is None:
            shared = _shared[key] = SharedCheck(lambda: readiness(settings, broker=broker))
    return shared()


def _bounded(check: Callable[[], None]) -> str | None:
    """Run ``check`` in a thread for at most CHECK_SECONDS (plus a little):
    None when it passed, else why not."""
    if not _waiting.acquire(blocking=False):
        return "earlier checks are still waiting for an answer"
    outcome: list[str | None] = []

    def run() -> None:
        try:
            check()
            outcome.append(None)
        except Exception as exc:  # every driver raises its own kinds
            outcome.append(describe(exc))
        finally:
            _waiting.release()

    thread = threading.Thread(target=run, name="readiness", daemon=True)
    thread.start()
    thread.join(CHECK_SECONDS + 1)
    if not outcome:
        return f"no answer within {CHECK_SECONDS:g} s"
    return outcome[0]


def describe(exc: Exception) -> str:
    # The driver's own message, on one line and bounded: enough to act on.
    original = getattr(exc, "orig", None) or exc
    # pika's errors say nothing in str(); their repr names the cause.
    text = str(original).strip() or repr(original)
    if text == type(original).__name__:
        text = repr(original)
    first_line = (text.splitlines() or [type(original).__name__])[0]
    return f"{type(original).__name__}: {first_line}"[:300]


def _redacted(problem: str, settings: Settings) -> str:
    for url in (settings.database_url, settings.broker_url):
        if url:
            problem = problem.replace(url, redact_url(url))
    return problem
