"""An operator backs the database up and restores it into a fresh one, as
the README's "Backups" says: `pg_dump -Fc` and `pg_restore` on
PostgreSQL, SQLite's online backup on SQLite.  The restored database
holds every row, `mailflow db upgrade` brings it to the newest schema (or
does nothing), and the audit log is still append-only."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from mailflow.core.audit import record_event
from mailflow.core.models import Base
from mailflow.db import migrate
from mailflow.db.engine import make_engine
from tests.support.cli import mailflow
from tests.support.databases import (
    fresh_postgres_database,
    libpq_url,
    postgres_program,
    server_major_version,
)
from tests.support.seed import NOW, issue, seed_people

OLDER = "0011"


def populate(url: str) -> dict[str, int]:
    """People, an alert with its emails, audit events; the rows a table."""
    engine = make_engine(url)
    try:
        with Session(engine) as session, session.begin():
            seed_people(session)
            issue(session)
            record_event(session, at=NOW, actor="test", action="test.backup", subject="x:1")
        return row_counts(engine)
    finally:
        engine.dispose()


def row_counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            name: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            for name, table in Base.metadata.tables.items()
        }


def assert_restored(url: str, counts: dict[str, int]) -> None:
    upgraded = mailflow("db", "upgrade", database_url=url)
    assert upgraded.exit_code == 0, upgraded.output
    assert upgraded.stdout == f"database at revision {migrate.head_revision()}\n"
    engine = make_engine(url)
    try:
        assert row_counts(engine) == counts
        assert counts["audit_events"] > 0
        for statement in ("UPDATE audit_events SET actor = 'someone'", "DELETE FROM audit_events"):
            with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
                conn.exec_driver_sql(statement)
        assert row_counts(engine) == counts
    finally:
        engine.dispose()


def pg_dump_and_restore(source: str, target: str, folder: Path) -> None:
    """As the README says: a custom-format dump, restored with pg_restore."""
    major = server_major_version(source)
    dump = folder / "mailflow.dump"
    pg_dump, pg_restore = postgres_program("pg_dump", major), postgres_program("pg_restore", major)
    subprocess.run([pg_dump, "-Fc", "-f", dump, libpq_url(source)], check=True)
    restore = [pg_restore, "--no-owner", "--exit-on-error", "-d", libpq_url(target), dump]
    subprocess.run(restore, check=True)


@pytest.mark.backends("postgresql")
def test_a_pg_dump_restored_into_a_fresh_database_works(
    backend: str, database_url: str, tmp_path: Path
) -> None:
    counts = populate(database_url)
    with fresh_postgres_database() as restored:
        pg_dump_and_restore(database_url, restored, tmp_path)
        assert_restored(restored, counts)


@pytest.mark.backends("postgresql")
def test_a_dump_of_an_older_schema_is_upgraded_after_restoring(
    backend: str, tmp_path: Path
) -> None:
    with fresh_postgres_database() as old, fresh_postgres_database() as restored:
        engine = make_engine(old)
        migrate.upgrade(engine, OLDER)
        with Session(engine) as session, session.begin():
            record_event(session, at=NOW, actor="test", action="test.backup", subject="x:1")
        engine.dispose()
        pg_dump_and_restore(old, restored, tmp_path)
        engine = make_engine(restored)
        assert migrate.current_revision(engine) == OLDER
        engine.dispose()
        assert_restored(restored, {**empty_counts(), "audit_events": 1})


def empty_counts() -> dict[str, int]:
    return dict.fromkeys(Base.metadata.tables, 0)


@pytest.mark.backends("sqlite")
def test_a_sqlite_online_backup_restored_works(
    backend: str, database_url: str, tmp_path: Path
) -> None:
    counts = populate(database_url)
    copy = tmp_path / "backup.db"
    # Taken while mailflow holds the database open, as a running service would.
    engine = make_engine(database_url)
    with engine.connect():
        source = sqlite3.connect(sa.make_url(database_url).database or "")
        target = sqlite3.connect(copy)
        with target:
            source.backup(target)
        source.close()
        target.close()
    engine.dispose()
    assert_restored(f"sqlite:///{copy}", counts)
