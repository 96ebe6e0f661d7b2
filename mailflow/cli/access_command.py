"""`mailflow access`: access requests and their decisions, for the
service desk.  Each command lives in its own module and joins the group
here."""

from __future__ import annotations

import click

from mailflow.cli.access_decision_command import access_approve, access_deny
from mailflow.cli.access_request_command import access_list, access_request


@click.group()
def access() -> None:
    """Requests to answer for another organisation, and their decisions."""


# The service desk's requests (mailflow/cli/access_request_command.py)
# and decisions (mailflow/cli/access_decision_command.py).
access.add_command(access_request)
access.add_command(access_list)
access.add_command(access_approve)
access.add_command(access_deny)
