"""`mailflow orgs import|list`: the organisations the service covers."""

from __future__ import annotations

from pathlib import Path

import click

from mailflow.cli.context import Context, actor_name, pass_context, reported_errors
from mailflow.core.mail.templates import counted
from mailflow.people.organisation_files import read_organisation_file
from mailflow.people.organisations import import_organisations, list_organisations


@click.group()
def orgs() -> None:
    """Organisations the service covers."""


@orgs.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--type", "org_type", help="Organisation type for every row (e.g. trust, icb).")
@pass_context
def orgs_import(ctx: Context, file: Path, org_type: str | None) -> None:
    """Import organisations from FILE.

    FILE is a CSV with the header code,name,type[,parent], or an NHS ODS
    extract as published (etr.csv for trusts, eccg.csv for ICBs/CCGs).
    Known organisations are updated (names, types, closures).  A bad row
    stops the import, naming its line, and nothing is imported."""
    with reported_errors():
        records = read_organisation_file(file, org_type)
        with ctx.transaction() as session:
            summary = import_organisations(
                session, records, now=ctx.runtime.clock(), actor=actor_name(), source=file.name
            )
    click.echo(
        f"{counted(len(records), 'organisation')} read: "
        f"{summary.created} new, {summary.updated} updated, "
        f"{summary.closed} closed, {summary.unchanged} unchanged"
    )


@orgs.command("list")
@click.option("--all", "include_closed", is_flag=True, help="Include closed organisations.")
@pass_context
def orgs_list(ctx: Context, include_closed: bool) -> None:
    """List organisations."""
    with ctx.reading() as session:
        for org in list_organisations(session, include_closed=include_closed):
            closed = f"  closed {org.closed_on}" if org.closed_on else ""
            click.echo(f"{org.code:10} {org.type:12} {org.name}{closed}")
