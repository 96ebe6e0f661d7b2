"""An operator asks which schema revision the database is at (`mailflow
db current`) and which migrations there are (`mailflow db history`), on
SQLite and PostgreSQL: before upgrading, after a restore, or when a
newer mailflow has been there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mailflow.db import migrate
from mailflow.db.engine import make_engine
from tests.support.cli import mailflow, one_error_line
from tests.support.databases import fresh_postgres_database
from tests.support.relay import free_port

HEAD = migrate.head_revision()
TITLES = {rev.revision: rev.title for rev in migrate.revisions()}


@pytest.fixture
def empty_database(backend: str, tmp_path: Path) -> Iterator[str]:
    """A database with no schema, of the test's backend."""
    if backend == "sqlite":
        # An empty file is an empty SQLite database.
        (tmp_path / "empty.db").touch()
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    with fresh_postgres_database() as url:
        yield url


def migrate_to(url: str, revision: str) -> None:
    engine = make_engine(url)
    try:
        migrate.upgrade(engine, revision)
    finally:
        engine.dispose()


def test_an_up_to_date_database_is_at_the_newest_revision(database_url: str) -> None:
    result = mailflow("db", "current", database_url=database_url)
    assert result.exit_code == 0
    assert result.stdout == f"{HEAD} {TITLES[HEAD]} (newest)\n"


def test_a_database_behind_is_told_to_upgrade_and_is_newest_after(empty_database: str) -> None:
    migrate_to(empty_database, "0011")
    result = mailflow("db", "current", database_url=empty_database)
    assert result.exit_code == 1
    assert result.stdout == (
        f"0011 {TITLES['0011']} (not the newest: {HEAD}); run `mailflow db upgrade`\n"
    )
    assert mailflow("db", "upgrade", database_url=empty_database).exit_code == 0
    assert mailflow("db", "current", database_url=empty_database).exit_code == 0


def test_a_database_without_a_schema_is_told_to_upgrade(empty_database: str) -> None:
    result = mailflow("db", "current", database_url=empty_database)
    assert result.exit_code == 1
    assert result.stdout == f"no schema yet (newest is {HEAD}): run `mailflow db upgrade`\n"
    history = mailflow("db", "history", database_url=empty_database)
    assert history.exit_code == 0
    assert "*" not in history.stdout
    assert history.stdout.splitlines()[-1] == (
        "the database has no schema yet: run `mailflow db upgrade`"
    )


def test_the_history_lists_every_migration_and_marks_the_current_one(
    empty_database: str,
) -> None:
    migrate_to(empty_database, "0005")
    result = mailflow("db", "history", database_url=empty_database)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert len(lines) == len(TITLES)
    assert lines[0] == f"  0001 {TITLES['0001']}"
    assert lines[4] == f"* 0005 {TITLES['0005']}"
    assert [line for line in lines if line.startswith("*")] == [lines[4]]
    assert lines[-1] == f"  {HEAD} {TITLES[HEAD]} (newest)"


def test_a_revision_from_a_newer_mailflow_is_named_as_such(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'newer.db'}"
    migrate_to(url, "head")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0099'")
    engine.dispose()
    result = mailflow("db", "current", database_url=url)
    assert result.exit_code == 1
    assert result.stdout.startswith("0099: a revision this mailflow does not know")
    history = mailflow("db", "history", database_url=url)
    assert history.stdout.splitlines()[-1] == (
        "the database is at 0099, which this mailflow does not know"
    )


def test_a_database_that_cannot_be_reached_is_one_line() -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/mailflow"
    for command in ("current", "history"):
        result = mailflow("db", command, database_url=url)
        assert result.exit_code == 2
        assert one_error_line(result).startswith("cannot reach the database: ")


def test_looking_at_a_sqlite_file_that_is_not_there_does_not_create_it(tmp_path: Path) -> None:
    path = tmp_path / "typo.db"
    for command in ("current", "history"):
        result = mailflow("db", command, database_url=f"sqlite:///{path}")
        assert result.exit_code == 2
        assert one_error_line(result) == (
            f"no database at {path}: run `mailflow db upgrade` to create it"
        )
    assert not path.exists()
