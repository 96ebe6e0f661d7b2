"""`mailflow config`: the settings in force."""

from __future__ import annotations

import click

from mailflow.cli.context import Context, pass_context


@click.command("config")
@pass_context
def show_config(ctx: Context) -> None:
    """Show the settings in force (secrets hidden).

    One NAME=value a line, as it would be set in the environment; the
    secret key says where it came from.  Relative paths are relative to the
    current folder."""
    for name, value in ctx.settings.describe().items():
        click.echo(f"{name}={value}")
