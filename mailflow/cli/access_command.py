"""`mailflow access`: access requests and their decisions, for the
service desk.  Each command lives in its own module and joins the group
here."""

from __future__ import annotations

import click


@click.group()
def access() -> None:
    """Requests to answer for another organisation, and their decisions."""
