"""`mailflow db upgrade|current|history`: the database schema."""

from __future__ import annotations

import alembic.util
import click
from sqlalchemy.exc import DBAPIError

from mailflow.cli.context import Context, fail, pass_context
from mailflow.cli.failures import database_problem, one_line
from mailflow.core.doctor import missing_sqlite_file
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


def _current(ctx: Context) -> str | None:
    # Opening a SQLite file that is not there would create it: looking
    # must change nothing.
    missing = missing_sqlite_file(ctx.settings.database_url)
    if missing is not None:
        fail(f"no database at {missing}: run `mailflow db upgrade` to create it", code=2)
    try:
        return migrate.current_revision(ctx.runtime.engine)
    except DBAPIError as exc:
        fail(database_problem(exc), code=2)


@db.command("current")
@pass_context
def db_current(ctx: Context) -> None:
    """The schema revision the database is at, and whether it is the newest.

    Exits 0 when it is the newest, 1 when `mailflow db upgrade` is needed
    (or a newer mailflow migrated it), so scripts can check."""
    current = _current(ctx)
    head = migrate.head_revision()
    known = {rev.revision: rev.title for rev in migrate.revisions()}
    if current is None:
        click.echo(f"no schema yet (newest is {head}): run `mailflow db upgrade`")
        raise SystemExit(1)
    if current not in known:
        click.echo(
            f"{current}: a revision this mailflow does not know (newest here is {head}); "
            "a newer mailflow migrated this database: run that version"
        )
        raise SystemExit(1)
    if current == head:
        click.echo(f"{current} {known[current]} (newest)")
        return
    click.echo(f"{current} {known[current]} (not the newest: {head}); run `mailflow db upgrade`")
    raise SystemExit(1)


@db.command("history")
@pass_context
def db_history(ctx: Context) -> None:
    """Every migration, oldest first; the one the database is at marked
    with `*` (and `(newest)` on the last)."""
    current = _current(ctx)
    listed = migrate.revisions()
    for rev in listed:
        mark = "*" if rev.revision == current else " "
        newest = " (newest)" if rev is listed[-1] else ""
        click.echo(f"{mark} {rev.revision} {rev.title}{newest}")
    if current is None:
        click.echo("the database has no schema yet: run `mailflow db upgrade`")
    elif current not in {rev.revision for rev in listed}:
        click.echo(f"the database is at {current}, which this mailflow does not know")
