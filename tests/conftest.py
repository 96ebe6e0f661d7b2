"""Shared fixtures: real databases (SQLite file and PostgreSQL), a real
aiosmtpd relay that captures what it receives, and settings to match; and
the fixtures of tests/support registered for every test (the brokers, the browser,
Dovecot, the web pages, chasing).

A test that needs a component that is missing fails when CI=true and is
skipped (saying why) on a developer's machine (see
tests/support/environment.py).
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from mailflow.config import Settings, load_settings, parse_relay
from mailflow.core.models import Base
from mailflow.db import migrate
from mailflow.db.engine import make_engine
from tests.support.brokers import broker_url  # noqa: F401
from tests.support.browser import browser  # noqa: F401
from tests.support.chasing import chasing  # noqa: F401
from tests.support.digests import digests  # noqa: F401
from tests.support.dovecot_fixture import dovecot, dovecot_server  # noqa: F401
from tests.support.environment import POSTGRES_ADMIN_URL, SECRET_KEY, missing_component
from tests.support.pages import quick_scrypt, web  # noqa: F401
from tests.support.relay import CapturingRelay
from tests.support.report_pages import report_web  # noqa: F401

BACKENDS = ("sqlite", "postgresql")

# The first fails the run if any log line of any test holds a link token
# or a TOTP secret (DESIGN.md invariant 9); pytester runs a test run in a
# test, to show that it can.
pytest_plugins = ("tests.support.secrets_in_logs", "pytester")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db",
        choices=("all", *BACKENDS),
        default="all",
        help="database backends to run the database tests against",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        chosen = metafunc.config.getoption("--db")
        backends = BACKENDS if chosen == "all" else (chosen,)
        # A test of one backend's own mechanism (PostgreSQL's advisory
        # locks) is generated for that backend alone, not run and skipped.
        only = metafunc.definition.get_closest_marker("backends")
        if only is not None:
            backends = tuple(b for b in backends if b in only.args)
        metafunc.parametrize("backend", backends, scope="session")


# ----------------------------------------------------------------- databases


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test: migrating once keeps
    the suite fast, copying keeps tests apart."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    # Closing the last connection checkpoints the WAL into the main file,
    # so copying that one file copies the whole database.
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A database of our own on the PostgreSQL server, migrated once."""
    admin = make_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect():
            pass
    except sa.exc.OperationalError:
        admin.dispose()
        missing_component("PostgreSQL at 127.0.0.1:5432")
    name = f"mailflow_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


TABLES = ", ".join(t.name for t in reversed(Base.metadata.sorted_tables))


@pytest.fixture
def database_url(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "mailflow.db"
        shutil.copy(template, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_database")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
    engine.dispose()
    return url


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    # The test's own view of the database: on SQLite its transactions do not
    # take the write lock, so a test that looks on never holds up a worker.
    eng = make_engine(database_url, immediate=False)
    yield eng
    eng.dispose()


@pytest.fixture
def session(engine: sa.Engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as s:
        yield s


# ---------------------------------------------------------------- mail relay


@pytest.fixture
def relay() -> Iterator[CapturingRelay]:
    with CapturingRelay() as running:
        yield running


# ------------------------------------------------------------------ settings


@pytest.fixture
def settings_for(tmp_path: Path) -> Any:
    """Settings for a test, with the given overrides on top of sane test values."""

    def make(database_url: str, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url,
            "secret_key": SECRET_KEY,
            "maildir": tmp_path / "maildir",
            "mail_domain": "alerts.test",
            "base_url": "https://mailflow.test",
            "send_retry_base_seconds": 0.2,
            "queue_name": f"mailflow-test-{uuid.uuid4().hex[:8]}",
        }
        values.update(overrides)
        return load_settings(environ={}, overrides=values)

    return make


@pytest.fixture
def settings(settings_for: Any, database_url: str, relay: CapturingRelay) -> Settings:
    result: Settings = settings_for(
        database_url, smtp_relay=parse_relay(f"smtp://127.0.0.1:{relay.port}")
    )
    return result
