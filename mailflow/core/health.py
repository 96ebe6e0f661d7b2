"""Is this process ready to work: does the database answer (and the
broker, for the edges that use one)?  What /readyz reports.

Each check opens a fresh connection, never one from the process's pool:
a pooled connection can keep answering from a database file that has
been removed, or hide a server that no longer takes new connections.
Every check is bounded in time, so a database that hangs makes the
answer "not ready", not a probe that never returns.
"""

from __future__ import annotations

import threading
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
# Probes that may wait on a hung database at once; past it, the answer is
# "not ready" at once rather than one more thread waiting.
MAX_WAITING_CHECKS = 4

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


def check_broker(url: str) -> None:
    """Raises unless the broker takes a connection."""
    if url.startswith(("amqp://", "amqps://")):
        import pika

        parameters = pika.URLParameters(url)
        parameters.socket_timeout = CHECK_SECONDS
        parameters.connection_attempts = 1
        parameters.blocked_connection_timeout = CHECK_SECONDS
        pika.BlockingConnection(parameters).close()
        return
    import redis

    client = redis.Redis.from_url(
        url, socket_timeout=CHECK_SECONDS, socket_connect_timeout=CHECK_SECONDS
    )
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
            outcome.append(_describe(exc))
        finally:
            _waiting.release()

    thread = threading.Thread(target=run, name="readiness", daemon=True)
    thread.start()
    thread.join(CHECK_SECONDS + 1)
    if not outcome:
        return f"no answer within {CHECK_SECONDS:g} s"
    return outcome[0]


def _describe(exc: Exception) -> str:
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
