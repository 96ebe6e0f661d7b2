"""The Alembic migrations are the schema: they match the models, go up and
down cleanly, and keep the audit log append-only."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.orm import Session

from mailflow.core.audit import record_event
from mailflow.core.models import AuditEvent, Base
from mailflow.db import migrate
from tests.support.seed import NOW


def test_the_migrated_schema_matches_the_models(engine: sa.Engine) -> None:
    assert migrate.is_up_to_date(engine)
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert differences == []


def test_migrations_go_down_to_nothing_and_up_again(engine: sa.Engine) -> None:
    migrate.downgrade(engine, "base")
    tables = set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
    assert tables == set()
    migrate.upgrade(engine)
    assert set(sa.inspect(engine).get_table_names()) >= set(Base.metadata.tables)
    assert migrate.is_up_to_date(engine)


def test_the_audit_log_refuses_updates_and_deletes(engine: sa.Engine) -> None:
    with Session(engine) as session, session.begin():
        record_event(session, at=NOW, actor="test", action="test.event", subject="x:1")
    for statement in ("UPDATE audit_events SET actor = 'someone else'", "DELETE FROM audit_events"):
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
            conn.exec_driver_sql(statement)
    with Session(engine) as session:
        event = session.scalars(sa.select(AuditEvent)).one()
        assert event.actor == "test"
