"""`mailflow db upgrade`: the database schema."""

from __future__ import annotations

import alembic.util
import click
from sqlalchemy.exc import DBAPIError

from mailflow.cli.context import Context, fail, pass_context
from mailflow.cli.failures import database_problem, one_line
from mailflow.db import migrate


@click.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
@pass_context
def db_upgrade(ctx: Context) -> None:
    """Create the schema, or bring it up to the newest version."""
    try:
        migrate.upgrade(ctx.runtime.engine)
    except DBAPIError as exc:
        fail(database_problem(exc), code=2)
    except alembic.util.CommandError as exc:
        # A revision this mailflow does not know: a newer one migrated it.
        fail(f"cannot upgrade the database: {one_line(exc)}", code=2)
    click.echo(f"database at revision {migrate.current_revision(ctx.runtime.engine)}")
