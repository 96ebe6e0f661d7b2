"""The `mailflow imap` command."""

from __future__ import annotations

import click


def register(group: click.Group) -> None:
    """Adds the command to the `mailflow` group."""
