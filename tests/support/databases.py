"""Databases a test makes for itself beside the shared ones: an empty
PostgreSQL database of its own (to restore a dump into, or migrate to an
older revision), and the PostgreSQL client programs that match the
server's version."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from mailflow.db.engine import make_engine
from tests.support.environment import POSTGRES_ADMIN_URL, missing_component


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """The URL of a new, empty database, dropped afterwards (if the test
    has not dropped it already)."""
    name = f"mailflow_fresh_{uuid.uuid4().hex[:10]}"
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    admin = make_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        admin.dispose()
    try:
        yield url
    finally:
        drop_postgres_database(url)


def drop_postgres_database(url: str) -> None:
    """Drop the database at ``url``, cutting its connections."""
    name = sa.make_url(url).database
    admin = make_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL as the PostgreSQL programs take it (no driver)."""
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def server_major_version(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            number = int(conn.exec_driver_sql("SHOW server_version_num").scalar_one())
    finally:
        engine.dispose()
    return number // 10_000


def postgres_program(name: str, major: int) -> Path:
    """``pg_dump`` or ``pg_restore`` of the server's major version: the
    server's own under /usr/lib/postgresql, else the one on PATH if its
    version matches (a pg_dump older than the server refuses to dump)."""
    own = Path(f"/usr/lib/postgresql/{major}/bin/{name}")
    if own.exists():
        return own
    found = shutil.which(name)
    if found is not None:
        version = subprocess.run(
            [found, "--version"], capture_output=True, text=True, check=True
        ).stdout
        if f") {major}." in version:
            return Path(found)
    missing_component(f"{name} {major} (the PostgreSQL server's version)")
    raise AssertionError("unreachable")
