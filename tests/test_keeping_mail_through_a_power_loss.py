"""Mail answered 250 must survive an OS crash or power loss (RFC 5321
6.1): each commit reaches the disk before the commit returns.  On SQLite
every connection mailflow opens syncs FULL in WAL mode; on PostgreSQL the
doctor warns when synchronous_commit is off."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from mailflow.cli.running import warn_unless_commits_are_durable
from mailflow.config import Settings
from mailflow.core.doctor import OK, WARN, commit_durability
from mailflow.core.runtime import Runtime
from mailflow.db.engine import make_engine
from tests.support.databases import fresh_postgres_database

SQLITE_FULL = 2


@pytest.mark.backends("sqlite")
def test_every_sqlite_connection_syncs_each_commit_to_disk(
    backend: str, database_url: str, settings: Settings
) -> None:
    runtime = Runtime(settings)
    engines = [runtime.engine, runtime.reader_engine, make_engine(database_url, immediate=False)]
    try:
        for engine in engines:
            with engine.connect() as connection:
                assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == SQLITE_FULL
                assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert commit_durability(engine).status == OK
    finally:
        runtime.close()
        engines[-1].dispose()


@pytest.mark.backends("postgresql")
def test_the_doctor_warns_when_postgresql_does_not_wait_for_the_disk(
    backend: str, database_url: str
) -> None:
    durable = make_engine(database_url)
    careless = make_engine(database_url, connect_args={"options": "-c synchronous_commit=off"})
    try:
        assert commit_durability(durable).status == OK
        assert commit_durability(durable).detail == "postgresql synchronous_commit=on"
        finding = commit_durability(careless)
        assert finding.status == WARN
        assert "loses mail already answered 250" in finding.detail
    finally:
        durable.dispose()
        careless.dispose()


def test_the_check_warns_of_a_sqlite_connection_that_syncs_only_normal(tmp_path: Path) -> None:
    # The check reads the connection's own setting, so it can fail.
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'plain.db'}")
    sa.event.listen(engine, "connect", lambda conn, _record: conn.execute("PRAGMA synchronous=1"))
    try:
        finding = commit_durability(engine)
    finally:
        engine.dispose()
    assert finding.status == WARN
    assert finding.detail.startswith("sqlite synchronous=1 ")


@pytest.mark.backends("postgresql")
def test_a_server_that_accepts_mail_warns_at_start_when_commits_may_be_lost(
    backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    with fresh_postgres_database() as url:
        engine = make_engine(url)
        try:
            warn_unless_commits_are_durable(engine)
            assert caplog.records == []
            with engine.connect() as conn:
                database = conn.exec_driver_sql("SELECT current_database()").scalar_one()
                conn.exec_driver_sql(f'ALTER DATABASE "{database}" SET synchronous_commit = off')
                conn.commit()
            engine.dispose()
            warn_unless_commits_are_durable(engine)
        finally:
            engine.dispose()
    assert [r.getMessage() for r in caplog.records] == [
        "mail answered 250 may be lost: synchronous_commit=off: a crash of the database "
        "server loses mail already answered 250; set it to on (the default)"
    ]
