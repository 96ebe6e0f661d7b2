"""Alembic environment: runs against the connection mailflow hands it
(``mailflow db upgrade``), or against MAILFLOW_DATABASE_URL when called
through the ``alembic`` command for writing a new revision."""

from __future__ import annotations

from alembic import context

from mailflow.core.models import Base
from mailflow.db.engine import make_engine

config = context.config
target_metadata = Base.metadata


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
        return

    from mailflow.config import load_settings

    engine = make_engine(load_settings().database_url)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("mailflow migrations run online only: use `mailflow db upgrade`")
run_online()
