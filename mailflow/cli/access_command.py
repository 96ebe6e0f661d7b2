"""`mailflow access`: access requests and their decisions, for the
service desk.  Each command lives in its own module and joins the group
here."""

from __future__ import annotations

import click


@click.group()
def access() -> None:
    """Requests to answer for another organisation, and their decisions."""


# Deciding (the service desk): mailflow/cli/access_decision_command.py.
from mailflow.cli.access_decision_command import access_approve, access_deny  # noqa: E402

access.add_command(access_approve)
access.add_command(access_deny)
