"""Engines and sessions for SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from mailflow.core.private_files import create_private_file, make_private_folder

SQLITE_BUSY_TIMEOUT_MS = 30_000


def _configure_sqlite(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    # WAL lets the web page and the CLI read while a worker writes.  FULL
    # sync makes each commit reach the disk before it returns: the inbound
    # server answers 250 once the message is committed, and RFC 5321 6.1
    # makes that a promise to survive an OS crash or power loss, which
    # NORMAL (in WAL mode) does not keep.  Foreign keys are off by default
    # in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def _begin_immediate(conn: Any) -> None:
    # pysqlite's own transaction handling is switched off (isolation_level
    # None) and we begin every transaction ourselves: its own starts them
    # lazily and deferred, so two writers can both read and then fail on
    # upgrading to a write lock.  Taking the write lock at BEGIN makes
    # writers queue on busy_timeout instead.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _begin_deferred(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN")


def make_engine(url: str, *, immediate: bool = True, **kwargs: Any) -> Engine:
    """An engine for ``url``.  On SQLite every transaction takes the write
    lock at BEGIN unless ``immediate`` is False (for a reader that must
    never hold up writers, such as a test looking on)."""
    parsed = make_url(url)
    # A database error's message would otherwise carry the statement's
    # parameters: raw emails with their signed links, tokens, secrets.
    kwargs.setdefault("hide_parameters", True)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            # The database holds every answer and pending link: only our
            # own user may read it (SQLite gives its -wal and -shm files
            # the database file's mode).
            make_private_folder(Path(parsed.database).parent)
            create_private_file(Path(parsed.database))
        engine = create_engine(
            url, connect_args={"isolation_level": None, "check_same_thread": False}, **kwargs
        )
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _begin_immediate if immediate else _begin_deferred)
        return engine
    # No JIT: PostgreSQL compiles a plan whose estimated cost is high, as
    # the auditors' aggregate over a national alert is estimated, and
    # spent 390 ms compiling one that then ran in 40 ms.  mailflow's
    # statements are short; compiling never pays for itself.
    connect_args = kwargs.pop("connect_args", {})
    connect_args.setdefault("options", "-c jit=off")
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args, **kwargs)


class _TakingTurns(sessionmaker[Session]):
    """Write transactions of one process take turns on a Python lock before
    they ask SQLite for its write lock.  Threads that meet on SQLite's lock
    are put to sleep by its busy handler for up to 100 ms at a time, which
    gave the web page's commits a tail of seconds; a lock here wakes the
    next writer the moment the last commits.  (Other processes still meet
    on SQLite's own lock.)"""

    _turns = threading.RLock()

    @contextmanager
    def begin(self) -> Iterator[Session]:
        with self._turns, super().begin() as session:
            yield session


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    if engine.dialect.name == "sqlite":
        return _TakingTurns(engine, expire_on_commit=False)
    return sessionmaker(engine, expire_on_commit=False)
