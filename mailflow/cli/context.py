"""What every command shares: the settings and database opened on first
use, the one way to stop with a message, and who is acting."""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import NoReturn
from zoneinfo import ZoneInfo

import click
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from mailflow.cli.failures import database_problem
from mailflow.config import ConfigError, Settings, load_settings, unknown_variables
from mailflow.core.errors import InvalidInput, InvalidRows, NotFound
from mailflow.core.logs import reformat
from mailflow.core.runtime import Runtime
from mailflow.db import migrate


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"mailflow: {message}", err=True)
    sys.exit(code)


def actor_name() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


class Context:
    """Loads settings and opens the database on first use, so ``--help``
    works without either."""

    def __init__(self) -> None:
        self._settings: Settings | None = None
        self._runtime: Runtime | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            warn_about_unknown_variables()
            try:
                self._settings = load_settings()
            except ConfigError as exc:
                fail(f"configuration: {exc}", code=2)
            reformat(self._settings.log_format)
        return self._settings

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            self._runtime = Runtime(self.settings)
        return self._runtime

    def require_schema(self) -> None:
        try:
            up_to_date = migrate.is_up_to_date(self.runtime.engine)
        except DBAPIError as exc:
            fail(database_problem(exc), code=2)
        if not up_to_date:
            fail("the database schema is not up to date: run `mailflow db upgrade`", code=2)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        self.require_schema()
        with self.runtime.sessions.begin() as session:
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for a command that only reads.  On SQLite it takes no
        write lock, so a listing piped into a pager cannot hold up the
        inbound server's 250s, the web page's commits or the worker."""
        self.require_schema()
        with self.runtime.readers() as session:
            yield session

    def close(self) -> None:
        if self._runtime is not None:
            self._runtime.close()


def warn_about_unknown_variables() -> None:
    # A misspelt variable would otherwise be ignored without a word,
    # leaving the default in force.
    for name, closest in unknown_variables(os.environ):
        hint = f" (did you mean {closest}?)" if closest else ""
        click.echo(
            f"mailflow: warning: {name} is not a mailflow setting and is ignored{hint}",
            err=True,
        )


pass_context = click.make_pass_decorator(Context)


EARLIEST_YEAR = 2000
LATEST_YEAR = 9000


def parse_time(text: str, zone_name: str, *, option: str = "--at") -> datetime:
    """An ISO 8601 time; without an offset, in MAILFLOW_TIMEZONE."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        fail(f"{option}: {text!r} is not an ISO 8601 time (e.g. 2026-12-01T09:00 or ...+00:00)")
    if not EARLIEST_YEAR <= when.year <= LATEST_YEAR:
        # Years near either end of the calendar overflow once moved to UTC.
        fail(f"{option}: choose a time between {EARLIEST_YEAR} and {LATEST_YEAR}")
    if when.tzinfo is None:
        when = when.replace(tzinfo=ZoneInfo(zone_name))
    return when.astimezone(UTC)


@contextmanager
def reported_errors() -> Iterator[None]:
    """Turn the domain's refusals into one clear line and a non-zero exit;
    the transaction around the command has rolled back by then."""
    try:
        yield
    except InvalidRows as exc:
        fail_with_rows(exc)
    except InvalidInput as exc:
        fail(f"{exc.where}: {exc.problem} (nothing was written)")
    except NotFound as exc:
        fail(f"{exc} (nothing was written)")


def fail_with_rows(exc: InvalidRows) -> NoReturn:
    """Every bad row of a file (up to a limit) on a line of its own, so all
    can be put right before the next try."""
    for where, problem in exc.problems:
        click.echo(f"mailflow: {where}: {problem}", err=True)
    hidden = exc.total - len(exc.problems)
    more = f" (the first {len(exc.problems)} are shown)" if hidden else ""
    fail(f"{exc.where}: {exc.problem}{more}: nothing was written")
